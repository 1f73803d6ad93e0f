package wire_test

import (
	"encoding/hex"
	"fmt"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// The frames docs/protocol.md shows byte by byte.
func ExampleEncodeFrame() {
	hb, _ := wire.EncodeFrame(nil, &wire.Heartbeat{Index: 42, UnixNano: 1_700_000_000_000_000_000})
	fmt.Println(hex.EncodeToString(hb))

	tl, _ := abi.ParseTimeline("0123456789abcdeffedcba9876543210")
	cs, _ := wire.EncodeFrame(nil, &wire.ChangeSet{
		Header:  abi.Header{Index: 7, PrevIndex: 6, Type: abi.IndexLegacy, Timeline: tl},
		Changes: []model.Change{{Op: model.OpPut, Kind: "svc", ID: "a", Value: "v1"}},
	})
	fmt.Println(hex.EncodeToString(cs))
	// Output:
	// 0000000c0b922acf17979cfe362a0000
	// 0000002804929507060100c4100123456789abcdeffedcba98765432109194a3707574a3737663a161a27631
}
