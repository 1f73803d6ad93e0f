package trust

import "errors"

// Sentinel errors (test with errors.Is); the wrapping error carries the
// detail: the module's digest, the key id, the line at fault, the path.
var (
	// ErrUntrusted reports a module the Policy refuses. Every refusal
	// wraps it, and says what would make the module acceptable.
	ErrUntrusted = errors.New("trust: untrusted module")
	// ErrMalformed reports a signature, key file or configuration value
	// that does not parse. A module refused because its signature is
	// malformed gets an error wrapping both ErrMalformed and ErrUntrusted.
	ErrMalformed = errors.New("trust: malformed")
	// ErrExists reports a key file GenerateKey would overwrite.
	ErrExists = errors.New("trust: already exists")
)
