// Command rogue is a filter module for the host's tests: a correct filter
// for the type it is initialised with (the rules of filters/native, restated
// here because filters/native links abi/guest's exports) that misbehaves on
// command. The commands come in abi.Config.Options as comma-separated
// key=value pairs, so one binary covers every case and passes the host's
// self-test (whose indexes stay far below the triggers):
//
//	panic-init   Init panics; the export recovers and returns an error result
//	crash-init   Init panics without recovering: the Go runtime exits
//	loop=N       deciding index N spins forever
//	trap=N       deciding index N loads from outside linear memory (a wasm trap)
//	panic=N      deciding index N panics without recovering (the runtime exits)
//	bomb=N       deciding index N allocates until memory runs out
//	badptr=N     deciding index N returns a result pointer outside memory
//	count=N      deciding index N returns one verdict too few
//	code=N       deciding index N returns an unknown verdict code
//	error=N      deciding index N returns an error result
//	badsnap=N    after applying index N, ig_snapshot returns garbage
//	extra=S      snapshots carry Extra S (a module with private state)
//
// It uses raw //go:wasmexport functions rather than abi/guest because
// several commands break the ABI on purpose.
package main

import (
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/indexgate/indexgate/abi"
)

func main() {}

var (
	filter   *rules
	triggers = map[string]uint64{}
	extra    []byte
	in, out  []byte
	headers  []abi.Header
	verdicts []abi.Verdict
	hoard    [][]byte
	badSnap  bool
)

//go:wasmexport ig_abi_version
func igABIVersion() int32 { return int32(abi.Version) }

//go:wasmexport ig_buffer
func igBuffer(size int32) int32 {
	if size < 0 || size > 1<<24 {
		return 0
	}
	if int(size) > len(in) {
		in = make([]byte, size)
	}
	return int32(addr(in))
}

//go:wasmexport ig_init
func igInit(n int32) int64 {
	cfg, err := abi.DecodeConfig(in[:n])
	if err != nil {
		return fail(err)
	}
	opts := string(cfg.Options)
	for _, kv := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(kv, "=")
		if k == "extra" {
			extra = []byte(v)
			continue
		}
		x, _ := strconv.ParseUint(v, 10, 64)
		triggers[k] = x
	}
	if _, ok := triggers["crash-init"]; ok {
		panic("rogue: crash in init")
	}
	info, err := initFilter(cfg)
	if err != nil {
		return fail(err)
	}
	return ok(abi.AppendInfo(out[:0], &info))
}

func initFilter(cfg abi.Config) (info abi.Info, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("filter panicked: %v", r)
		}
	}()
	if _, ok := triggers["panic-init"]; ok {
		panic("rogue: panic in init")
	}
	if !cfg.Type.Valid() {
		return info, fmt.Errorf("rogue: %w: %d", abi.ErrUnknownIndexType, cfg.Type)
	}
	filter = &rules{s: abi.State{Version: abi.StateVersion, Type: cfg.Type}}
	return abi.Info{Name: "rogue", Version: "0.0.1", Type: cfg.Type}, nil
}

// rules is filters/native's strategy (see native.Evaluate).
type rules struct{ s abi.State }

func (f *rules) Decide(h *abi.Header) abi.Verdict {
	s := &f.s
	v := abi.Verdict{Action: abi.Resync}
	switch {
	case h.Type != s.Type:
		v = abi.Verdict{Action: abi.Skip, Reason: abi.ReasonWrongType}
	case h.Index == 0 || h.PrevIndex >= h.Index:
		v.Reason = abi.ReasonInvalid
	case !s.Initialized:
		v.Reason = abi.ReasonNoBase
	case h.Timeline != s.Timeline:
		v.Reason = abi.ReasonTimeline
	case h.Index == s.LastIndex:
		v = abi.Verdict{Action: abi.Skip, Reason: abi.ReasonDuplicate}
	case h.Index < s.LastIndex:
		v = abi.Verdict{Action: abi.Skip, Reason: abi.ReasonStale}
	case h.PrevIndex != s.LastIndex:
		v.Reason = abi.ReasonGap
	case s.Type == abi.IndexHA && h.Term < s.Term:
		v.Reason = abi.ReasonTerm
	default:
		v = abi.Verdict{Action: abi.Apply}
		s.LastIndex, s.Term = h.Index, h.Term
	}
	return v
}

func (f *rules) ModeChange(mc abi.ModeChange) error {
	if err := mc.Validate(); err != nil {
		return err
	}
	s := &f.s
	if mc.To != s.Type || (s.Initialized && s.Timeline == mc.Timeline && s.LastIndex >= mc.BaseIndex) {
		return nil
	}
	s.Initialized, s.LastIndex, s.Term, s.Timeline = true, mc.BaseIndex, 0, mc.Timeline
	return nil
}

func (f *rules) Snapshot() abi.State { return f.s }

func (f *rules) Restore(s abi.State) error {
	t := f.s.Type
	if s.Type != t && (s.Type != abi.IndexNone || s.Initialized) {
		return fmt.Errorf("rogue: %s state for a %s filter", s.Type, t)
	}
	f.s = abi.State{Version: abi.StateVersion, Type: t}
	if s.Initialized {
		f.s.Initialized, f.s.LastIndex, f.s.Term, f.s.Timeline = true, s.LastIndex, s.Term, s.Timeline
	}
	return nil
}

func hit(k string, index uint64) bool {
	x, ok := triggers[k]
	return ok && x == index
}

//go:wasmexport ig_decide
func igDecide(n int32) int64 {
	var err error
	headers, err = abi.DecodeHeaderBatch(in[:n], headers)
	if err != nil {
		return fail(err)
	}
	verdicts = verdicts[:0]
	for i := range headers {
		h := &headers[i]
		switch {
		case hit("loop", h.Index):
			for {
			}
		case hit("trap", h.Index):
			// Far beyond the host's memory cap: the load traps.
			p := unsafe.Pointer(uintptr(0xfff0_0000))
			verdicts = append(verdicts, abi.Verdict{Action: abi.Action(*(*byte)(p))})
			continue
		case hit("panic", h.Index):
			panic("rogue: panic in decide")
		case hit("bomb", h.Index):
			for {
				hoard = append(hoard, make([]byte, 16<<20))
			}
		case hit("badptr", h.Index):
			return int64(0x7fff_fff0)<<32 | 64
		case hit("error", h.Index):
			return fail(fmt.Errorf("rogue: refusing index %d", h.Index))
		case hit("code", h.Index):
			verdicts = append(verdicts, abi.Verdict{Action: 9, Reason: 42})
			continue
		case hit("count", h.Index):
			continue
		}
		v := filter.Decide(h)
		if v.Action == abi.Apply && hit("badsnap", h.Index) {
			badSnap = true
		}
		verdicts = append(verdicts, v)
	}
	return ok(abi.AppendVerdicts(out[:0], verdicts))
}

//go:wasmexport ig_mode_change
func igModeChange(n int32) int64 {
	mc, err := abi.DecodeModeChange(in[:n])
	if err != nil {
		return fail(err)
	}
	if err := filter.ModeChange(mc); err != nil {
		return fail(err)
	}
	return 0
}

//go:wasmexport ig_snapshot
func igSnapshot() int64 {
	if badSnap {
		return ok(append(out[:0], 0xc1, 0xc1, 0xc1))
	}
	s := filter.Snapshot()
	s.Extra = extra
	return ok(abi.AppendState(out[:0], &s))
}

//go:wasmexport ig_restore
func igRestore(n int32) int64 {
	s, err := abi.DecodeState(in[:n])
	if err != nil {
		return fail(err)
	}
	if err := filter.Restore(s); err != nil {
		return fail(err)
	}
	badSnap = false
	return 0
}

func ok(b []byte) int64 {
	out = b
	if len(b) == 0 {
		return 0
	}
	return int64(addr(b))<<32 | int64(len(b))
}

func fail(err error) int64 {
	out = append(out[:0], err.Error()...)
	return -(int64(addr(out))<<32 | int64(len(out)))
}

func addr(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}
