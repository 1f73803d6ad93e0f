package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Signature file format, version 1: four lines, each ending in "\n",
// nothing else:
//
//	indexgate-signature-v1
//	key-id: <KeyID of the signing key: 16 lowercase hex digits>
//	sha256: <sha256 of the module: 64 lowercase hex digits>
//	sig: <standard base64, padded, of the 64-byte ed25519 signature>
//
// The signature is over SignedMessagePrefix followed by the 32 raw bytes
// of the module's sha256. The prefix keeps a module signature from being
// mistaken for any other ed25519 signature made with the same key; the
// digest line lets a mismatch be reported as "this signature is for
// another module" rather than a bare verification failure.
const (
	// SignatureHeader is the first line of a version 1 signature file.
	SignatureHeader = "indexgate-signature-v1"
	// SignedMessagePrefix starts the message an ed25519 module signature
	// signs; the module's raw sha256 follows it.
	SignedMessagePrefix = "indexgate-module-v1\x00"
	// SignatureExt is appended to a module's path to name its detached
	// signature: filter.wasm → filter.wasm.sig.
	SignatureExt = ".sig"
)

// maxSignatureSize bounds what the parser looks at: a version 1 signature
// is about 180 bytes, and a signature comes from outside.
const maxSignatureSize = 1024

// SignaturePath names the detached signature of the module at path.
func SignaturePath(modulePath string) string { return modulePath + SignatureExt }

// signature is a parsed signature file.
type signature struct {
	keyID  string
	digest [sha256.Size]byte
	sig    []byte
}

// signedMessage is what a module signature signs.
func signedMessage(digest [sha256.Size]byte) []byte {
	return append([]byte(SignedMessagePrefix), digest[:]...)
}

// Sign returns the detached signature file of module made with priv.
// Write it to SignaturePath(the module's path).
func Sign(module []byte, priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: ed25519 private key is %d bytes, want %d", ErrMalformed, len(priv), ed25519.PrivateKeySize)
	}
	digest := sha256.Sum256(module)
	s := signature{
		keyID:  KeyID(priv.Public().(ed25519.PublicKey)),
		digest: digest,
		sig:    ed25519.Sign(priv, signedMessage(digest)),
	}
	return s.marshal(), nil
}

func (s signature) marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nkey-id: %s\nsha256: %s\nsig: %s\n",
		SignatureHeader, s.keyID, hex.EncodeToString(s.digest[:]), base64.StdEncoding.EncodeToString(s.sig))
	return b.Bytes()
}

// parseSignature accepts exactly what marshal writes: a signature is
// security input, and every liberty taken in parsing it is a way for two
// parties to disagree about what was signed.
func parseSignature(b []byte) (signature, error) {
	var s signature
	bad := func(format string, args ...any) (signature, error) {
		return signature{}, fmt.Errorf("%w: signature: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(b) > maxSignatureSize {
		return bad("%d bytes, but a signature file is under %d", len(b), maxSignatureSize)
	}
	if bytes.IndexByte(b, '\r') >= 0 {
		return bad("has CR characters (CRLF line endings?); lines end in LF only")
	}
	text := string(b)
	if !strings.HasSuffix(text, "\n") {
		return bad("the last line does not end in a newline (truncated?)")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if lines[0] != SignatureHeader {
		if strings.HasPrefix(lines[0], "indexgate-signature-") {
			return bad("line 1: unsupported version %s, this build reads %s", quote(lines[0]), SignatureHeader)
		}
		return bad("line 1: want %q, got %s: not an indexgate signature file", SignatureHeader, quote(lines[0]))
	}
	if len(lines) != 4 {
		return bad("%d lines, want 4 (header, key-id, sha256, sig)", len(lines))
	}
	field := func(n int, name string) (string, bool) {
		return strings.CutPrefix(lines[n-1], name+": ")
	}
	v, ok := field(2, "key-id")
	if !ok || !isLowerHex(v, keyIDLen) {
		return bad("line 2: want \"key-id: <%d lowercase hex digits>\", got %s", keyIDLen, quote(lines[1]))
	}
	s.keyID = v
	v, ok = field(3, "sha256")
	if !ok || !isLowerHex(v, 2*sha256.Size) {
		return bad("line 3: want \"sha256: <%d lowercase hex digits>\", got %s", 2*sha256.Size, quote(lines[2]))
	}
	hex.Decode(s.digest[:], []byte(v))
	v, ok = field(4, "sig")
	if !ok {
		return bad("line 4: want \"sig: <base64 ed25519 signature>\", got %s", quote(lines[3]))
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil {
		return bad("line 4: sig is not standard padded base64: %v", err)
	}
	if len(sig) != ed25519.SignatureSize {
		return bad("line 4: sig is %d bytes, an ed25519 signature is %d", len(sig), ed25519.SignatureSize)
	}
	s.sig = sig
	return s, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// quote quotes a line from a signature for an error message, shortened:
// it may be anything, of any length.
func quote(s string) string {
	const max = 48
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
