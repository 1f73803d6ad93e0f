package trust

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// Config is an operator's trust configuration. The zero value is valid and
// trusts no module: only the built-ins, which the caller trusts without
// asking, can serve.
type Config struct {
	// Pins are sha256 digests (64 hex digits, either case) of modules
	// trusted as they are.
	Pins []string
	// KeyFiles are files holding ed25519 public keys (see LoadPublicKeys):
	// modules with a valid signature by one of them are trusted.
	KeyFiles []string
	// Keys are more ed25519 public keys, inline: standard base64 of the 32
	// raw bytes, or PEM.
	Keys []string
	// AllowUnsigned lets modules nobody vouched for serve anyway (as
	// untrusted: see Decision.Vouched). A signature that is present must
	// still be well-formed and belong to the module.
	AllowUnsigned bool
}

// Validate reports the first pin or inline key that does not parse and
// the first empty key file name. It does not read KeyFiles; NewPolicy
// does.
func (c Config) Validate() error {
	for _, p := range c.Pins {
		if _, err := parsePin(p); err != nil {
			return err
		}
	}
	for _, f := range c.KeyFiles {
		if f == "" {
			return fmt.Errorf("%w: empty key file name", ErrMalformed)
		}
	}
	for i, k := range c.Keys {
		if _, err := ParsePublicKey([]byte(k)); err != nil {
			return fmt.Errorf("key %d: %w", i+1, err)
		}
	}
	return nil
}

func parsePin(p string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	if !isLowerHex(strings.ToLower(p), 2*sha256.Size) {
		return d, fmt.Errorf("%w: pin %s: want a sha256 digest, %d hex digits", ErrMalformed, quote(p), 2*sha256.Size)
	}
	hex.Decode(d[:], []byte(strings.ToLower(p)))
	return d, nil
}

// Policy decides which filter modules may serve. It is immutable and safe
// for concurrent use. The zero Policy refuses every module.
type Policy struct {
	pins          map[[sha256.Size]byte]bool
	keys          map[string]ed25519.PublicKey // by KeyID
	allowUnsigned bool
}

// NewPolicy builds the Policy of c, reading c.KeyFiles. Two different
// keys with the same KeyID are refused: a signature could not say which
// one made it.
func NewPolicy(c Config) (*Policy, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	p := &Policy{pins: map[[sha256.Size]byte]bool{}, keys: map[string]ed25519.PublicKey{}, allowUnsigned: c.AllowUnsigned}
	for _, s := range c.Pins {
		d, _ := parsePin(s)
		p.pins[d] = true
	}
	keys, err := LoadPublicKeys(c.KeyFiles)
	if err != nil {
		return nil, err
	}
	for _, k := range c.Keys {
		pub, _ := ParsePublicKey([]byte(k))
		keys = append(keys, pub)
	}
	for _, k := range keys {
		id := KeyID(k)
		if old, ok := p.keys[id]; ok && !old.Equal(k) {
			return nil, fmt.Errorf("%w: two different trusted keys share key id %s", ErrMalformed, id)
		}
		p.keys[id] = k
	}
	return p, nil
}

// String summarises the policy for a start-up log line.
func (p *Policy) String() string {
	if p == nil {
		p = &Policy{}
	}
	ids := make([]string, 0, len(p.keys))
	for id := range p.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	unsigned := "refused"
	if p.allowUnsigned {
		unsigned = "allowed"
	}
	return fmt.Sprintf("%d pinned modules, trusted keys [%s], unsigned modules %s", len(p.pins), strings.Join(ids, " "), unsigned)
}

// Reason says why a module was accepted.
type Reason int

const (
	// Pinned: the module's sha256 is one of Config.Pins.
	Pinned Reason = iota + 1
	// Signed: the module carries a valid signature by a trusted key.
	Signed
	// AllowedUnsigned: nobody vouched for the module, and
	// Config.AllowUnsigned let it through.
	AllowedUnsigned
)

// String names the reason.
func (r Reason) String() string {
	switch r {
	case 0:
		return "refused"
	case Pinned:
		return "pinned"
	case Signed:
		return "signed"
	case AllowedUnsigned:
		return "allowed-unsigned"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Decision is the outcome of Policy.Verify.
type Decision struct {
	// Reason the module was accepted; zero ("refused") when it was not.
	Reason Reason
	// SHA256 is the module's digest in hex, set even on refusal (to pin,
	// or to log).
	SHA256 string
	// KeyID is the key of the module's signature, if it had one: the key
	// that vouched for it when Reason is Signed.
	KeyID string
}

// Vouched reports whether the operator vouched for the module (pinned it
// or signed it), as opposed to letting it through with AllowUnsigned. A
// router loads vouched modules as host.Trusted and the others as
// host.Untrusted, so an unvetted module always runs under a deadline.
func (d Decision) Vouched() bool { return d.Reason == Pinned || d.Reason == Signed }

// String describes the decision for logs and CLI output.
func (d Decision) String() string {
	switch d.Reason {
	case Pinned:
		return "module sha256 " + d.SHA256 + " is pinned"
	case Signed:
		return "module sha256 " + d.SHA256 + " is signed by trusted key " + d.KeyID
	case AllowedUnsigned:
		if d.KeyID != "" {
			return "module sha256 " + d.SHA256 + " is signed by unknown key " + d.KeyID + ", allowed as unsigned"
		}
		return "module sha256 " + d.SHA256 + " is unsigned, allowed as unsigned"
	}
	return "module sha256 " + d.SHA256 + " is refused"
}

// Verify decides whether module may serve. sig is its detached signature
// file, nil (or empty) if it has none. The rules, in order:
//
//  1. A signature, when present, must parse and cover this module's
//     sha256: otherwise the module or the signature was altered, or they
//     do not belong together, and the module is refused even if pinned.
//  2. A pinned module is accepted (Pinned).
//  3. A signature by a trusted key must verify: accepted (Signed), or
//     refused as forged.
//  4. Anything else (no signature, or one by a key the policy does not
//     know) is accepted only with AllowUnsigned (AllowedUnsigned).
//
// A refusal is an error wrapping ErrUntrusted (and ErrMalformed for a
// signature that does not parse) that says how to make the module
// acceptable; the Decision still carries the digest. Callers verify every
// module that is not a built-in, before host.Load or host.Swap.
func (p *Policy) Verify(module, sig []byte) (Decision, error) {
	if p == nil {
		p = &Policy{}
	}
	digest := sha256.Sum256(module)
	d := Decision{SHA256: hex.EncodeToString(digest[:])}
	var s *signature
	if len(sig) > 0 {
		parsed, err := parseSignature(sig)
		if err != nil {
			return d, fmt.Errorf("%w: module sha256 %s: %w", ErrUntrusted, d.SHA256, err)
		}
		s = &parsed
		d.KeyID = s.keyID
		if s.digest != digest {
			return d, fmt.Errorf("%w: module sha256 %s does not match the sha256 %x its signature covers: the module or its signature was altered, or they do not belong together",
				ErrUntrusted, d.SHA256, s.digest)
		}
	}
	if p.pins[digest] {
		d.Reason = Pinned
		return d, nil
	}
	if s != nil {
		if key, ok := p.keys[s.keyID]; ok {
			if !ed25519.Verify(key, signedMessage(digest), s.sig) {
				return d, fmt.Errorf("%w: module sha256 %s: its signature does not verify with trusted key %s: it was not made by that key for this module",
					ErrUntrusted, d.SHA256, s.keyID)
			}
			d.Reason = Signed
			return d, nil
		}
	}
	if p.allowUnsigned {
		d.Reason = AllowedUnsigned
		return d, nil
	}
	if s != nil {
		return d, fmt.Errorf("%w: module sha256 %s is signed by key %s, which is not a trusted key; add its public key to the trusted keys, pin the module, or run with --allow-unsigned",
			ErrUntrusted, d.SHA256, s.keyID)
	}
	return d, fmt.Errorf("%w: module sha256 %s is not pinned and carries no signature; pin it, sign it, or run with --allow-unsigned",
		ErrUntrusted, d.SHA256)
}

// LoadModule reads the module at path and, if present, its detached
// signature at SignaturePath(path); sig is nil when there is none.
func LoadModule(path string) (module, sig []byte, err error) {
	module, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: read module: %w", err)
	}
	sig, err = readLimited(SignaturePath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return module, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return module, sig, nil
}

// readLimited reads a signature file, refusing a huge one before reading
// it all: the parser would refuse it anyway.
func readLimited(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("trust: read signature: %w", err)
	}
	if fi.Size() > maxSignatureSize {
		return nil, fmt.Errorf("%w: signature %s is %d bytes, but a signature file is under %d", ErrMalformed, path, fi.Size(), maxSignatureSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: read signature: %w", err)
	}
	return b, nil
}
