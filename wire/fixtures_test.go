package wire_test

import (
	"fmt"
	"math"
	"strings"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

var (
	tl1 = abi.Timeline{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10}
	tl2 = abi.Timeline{15: 0xff}
)

// fixtures are valid messages of every type, including edge values. Empty
// lists are nil: the decoder returns nil for them.
func fixtures() []struct {
	name string
	msg  wire.Message
} {
	long := strings.Repeat("x", 70000) // str 32
	return []struct {
		name string
		msg  wire.Message
	}{
		{"hello", &wire.Hello{
			ProtoMin: 1, ProtoMax: 1, RouterID: "edge-1",
			IndexTypes: []abi.IndexType{abi.IndexLegacy, abi.IndexHA}, ABIVersions: []uint32{abi.Version, math.MaxUint32},
			Positions: []wire.Position{{Type: abi.IndexLegacy, Index: 41, Timeline: tl1}, {Type: abi.IndexHA, Index: math.MaxUint64, Timeline: tl2}},
			Current:   abi.IndexHA, Capabilities: 1 << 63, MaxFrame: 4 << 20,
		}},
		{"hello empty", &wire.Hello{ProtoMin: 1, ProtoMax: math.MaxUint16}},
		{"welcome", &wire.Welcome{
			Proto: 1, ClusterID: "c1", NodeID: "n1", Mode: abi.IndexHA, Timeline: tl1, Index: 1 << 40,
			Resume: wire.ResumeReplay, Capabilities: 3,
		}},
		{"welcome full state", &wire.Welcome{Proto: 1, Mode: abi.IndexLegacy, Resume: wire.ResumeFullState}},
		{"error", &wire.Error{Code: wire.ErrCodeNotServing, Message: "follower", Redirect: []string{"10.0.0.1:7400", "[::1]:7400"}}},
		{"error unknown code", &wire.Error{Code: 200, Message: long}},
		{"change set", &wire.ChangeSet{
			Header: abi.Header{Index: 7, PrevIndex: 6, Type: abi.IndexLegacy, Term: 0, Timeline: tl1},
			Changes: []model.Change{
				{Op: model.OpPut, Kind: "service", ID: "a", Value: `{"port":443}`},
				{Op: model.OpDelete, Kind: "service", ID: "b"},
				{Op: model.OpPut, Kind: "ключ", ID: strings.Repeat("i", 300), Value: long},
			},
		}},
		{"change set small", &wire.ChangeSet{
			Header:  abi.Header{Index: 3, PrevIndex: 2, Type: abi.IndexHA, Term: 2, Timeline: tl2},
			Changes: []model.Change{{Op: model.OpPut, Kind: "k", ID: "1", Value: "v"}, {Op: model.OpDelete, Kind: "k", ID: "2"}},
		}},
		{"change set empty", &wire.ChangeSet{Header: abi.Header{Index: 1, Type: abi.IndexHA, Term: 9}}},
		// Invalid headers decode: the filter, not the wire, rejects them.
		{"change set invalid header", &wire.ChangeSet{Header: abi.Header{Index: 0, PrevIndex: 5, Type: 77}}},
		{"batch", &wire.Batch{Sets: batchSets(3, 2)}},
		{"batch max", &wire.Batch{Sets: batchSets(abi.MaxBatch, 0)}},
		{"batch empty", &wire.Batch{}},
		{"full state begin", &wire.FullStateBegin{
			Mode: abi.IndexHA, Timeline: tl2, Index: 100,
			Positions: []wire.Position{{Type: abi.IndexLegacy, Index: 50, Timeline: tl2}, {Type: abi.IndexHA, Index: 100, Timeline: tl2}},
			Entities:  12345,
		}},
		{"full state chunk", &wire.FullStateChunk{Entities: []model.Entity{
			{Kind: "a", ID: "1", Value: "v"}, {Kind: "a", ID: "2"}, {Kind: "b", ID: "1", Value: long},
		}}},
		{"full state chunk small", &wire.FullStateChunk{Entities: []model.Entity{{Kind: "a", ID: "1", Value: "v"}, {Kind: "b", ID: "2"}}}},
		{"full state chunk empty", &wire.FullStateChunk{}},
		{"full state end", &wire.FullStateEnd{Entities: 3, Digest: model.EmptyDigest}},
		{"mode change", &wire.ModeChange{Change: abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: 99, BaseIndex: 99, Timeline: tl1}}},
		{"ack", &wire.Ack{Positions: []wire.Position{{Type: abi.IndexLegacy, Index: 3, Timeline: tl1}}, Current: abi.IndexLegacy, Applied: 1 << 33}},
		{"ack empty", &wire.Ack{}},
		{"heartbeat", &wire.Heartbeat{Index: 42, UnixNano: 1_700_000_000_000_000_000}},
		{"heartbeat negative", &wire.Heartbeat{Index: 0, UnixNano: math.MinInt64}},
		{"heartbeat small negative", &wire.Heartbeat{Index: 128, UnixNano: -33}},
		{"digest request", &wire.DigestRequest{}},
		{"digest reply", &wire.DigestReply{Position: wire.Position{Type: abi.IndexHA, Index: 5, Timeline: tl1}, Entities: 2, Digest: model.EmptyDigest}},
	}
}

func batchSets(n, changes int) []wire.ChangeSet {
	sets := make([]wire.ChangeSet, n)
	for i := range sets {
		sets[i].Header = abi.Header{Index: uint64(i + 2), PrevIndex: uint64(i + 1), Type: abi.IndexHA, Term: 3, Timeline: tl1}
		for j := range changes {
			sets[i].Changes = append(sets[i].Changes, model.Change{
				Op: model.OpPut, Kind: "service", ID: fmt.Sprintf("svc-%d-%d", i, j), Value: `{"name":"svc","port":443,"tls":true}`,
			})
		}
	}
	return sets
}
