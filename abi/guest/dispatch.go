package guest

import (
	"errors"
	"strconv"
	"strings"

	"github.com/indexgate/indexgate/abi"
)

// MaxInput is the largest input ig_buffer hands out (16 MiB). It bounds what
// a host can make the guest allocate; the largest real input, a full header
// batch, is under 200 KiB.
const MaxInput = 16 << 20

// minBuffer is the smallest input buffer allocated, so that a zero-size
// request still gets a non-zero pointer and small inputs never regrow.
const minBuffer = 4 << 10

var (
	errNoFilter    = errors.New("guest: no filter registered (call guest.Register from the module's init)")
	errInputLength = errors.New("guest: input length outside the buffer from ig_buffer")
	errPanicked    = errors.New("filter panicked")
	errVerdict     = errors.New("guest: filter returned an invalid verdict")
)

// dispatcher turns ABI calls (bytes in, bytes out) into Filter calls. It owns
// the input buffer the host writes into and the output buffer results are
// read from, and reuses both, plus the decoded header and verdict slices, so
// that a decide call does not allocate once the buffers have grown.
type dispatcher struct {
	f        Filter
	in       []byte
	out      []byte
	headers  []abi.Header
	verdicts []abi.Verdict
}

// buffer returns an input buffer of at least size bytes, or nil when size is
// negative or above MaxInput. The buffer stays valid until the next call.
func (d *dispatcher) buffer(size int) []byte {
	if size < 0 || size > MaxInput {
		return nil
	}
	if size > len(d.in) {
		n := max(size, 2*len(d.in), minBuffer)
		d.in = make([]byte, min(n, MaxInput))
	}
	if len(d.in) == 0 {
		d.in = make([]byte, minBuffer)
	}
	return d.in
}

// input returns the n bytes the host wrote into the input buffer.
func (d *dispatcher) input(n int) ([]byte, error) {
	if d.f == nil {
		return nil, errNoFilter
	}
	if n < 0 || n > len(d.in) {
		return nil, wrapf(errInputLength, strconv.Itoa(n)+" bytes, buffer holds "+strconv.Itoa(len(d.in)))
	}
	return d.in[:n], nil
}

// recoverPanic turns a panic in the filter into an error result: a trap
// would leave the host unable to tell a broken filter from a broken host
// call, and the module's memory would be unusable.
func recoverPanic(err *error) {
	if r := recover(); r != nil {
		*err = wrapf(errPanicked, panicText(r))
	}
}

func (d *dispatcher) init(n int) (res []byte, err error) {
	defer recoverPanic(&err)
	in, err := d.input(n)
	if err != nil {
		return nil, err
	}
	cfg, err := abi.DecodeConfig(in)
	if err != nil {
		return nil, prefixed("ig_init", err)
	}
	// Options aliases the input buffer, which the next ig_buffer call
	// reuses; the filter may keep it.
	cfg.Options = clone(cfg.Options)
	info, err := d.f.Init(cfg)
	if err != nil {
		return nil, prefixed("ig_init", err)
	}
	d.out = abi.AppendInfo(d.out[:0], &info)
	return d.out, nil
}

func (d *dispatcher) decide(n int) (res []byte, err error) {
	defer recoverPanic(&err)
	in, err := d.input(n)
	if err != nil {
		return nil, err
	}
	d.headers, err = abi.DecodeHeaderBatch(in, d.headers)
	if err != nil {
		return nil, prefixed("ig_decide", err)
	}
	hs := d.headers
	if cap(d.verdicts) < len(hs) {
		d.verdicts = make([]abi.Verdict, len(hs))
	}
	vs := d.verdicts[:len(hs)]
	if bf, ok := d.f.(BatchFilter); ok {
		// One call for the batch (see BatchFilter).
		bf.DecideBatch(hs, vs)
	} else {
		for i := range hs {
			vs[i] = d.f.Decide(&hs[i])
			if !vs[i].Valid() {
				// Stop deciding: the check below reports header i.
				break
			}
		}
	}
	for i, v := range vs {
		if !v.Valid() {
			return nil, wrapf(errVerdict, strconv.Itoa(int(v.Action))+"/"+strconv.Itoa(int(v.Reason))+" for header "+strconv.Itoa(i))
		}
	}
	d.out = abi.AppendVerdicts(d.out[:0], vs)
	return d.out, nil
}

func (d *dispatcher) modeChange(n int) (res []byte, err error) {
	defer recoverPanic(&err)
	in, err := d.input(n)
	if err != nil {
		return nil, err
	}
	mc, err := abi.DecodeModeChange(in)
	if err != nil {
		return nil, prefixed("ig_mode_change", err)
	}
	if err := d.f.ModeChange(mc); err != nil {
		return nil, prefixed("ig_mode_change", err)
	}
	return d.out[:0], nil
}

func (d *dispatcher) snapshot() (res []byte, err error) {
	defer recoverPanic(&err)
	if d.f == nil {
		return nil, errNoFilter
	}
	s := d.f.Snapshot()
	d.out = abi.AppendState(d.out[:0], &s)
	return d.out, nil
}

func (d *dispatcher) restore(n int) (res []byte, err error) {
	defer recoverPanic(&err)
	in, err := d.input(n)
	if err != nil {
		return nil, err
	}
	s, err := abi.DecodeState(in)
	if err != nil {
		return nil, prefixed("ig_restore", err)
	}
	// Extra aliases the input buffer; see init.
	s.Extra = clone(s.Extra)
	if err := d.f.Restore(s); err != nil {
		return nil, prefixed("ig_restore", err)
	}
	return d.out[:0], nil
}

// errorMessage writes err's message into the output buffer and returns it.
// The ABI promises UTF-8 and a failure is told apart from an empty success
// only by its non-empty message, so both are enforced here.
func (d *dispatcher) errorMessage(err error) []byte {
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if msg == "" {
		msg = "filter failed with an empty error message"
	}
	d.out = append(d.out[:0], msg...)
	return d.out
}

// pack builds the i64 result of an ABI call: ptr<<32 | n on success, its
// negation on failure. ptr and n stay below 2^31 (the host caps guest memory
// far lower), so the sign bit is free to mark a failure.
func pack(ptr, n uint32, failed bool) int64 {
	r := int64(ptr)<<32 | int64(n)
	if failed {
		return -r
	}
	return r
}

// clone copies b, keeping empty as nil so filters need not tell them apart.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// The errors here are built without fmt, as abi's are (see abi/codec.go's
// wrapError): fmt and the reflect it brings were about a sixth of every Go
// module's bytes, which the host decodes, validates and loads on each
// start (docs/benchmarks.md, cold start).

// wrapError is what fmt.Errorf with one %w returns.
type wrapError struct {
	msg string
	err error
}

func (e *wrapError) Error() string { return e.msg }
func (e *wrapError) Unwrap() error { return e.err }

// wrapf is fmt.Errorf("%w: "+detail, err).
func wrapf(err error, detail string) error {
	return &wrapError{msg: err.Error() + ": " + detail, err: err}
}

// prefixed is fmt.Errorf(prefix+": %w", err).
func prefixed(prefix string, err error) error {
	return &wrapError{msg: prefix + ": " + err.Error(), err: err}
}

// panicText is fmt's %v of a panic value for the kinds filters panic with:
// errors (runtime errors included), Stringers, strings, booleans and
// numbers. Anything else, which only fmt's reflection could print, is
// named by kind alone.
func panicText(r any) string {
	switch v := r.(type) {
	case error:
		return v.Error()
	case interface{ String() string }:
		return v.String()
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case int:
		return strconv.FormatInt(int64(v), 10)
	case int8:
		return strconv.FormatInt(int64(v), 10)
	case int16:
		return strconv.FormatInt(int64(v), 10)
	case int32:
		return strconv.FormatInt(int64(v), 10)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint:
		return strconv.FormatUint(uint64(v), 10)
	case uint8:
		return strconv.FormatUint(uint64(v), 10)
	case uint16:
		return strconv.FormatUint(uint64(v), 10)
	case uint32:
		return strconv.FormatUint(uint64(v), 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case uintptr:
		return strconv.FormatUint(uint64(v), 10)
	case float32:
		return strconv.FormatFloat(float64(v), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return "a panic value of a type the guest SDK does not print (panic with an error or a string)"
}
