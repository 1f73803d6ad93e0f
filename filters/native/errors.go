package native

// The errors here are built without fmt, as abi's are (see abi/errors.go):
// this package runs inside the built-in wasm modules.

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
