package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/abi/guest"
	"github.com/indexgate/indexgate/filters/native"
)

func init() { guest.Register(newFilter()) }

// main is empty: the module is a WASI reactor; abi/guest exports the ABI.
func main() {}

var errOptions = errors.New("strictha: bad options")

// extraMagic starts the Extra this module writes. State.Extra may have been
// written by any other module (after a hot swap) or be empty (after a full
// resync), so the module only trusts bytes that carry its own mark.
const (
	extraMagic = "strictha/1\x00"
	extraSize  = len(extraMagic) + 8 + 8 // magic, refused, lastRefused
)

type filter struct {
	ha      *native.Filter
	maxJump uint64 // 0: no limit
	// Private state, carried in State.Extra: how many change sets the term
	// rule refused, and the index of the last one.
	refused     uint64
	lastRefused uint64
}

func newFilter() *filter { return &filter{ha: native.NewHA()} }

func (f *filter) Init(cfg abi.Config) (abi.Info, error) {
	if _, err := f.ha.Init(cfg); err != nil {
		return abi.Info{}, fmt.Errorf("strictha: %w", err)
	}
	maxJump, err := parseOptions(cfg.Options)
	if err != nil {
		return abi.Info{}, err
	}
	f.maxJump = maxJump
	return abi.Info{Name: "example-strictha", Version: "1.0.0", Type: abi.IndexHA}, nil
}

// parseOptions reads "max-term-jump=N" with N >= 1; empty means no limit.
func parseOptions(opts []byte) (uint64, error) {
	s := strings.TrimSpace(string(opts))
	if s == "" {
		return 0, nil
	}
	key, val, ok := strings.Cut(s, "=")
	if !ok || key != "max-term-jump" {
		return 0, fmt.Errorf("%w: %q, want max-term-jump=N", errOptions, s)
	}
	n, err := strconv.ParseUint(val, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: max-term-jump %q is not a positive integer", errOptions, val)
	}
	return n, nil
}

func (f *filter) Decide(h *abi.Header) abi.Verdict {
	if f.maxJump > 0 {
		// Term 0 is "no term seen yet" (a baseline from a mode change, or a
		// restored position): raft terms start at 1, so there is nothing to
		// measure a jump from. The standard rules come first, so a
		// duplicate, a gap or an old term keeps its usual verdict.
		s := f.ha.Snapshot()
		if s.Term > 0 && h.Term > s.Term && h.Term-s.Term > f.maxJump &&
			native.Evaluate(&s, h).Action == abi.Apply {
			f.refused++
			f.lastRefused = h.Index
			return abi.Verdict{Action: abi.Resync, Reason: abi.ReasonTerm}
		}
	}
	return f.ha.Decide(h)
}

func (f *filter) ModeChange(mc abi.ModeChange) error {
	if err := f.ha.ModeChange(mc); err != nil {
		return fmt.Errorf("strictha: %w", err)
	}
	return nil
}

func (f *filter) Snapshot() abi.State {
	s := f.ha.Snapshot()
	s.Extra = make([]byte, 0, extraSize)
	s.Extra = append(s.Extra, extraMagic...)
	s.Extra = binary.BigEndian.AppendUint64(s.Extra, f.refused)
	s.Extra = binary.BigEndian.AppendUint64(s.Extra, f.lastRefused)
	return s
}

func (f *filter) Restore(s abi.State) error {
	if err := f.ha.Restore(s); err != nil {
		return fmt.Errorf("strictha: %w", err)
	}
	f.refused, f.lastRefused = 0, 0
	if len(s.Extra) == extraSize && string(s.Extra[:len(extraMagic)]) == extraMagic {
		rest := s.Extra[len(extraMagic):]
		f.refused = binary.BigEndian.Uint64(rest)
		f.lastRefused = binary.BigEndian.Uint64(rest[8:])
	}
	return nil
}
