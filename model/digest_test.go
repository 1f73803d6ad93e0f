package model_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/indexgate/indexgate/model"
)

// referenceDigest is the digest definition computed independently: sort,
// encode each entity with the msgpack library, hash the concatenation.
func referenceDigest(t testing.TB, entities []model.Entity) string {
	t.Helper()
	sorted := slices.Clone(entities)
	slices.SortFunc(sorted, func(a, b model.Entity) int {
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	h := sha256.New()
	for _, e := range sorted {
		b, err := msgpack.Marshal([]string{e.Kind, e.ID, e.Value})
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestDigestEmpty(t *testing.T) {
	s, _ := openTemp(t)
	count, digest, _ := state(t, s)
	if count != 0 || digest != model.EmptyDigest {
		t.Fatalf("empty store: count %d digest %s, want 0 %s", count, digest, model.EmptyDigest)
	}
	if !strings.HasPrefix(model.EmptyDigest, "e3b0c442") || referenceDigest(t, nil) != model.EmptyDigest {
		t.Fatalf("EmptyDigest is not SHA-256 of nothing")
	}
}

func TestDigestMatchesMsgpackLibrary(t *testing.T) {
	// Lengths straddle every msgpack string form: fixstr (<32), str8
	// (<256), str16 (<65536) and str32.
	lengths := []int{0, 1, 31, 32, 255, 256, 65535, 65536, 70000}
	tests := []struct {
		name     string
		entities []model.Entity
	}{
		{"one", []model.Entity{{Kind: "svc", ID: "a", Value: "v"}}},
		{"prefix kinds", []model.Entity{
			{Kind: "ab", ID: "a", Value: "2"}, {Kind: "a", ID: "b", Value: "1"},
			{Kind: "a", ID: "ab", Value: "3"}, {Kind: "a", ID: "a", Value: "0"},
		}},
		{"prefix kind vs id bytes", []model.Entity{
			// "a"+0x00+"\x01x" must sort before "a\x01"+0x00+"x": kind first.
			{Kind: "a\x01", ID: "x", Value: "2"}, {Kind: "a", ID: "\x01x", Value: "1"},
		}},
		{"unicode", []model.Entity{{Kind: "ключ", ID: "日本", Value: "✓"}, {Kind: "z", ID: "é", Value: ""}}},
	}
	var sized []model.Entity
	for i, n := range lengths {
		sized = append(sized, model.Entity{
			Kind:  strings.Repeat("k", min(n+1, model.MaxKindLen)),
			ID:    fmt.Sprintf("%04d", i) + strings.Repeat("i", min(n, model.MaxIDLen-4)),
			Value: strings.Repeat("v", n),
		})
	}
	tests = append(tests, struct {
		name     string
		entities []model.Entity
	}{"every string form", sized})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			var changes []model.Change
			for _, e := range tt.entities {
				changes = append(changes, put(e.Kind, e.ID, e.Value))
			}
			apply(t, s, changes...)
			count, digest, got := state(t, s)
			if want := referenceDigest(t, tt.entities); digest != want {
				t.Fatalf("digest %s, library reference %s", digest, want)
			}
			if count != uint64(len(tt.entities)) {
				t.Fatalf("count %d, want %d", count, len(tt.entities))
			}
			// ForEach yields digest order, which must be kind-then-id order.
			if !slices.IsSortedFunc(got, func(a, b model.Entity) int {
				if c := strings.Compare(a.Kind, b.Kind); c != 0 {
					return c
				}
				return strings.Compare(a.ID, b.ID)
			}) {
				t.Fatalf("ForEach order is not kind, then id: %q", got)
			}
		})
	}
}

func TestDigestIndependentOfInsertionOrder(t *testing.T) {
	entities := []model.Entity{
		{Kind: "a", ID: "1", Value: "x"}, {Kind: "ab", ID: "0", Value: "y"},
		{Kind: "b", ID: "2", Value: "z"}, {Kind: "a", ID: "10", Value: "w"},
	}
	orders := [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}}
	var digests []string
	for _, order := range orders {
		s, _ := openTemp(t)
		for _, i := range order {
			e := entities[i]
			apply(t, s, put(e.Kind, e.ID, e.Value))
		}
		_, d, _ := state(t, s)
		digests = append(digests, d)
	}
	for i, d := range digests {
		if d != digests[0] {
			t.Fatalf("order %v: digest %s, order %v: %s", orders[i], d, orders[0], digests[0])
		}
	}
	// And a put then delete leaves no trace.
	s, _ := openTemp(t)
	for _, e := range entities {
		apply(t, s, put(e.Kind, e.ID, e.Value))
	}
	apply(t, s, put("extra", "1", "v"), del("extra", "1"))
	if _, d, _ := state(t, s); d != digests[0] {
		t.Fatalf("after put+delete of another entity: %s, want %s", d, digests[0])
	}
}

func TestDigestCacheFollowsWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	apply(t, s, put("k", "1", "a"))
	_, d1, _ := state(t, s) // fills the cache
	apply(t, s, put("k", "1", "b"))
	_, d2, e2 := state(t, s)
	if d1 == d2 {
		t.Fatalf("digest unchanged after overwrite: cache not invalidated")
	}
	if want := referenceDigest(t, e2); d2 != want {
		t.Fatalf("digest %s, want %s", d2, want)
	}

	// A transaction that writes then rolls back must not leave its digest
	// in the cache.
	errRollback := errors.New("rollback")
	var inTx string
	err := s.Update(ctx, func(tx *model.Tx) error {
		if err := tx.Apply([]model.Change{put("k", "2", "c")}); err != nil {
			return err
		}
		var err error
		inTx, err = tx.Digest()
		if err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Update = %v, want the function's error", err)
	}
	if inTx == d2 {
		t.Fatalf("digest inside the writing transaction did not see its own write")
	}
	if _, d, _ := state(t, s); d != d2 {
		t.Fatalf("after rollback digest %s, want %s", d, d2)
	}

	// The same write committed gives what the transaction saw.
	apply(t, s, put("k", "2", "c"))
	if _, d, _ := state(t, s); d != inTx {
		t.Fatalf("committed digest %s, in-transaction digest %s", d, inTx)
	}
}

// TestDigestDocExample pins the worked example in docs/protocol.md (also
// computed independently of Go when the document was written).
func TestDigestDocExample(t *testing.T) {
	s, _ := openTemp(t)
	apply(t, s, put("svc", "b", "v2"), put("svc", "a", "v1"), put("route", "r1", `{"to":"svc/a"}`))
	const want = "5d9ee201832aa9990831c31c90545fdbc7b9ced7c79a877e18510625ea0bef81"
	if _, d, _ := state(t, s); d != want {
		t.Fatalf("digest %s, docs/protocol.md says %s", d, want)
	}
}
