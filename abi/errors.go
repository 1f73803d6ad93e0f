package abi

import "strconv"

// The package builds its errors without fmt. Every Go filter module links
// abi, and fmt (with the reflect and os it brings) was about a third of a
// built-in module's bytes, which the host decodes, validates and loads on
// every start (docs/benchmarks.md, cold start). abi/guest and
// filters/native do the same.

// wrapError is what fmt.Errorf with one %w returns: the message, and the
// wrapped error for errors.Is and errors.As.
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

func itoa(n int) string    { return strconv.Itoa(n) }
func utoa(n uint64) string { return strconv.FormatUint(n, 10) }

const hexDigits = "0123456789abcdef"

// hexByte is fmt's 0x%02x.
func hexByte(c byte) string { return string([]byte{'0', 'x', hexDigits[c>>4], hexDigits[c&0xf]}) }
