package pki

import "errors"

// Sentinel errors. Errors from this package wrap one of these when the
// caller can act on the condition (test with errors.Is); the wrapping
// error carries the detail: the path, the peer, the name.
var (
	// ErrExists reports a CA (Init) or a leaf certificate (Issue) that is
	// already on disk. Set Force to replace it.
	ErrExists = errors.New("pki: already exists")
	// ErrInvalid reports an invalid argument or option: an unknown Kind, a
	// name outside the allowed alphabet, a validity that outlives the CA.
	ErrInvalid = errors.New("pki: invalid argument")
	// ErrPeerRejected reports a TLS peer whose certificate this side
	// refused: none presented, not issued by the CA, expired, or of the
	// wrong kind or name for the PeerPolicy.
	ErrPeerRejected = errors.New("pki: peer certificate rejected")
	// ErrNotTLS reports a peer that did not speak TLS at all, typically a
	// router or controller still configured for plaintext.
	ErrNotTLS = errors.New("pki: peer did not speak TLS")
)
