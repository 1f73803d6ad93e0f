package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files GenerateKey writes.
const (
	// PrivateKeyFile is the signing key, PEM PKCS#8, mode 0600. It belongs
	// with whoever releases filter modules, never on a router.
	PrivateKeyFile = "filter-signing.key"
	// PublicKeyFile is the verification key, PEM PKIX, mode 0644. Routers
	// list it among their trusted keys.
	PublicKeyFile = "filter-signing.pub"
)

// keyIDLen is the length in hex digits of a KeyID.
const keyIDLen = 16

// KeyID names a public key: the first 8 bytes of its sha256, in hex. It
// tells which key made a signature, and which configured key to check it
// with; it is not what makes the signature trustworthy (the ed25519
// verification is).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:keyIDLen/2])
}

// KeyFiles describes a key pair GenerateKey wrote.
type KeyFiles struct {
	// Private and Public are the paths of the two files.
	Private, Public string
	// KeyID is the public key's KeyID.
	KeyID string
}

// GenerateKey makes a new ed25519 signing key and writes PrivateKeyFile
// (0600) and PublicKeyFile (0644) in dir, creating dir (0700) if needed.
// It refuses to replace either file: an error wrapping ErrExists.
func GenerateKey(dir string) (KeyFiles, error) {
	kf := KeyFiles{Private: filepath.Join(dir, PrivateKeyFile), Public: filepath.Join(dir, PublicKeyFile)}
	for _, p := range []string{kf.Private, kf.Public} {
		if _, err := os.Lstat(p); err == nil {
			return KeyFiles{}, fmt.Errorf("%w: %s; move it away first (routers trusting it keep needing its public half)", ErrExists, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return KeyFiles{}, fmt.Errorf("trust: %w", err)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyFiles{}, fmt.Errorf("trust: generate key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return KeyFiles{}, fmt.Errorf("trust: encode key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return KeyFiles{}, fmt.Errorf("trust: encode key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyFiles{}, fmt.Errorf("trust: %w", err)
	}
	if err := writeNew(kf.Private, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return KeyFiles{}, err
	}
	if err := writeNew(kf.Public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return KeyFiles{}, err
	}
	kf.KeyID = KeyID(pub)
	return kf, nil
}

// writeNew creates path, failing if it exists: O_EXCL closes the window
// between GenerateKey's check and the write.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	// The umask may have narrowed perm; the public key must stay readable.
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("trust: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("trust: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("trust: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("trust: write %s: %w", path, err)
	}
	return nil
}

// LoadPrivateKey reads an ed25519 signing key written by GenerateKey (PEM
// PKCS#8, as openssl genpkey -algorithm ed25519 also writes).
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: read signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s: no PEM PRIVATE KEY block", ErrMalformed, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s: a %T, want an ed25519 key", ErrMalformed, path, k)
	}
	return priv, nil
}

// LoadPublicKeys reads ed25519 public keys, one per file, each either PEM
// (PKIX "PUBLIC KEY", as GenerateKey and openssl write) or the standard
// base64 of the 32 raw key bytes on one line.
func LoadPublicKeys(paths []string) ([]ed25519.PublicKey, error) {
	out := make([]ed25519.PublicKey, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("trust: read public key: %w", err)
		}
		k, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// ParsePublicKey parses an ed25519 public key: PEM PKIX, or standard
// base64 of the 32 raw bytes (surrounding white space ignored).
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("-----BEGIN")) {
		blk, rest := pem.Decode(b)
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: public key: no PEM PUBLIC KEY block", ErrMalformed)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%w: public key: more than one PEM block; use one file per key", ErrMalformed)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: public key: %w", ErrMalformed, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: public key: a %T, want an ed25519 key", ErrMalformed, k)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(string(b))
	if err != nil {
		return nil, fmt.Errorf("%w: public key: neither PEM nor base64: %v", ErrMalformed, err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key: %d bytes, an ed25519 key is %d", ErrMalformed, len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}
