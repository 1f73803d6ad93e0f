package guest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/abi"
)

// batchFake is fake with the batch path: DecideBatch decides each header
// with fake.Decide and counts its calls, so its results can be compared
// with the per-header path.
type batchFake struct {
	fake
	batches int
}

func (f *batchFake) DecideBatch(hs []abi.Header, out []abi.Verdict) {
	f.batches++
	for i := range hs {
		out[i] = f.fake.Decide(&hs[i])
	}
}

func TestDecideBatchPath(t *testing.T) {
	in := abi.AppendHeaderBatch(nil, append(headers(3, abi.IndexHA), headers(2, abi.IndexLegacy)...))
	perHeader, err := call(t, &dispatcher{f: &fake{typ: abi.IndexHA}}, "decide", in)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(perHeader)
	f := &batchFake{fake: fake{typ: abi.IndexHA}}
	d := &dispatcher{f: f}
	for n := range 3 {
		got, err := call(t, d, "decide", in)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("batch path = %x, per-header path = %x", got, want)
		}
		if f.batches != n+1 || f.decided != 5*(n+1) {
			t.Fatalf("after %d calls: %d DecideBatch calls deciding %d headers, want %d and %d", n+1, f.batches, f.decided, n+1, 5*(n+1))
		}
	}
	// A batch smaller than the last reuses the verdict slice and still
	// answers exactly one verdict per header.
	got, err := call(t, d, "decide", abi.AppendHeaderBatch(nil, headers(1, abi.IndexHA)))
	if err != nil {
		t.Fatal(err)
	}
	if want := abi.AppendVerdicts(nil, []abi.Verdict{{Action: abi.Apply}}); !bytes.Equal(got, want) {
		t.Fatalf("one-header batch = %x, want %x", got, want)
	}
}

func TestDecideBatchFailures(t *testing.T) {
	bad := abi.Verdict{Action: abi.Skip, Reason: 9}
	tests := []struct {
		name    string
		f       *batchFake
		wantErr error
		wantMsg string
	}{
		{"invalid verdict", &batchFake{fake: fake{typ: abi.IndexHA, verdict: &bad}}, errVerdict, "1/9 for header 0"},
		{"panic", &batchFake{fake: fake{typ: abi.IndexHA, panicMsg: "boom"}}, errPanicked, "filter panicked: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := call(t, &dispatcher{f: tt.f}, "decide", abi.AppendHeaderBatch(nil, headers(2, abi.IndexHA)))
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

func TestDecideBatchSteadyStateAllocs(t *testing.T) {
	d := &dispatcher{f: &batchFake{fake: fake{typ: abi.IndexHA}}}
	in := abi.AppendHeaderBatch(nil, headers(256, abi.IndexHA))
	copy(d.buffer(len(in)), in)
	if _, err := d.decide(len(in)); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.decide(len(in)); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("batch decide of 256 headers allocates %.1f times per call, want 0", allocs)
	}
}

type stringer struct{}

func (stringer) String() string { return "a stringer" }

// TestErrorsMatchFmt pins the errors built without fmt to what fmt.Errorf
// built before: message and wrapped error.
func TestErrorsMatchFmt(t *testing.T) {
	d := &dispatcher{f: &fake{typ: abi.IndexHA}}
	d.buffer(0)
	_, err := d.decide(minBuffer + 1)
	sameError(t, err, fmt.Errorf("%w: %d bytes, buffer holds %d", errInputLength, minBuffer+1, minBuffer), errInputLength)

	refused := errors.New("no thanks")
	_, err = call(t, &dispatcher{f: &fake{typ: abi.IndexHA, fail: refused}}, "init", abi.AppendConfig(nil, &abi.Config{Type: abi.IndexHA}))
	sameError(t, err, fmt.Errorf("ig_init: %w", refused), refused)

	_, err = call(t, &dispatcher{f: &fake{typ: abi.IndexHA}}, "decide", []byte{0xc3})
	_, decodeErr := abi.DecodeHeaderBatch([]byte{0xc3}, nil)
	sameError(t, err, fmt.Errorf("ig_decide: %w", decodeErr), abi.ErrMalformed)

	// panicText is fmt's %v for the kinds it knows.
	for _, v := range []any{
		"text", errors.New("an error"), stringer{}, true, -3, int8(-8), int16(16), int32(-32), int64(1 << 40),
		uint(7), uint8(8), uint16(16), uint32(32), uint64(1 << 63), uintptr(9),
		float32(0.1), 1.5, 1e21, -0.0,
	} {
		if got, want := panicText(v), fmt.Sprint(v); got != want {
			t.Errorf("panicText(%#v) = %q, fmt says %q", v, got, want)
		}
	}
	if got := panicText(struct{ x int }{1}); !strings.Contains(got, "does not print") {
		t.Errorf("panicText of a struct = %q", got)
	}
}

func sameError(t *testing.T, got, want, wrapped error) {
	t.Helper()
	if got == nil || got.Error() != want.Error() || !errors.Is(got, wrapped) {
		t.Fatalf("error %v, want %v (wrapping %v)", got, want, wrapped)
	}
}
