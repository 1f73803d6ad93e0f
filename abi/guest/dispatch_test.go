package guest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/indexgate/indexgate/abi"
)

// fake is a Filter whose behaviour each test case sets: it applies every
// header of its type, counts calls, keeps what it was given, and fails or
// panics on request.
type fake struct {
	typ      abi.IndexType
	fail     error  // returned by Init, ModeChange and Restore
	panicMsg string // panicked with by every method
	verdict  *abi.Verdict
	cfg      abi.Config
	state    abi.State
	decided  int
}

func (f *fake) Init(cfg abi.Config) (abi.Info, error) {
	f.maybePanic()
	f.cfg = cfg
	return abi.Info{Name: "fake", Version: "0.1.0", Type: f.typ}, f.fail
}

func (f *fake) Decide(h *abi.Header) abi.Verdict {
	f.maybePanic()
	f.decided++
	if f.verdict != nil {
		return *f.verdict
	}
	if h.Type != f.typ {
		return abi.Verdict{Action: abi.Skip, Reason: abi.ReasonWrongType}
	}
	f.state.LastIndex = h.Index
	return abi.Verdict{Action: abi.Apply}
}

func (f *fake) ModeChange(mc abi.ModeChange) error {
	f.maybePanic()
	f.state.Timeline = mc.Timeline
	return f.fail
}

func (f *fake) Snapshot() abi.State {
	f.maybePanic()
	s := f.state
	s.Version, s.Type = abi.StateVersion, f.typ
	return s
}

func (f *fake) Restore(s abi.State) error {
	f.maybePanic()
	f.state = s
	return f.fail
}

func (f *fake) maybePanic() {
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
}

var tl = abi.Timeline{0xaa, 0xbb}

func headers(n int, typ abi.IndexType) []abi.Header {
	hs := make([]abi.Header, n)
	for i := range hs {
		hs[i] = abi.Header{Index: uint64(i + 2), PrevIndex: uint64(i + 1), Type: typ, Term: 1, Timeline: tl}
	}
	return hs
}

// call copies in into the dispatcher's input buffer, as the host does after
// ig_buffer, and runs op with its length.
func call(t *testing.T, d *dispatcher, op string, in []byte) ([]byte, error) {
	t.Helper()
	buf := d.buffer(len(in))
	if buf == nil {
		t.Fatalf("buffer(%d) = nil", len(in))
	}
	copy(buf, in)
	n := len(in)
	switch op {
	case "init":
		return d.init(n)
	case "decide":
		return d.decide(n)
	case "modeChange":
		return d.modeChange(n)
	case "snapshot":
		return d.snapshot()
	case "restore":
		return d.restore(n)
	}
	t.Fatalf("unknown op %q", op)
	return nil, nil
}

func TestDispatcher(t *testing.T) {
	state := abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Initialized: true, LastIndex: 7, Term: 3, Timeline: tl, Extra: []byte("x")}
	badVerdict := abi.Verdict{Action: 9}
	tests := []struct {
		name    string
		f       *fake // nil: no filter registered
		op      string
		in      []byte
		want    []byte // expected result bytes when wantErr is nil
		wantErr error  // matched with errors.Is
		wantMsg string // a substring of the error message
	}{
		{
			name: "init", f: &fake{typ: abi.IndexHA}, op: "init",
			in:   abi.AppendConfig(nil, &abi.Config{Type: abi.IndexHA, Options: []byte("opt")}),
			want: abi.AppendInfo(nil, &abi.Info{Name: "fake", Version: "0.1.0", Type: abi.IndexHA}),
		},
		{
			name: "init refused by filter", f: &fake{typ: abi.IndexHA, fail: errors.New("no thanks")}, op: "init",
			in: abi.AppendConfig(nil, &abi.Config{Type: abi.IndexHA}), wantMsg: "ig_init: no thanks",
		},
		{
			name: "init malformed", f: &fake{typ: abi.IndexHA}, op: "init",
			in: []byte{0x92, 0xcc}, wantErr: abi.ErrMalformed,
		},
		{
			name: "decide", f: &fake{typ: abi.IndexHA}, op: "decide",
			in:   abi.AppendHeaderBatch(nil, append(headers(2, abi.IndexHA), headers(1, abi.IndexLegacy)...)),
			want: abi.AppendVerdicts(nil, []abi.Verdict{{Action: abi.Apply}, {Action: abi.Apply}, {Action: abi.Skip, Reason: abi.ReasonWrongType}}),
		},
		{
			name: "decide empty batch", f: &fake{typ: abi.IndexHA}, op: "decide",
			in: abi.AppendHeaderBatch(nil, nil), want: abi.AppendVerdicts(nil, nil),
		},
		{
			name: "decide truncated", f: &fake{typ: abi.IndexHA}, op: "decide",
			in: abi.AppendHeaderBatch(nil, headers(3, abi.IndexHA))[:100], wantErr: abi.ErrMalformed,
		},
		{
			name: "decide not an array", f: &fake{typ: abi.IndexHA}, op: "decide",
			in: []byte{0xc3}, wantErr: abi.ErrMalformed,
		},
		{
			name: "decide oversize batch", f: &fake{typ: abi.IndexHA}, op: "decide",
			in: abi.AppendHeaderBatch(nil, headers(abi.MaxBatch+1, abi.IndexHA)), wantErr: abi.ErrBatchTooLarge,
		},
		{
			name: "decide largest batch", f: &fake{typ: abi.IndexHA}, op: "decide",
			in:   abi.AppendHeaderBatch(nil, headers(abi.MaxBatch, abi.IndexHA)),
			want: abi.AppendVerdicts(nil, make([]abi.Verdict, abi.MaxBatch)),
		},
		{
			name: "decide invalid verdict", f: &fake{typ: abi.IndexHA, verdict: &badVerdict}, op: "decide",
			in: abi.AppendHeaderBatch(nil, headers(1, abi.IndexHA)), wantErr: errVerdict,
		},
		{
			name: "decide panics", f: &fake{typ: abi.IndexHA, panicMsg: "boom"}, op: "decide",
			in: abi.AppendHeaderBatch(nil, headers(1, abi.IndexHA)), wantErr: errPanicked, wantMsg: "filter panicked: boom",
		},
		{
			name: "mode change", f: &fake{typ: abi.IndexHA}, op: "modeChange",
			in:   abi.AppendModeChange(nil, &abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA, LastIndex: 5, BaseIndex: 5, Timeline: tl}),
			want: []byte{},
		},
		{
			name: "mode change trailing bytes", f: &fake{typ: abi.IndexHA}, op: "modeChange",
			in:      append(abi.AppendModeChange(nil, &abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA}), 0),
			wantErr: abi.ErrMalformed,
		},
		{
			name: "mode change panics", f: &fake{typ: abi.IndexHA, panicMsg: "mc"}, op: "modeChange",
			in:      abi.AppendModeChange(nil, &abi.ModeChange{From: abi.IndexLegacy, To: abi.IndexHA}),
			wantErr: errPanicked,
		},
		{
			name: "snapshot", f: &fake{typ: abi.IndexHA}, op: "snapshot",
			want: abi.AppendState(nil, &abi.State{Version: abi.StateVersion, Type: abi.IndexHA}),
		},
		{
			name: "snapshot panics", f: &fake{typ: abi.IndexHA, panicMsg: "snap"}, op: "snapshot",
			wantErr: errPanicked,
		},
		{
			name: "restore", f: &fake{typ: abi.IndexHA}, op: "restore",
			in: abi.AppendState(nil, &state), want: []byte{},
		},
		{
			name: "restore other state version", f: &fake{typ: abi.IndexHA}, op: "restore",
			in: bytes.Replace(abi.AppendState(nil, &state), []byte{0x97, 0xcc, 0x01}, []byte{0x97, 0xcc, 0x02}, 1), wantErr: abi.ErrMalformed,
		},
		{
			name: "restore refused by filter", f: &fake{typ: abi.IndexHA, fail: errors.New("not mine")}, op: "restore",
			in: abi.AppendState(nil, &state), wantMsg: "ig_restore: not mine",
		},
		{
			name: "no filter registered", op: "decide",
			in: abi.AppendHeaderBatch(nil, headers(1, abi.IndexHA)), wantErr: errNoFilter,
		},
		{
			name: "no filter registered snapshot", op: "snapshot", wantErr: errNoFilter,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &dispatcher{}
			if tt.f != nil {
				d.f = tt.f
			}
			got, err := call(t, d, tt.op, tt.in)
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("%s: %v", tt.op, err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("%s = %x, want %x", tt.op, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s succeeded with %x, want an error", tt.op, got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("%s error %v, want %v", tt.op, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("%s error %q does not contain %q", tt.op, err, tt.wantMsg)
			}
		})
	}
}

// TestDispatcherCopiesAliasedInput checks that what a filter keeps from
// Init and Restore survives the host overwriting the input buffer.
func TestDispatcherCopiesAliasedInput(t *testing.T) {
	f := &fake{typ: abi.IndexHA}
	d := &dispatcher{f: f}
	if _, err := call(t, d, "init", abi.AppendConfig(nil, &abi.Config{Type: abi.IndexHA, Options: []byte("options")})); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, d, "restore", abi.AppendState(nil, &abi.State{Version: abi.StateVersion, Type: abi.IndexHA, Extra: []byte("extra")})); err != nil {
		t.Fatal(err)
	}
	clear(d.buffer(0))
	if string(f.cfg.Options) != "options" || string(f.state.Extra) != "extra" {
		t.Fatalf("filter kept Options %q and Extra %q, want copies that survive buffer reuse", f.cfg.Options, f.state.Extra)
	}
}

func TestDispatcherInputLength(t *testing.T) {
	tests := []struct {
		name string
		n    int
	}{
		{"negative", -1},
		{"beyond buffer", minBuffer + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &dispatcher{f: &fake{typ: abi.IndexHA}}
			d.buffer(0)
			if _, err := d.decide(tt.n); !errors.Is(err, errInputLength) {
				t.Fatalf("decide(%d) error %v, want %v", tt.n, err, errInputLength)
			}
		})
	}
}

func TestBuffer(t *testing.T) {
	tests := []struct {
		name    string
		sizes   []int // successive requests
		wantNil bool  // for the last request
		reuse   bool  // the last request returns the previous buffer
	}{
		{name: "zero size gets a buffer", sizes: []int{0}},
		{name: "negative", sizes: []int{-1}, wantNil: true},
		{name: "above MaxInput", sizes: []int{MaxInput + 1}, wantNil: true},
		{name: "exactly MaxInput", sizes: []int{MaxInput}},
		{name: "smaller request reuses", sizes: []int{10000, 100}, reuse: true},
		{name: "same request reuses", sizes: []int{10000, 10000}, reuse: true},
		{name: "larger request grows", sizes: []int{100, minBuffer + 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &dispatcher{}
			var prev, got []byte
			for _, size := range tt.sizes {
				prev, got = got, d.buffer(size)
			}
			last := tt.sizes[len(tt.sizes)-1]
			if tt.wantNil {
				if got != nil {
					t.Fatalf("buffer(%d) = %d bytes, want nil", last, len(got))
				}
				return
			}
			if len(got) < max(last, 1) {
				t.Fatalf("buffer(%d) = %d bytes", last, len(got))
			}
			if prev == nil {
				return
			}
			if same := &got[0] == &prev[0]; same != tt.reuse {
				t.Fatalf("buffer(%d) reused previous buffer = %t, want %t", last, same, tt.reuse)
			}
		})
	}
}

// TestDecideSteadyStateAllocs is the guest half of the hot path: once the
// buffers have grown, a decide call must not allocate.
func TestDecideSteadyStateAllocs(t *testing.T) {
	d := &dispatcher{f: &fake{typ: abi.IndexHA}}
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
		t.Fatalf("decide of 256 headers allocates %.1f times per call, want 0", allocs)
	}
}

func TestDecideSequential(t *testing.T) {
	f := &fake{typ: abi.IndexHA}
	d := &dispatcher{f: f}
	hs := headers(5, abi.IndexHA)
	if _, err := call(t, d, "decide", abi.AppendHeaderBatch(nil, hs)); err != nil {
		t.Fatal(err)
	}
	// The fake records the last index it applied: every header was decided
	// once, in order.
	if f.decided != len(hs) || f.state.LastIndex != hs[len(hs)-1].Index {
		t.Fatalf("decided %d headers ending at %d, want %d ending at %d", f.decided, f.state.LastIndex, len(hs), hs[len(hs)-1].Index)
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("bad input"), "bad input"},
		{"invalid utf-8 replaced", errors.New("bad \xff byte"), "bad \uFFFD byte"},
		{"empty gets a message", errors.New(""), "filter failed with an empty error message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &dispatcher{}
			got := d.errorMessage(tt.err)
			if string(got) != tt.want || !utf8.Valid(got) {
				t.Fatalf("errorMessage(%q) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestPack(t *testing.T) {
	tests := []struct {
		name   string
		ptr, n uint32
		failed bool
		want   int64
	}{
		{"empty success", 0, 0, false, 0},
		{"success", 0x1000, 48, false, 0x1000<<32 | 48},
		{"failure", 0x1000, 5, true, -(0x1000<<32 | 5)},
		{"highest pointer below 2 GiB", 0x7fffffff, 0x7fffffff, false, 0x7fffffff<<32 | 0x7fffffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pack(tt.ptr, tt.n, tt.failed)
			if got != tt.want {
				t.Fatalf("pack = %#x, want %#x", got, tt.want)
			}
			if (got < 0) != tt.failed {
				t.Fatalf("pack sign says failed = %t, want %t", got < 0, tt.failed)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	// Register writes the package's one filter; put it back for other tests.
	saved := active
	t.Cleanup(func() { active = saved })
	tests := []struct {
		name      string
		first     Filter
		second    Filter
		wantPanic bool
	}{
		{name: "once", first: &fake{}},
		{name: "nil", first: nil, wantPanic: true},
		{name: "twice", first: &fake{}, second: &fake{}, wantPanic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			active = dispatcher{}
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				Register(tt.first)
				if tt.second != nil {
					Register(tt.second)
				}
				return false
			}()
			if panicked != tt.wantPanic {
				t.Fatalf("Register panicked = %t, want %t", panicked, tt.wantPanic)
			}
			if !tt.wantPanic && active.f != tt.first {
				t.Fatal("Register did not make the filter active")
			}
		})
	}
}

// BenchmarkDecide measures the dispatcher around a trivial filter: decoding
// the batch, one Decide call per header and encoding the verdicts.
func BenchmarkDecide(b *testing.B) {
	const n = 256
	d := &dispatcher{f: &fake{typ: abi.IndexHA}}
	in := abi.AppendHeaderBatch(nil, headers(n, abi.IndexHA))
	copy(d.buffer(len(in)), in)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decide(len(in)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/header")
}
