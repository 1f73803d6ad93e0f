//go:build !wasip1

package builtin

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"

	"github.com/indexgate/indexgate/abi"
)

// modules is read-only: ReadFile returns a copy, so callers cannot change
// the embedded bytes.
//
//go:embed legacy.wasm ha.wasm
var modules embed.FS

// Legacy returns a copy of the built-in legacy filter module.
func Legacy() []byte { return mustRead("legacy.wasm") }

// HA returns a copy of the built-in HA filter module.
func HA() []byte { return mustRead("ha.wasm") }

// For returns a copy of the built-in module for index type t.
func For(t abi.IndexType) ([]byte, error) {
	switch t {
	case abi.IndexLegacy:
		return Legacy(), nil
	case abi.IndexHA:
		return HA(), nil
	}
	return nil, fmt.Errorf("builtin: %w: %d", abi.ErrUnknownIndexType, uint8(t))
}

// SHA256 returns the SHA-256 digest of the built-in module for t.
func SHA256(t abi.IndexType) ([sha256.Size]byte, error) {
	b, err := For(t)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// SHA256Hex returns SHA256 as 64 lowercase hex digits, for logs and APIs.
func SHA256Hex(t abi.IndexType) (string, error) {
	sum, err := SHA256(t)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum[:]), nil
}

// mustRead cannot fail for the names above: go:embed refuses to compile the
// package when a file is missing.
func mustRead(name string) []byte {
	b, err := modules.ReadFile(name)
	if err != nil {
		panic("builtin: embedded " + name + " missing: " + err.Error())
	}
	return b
}
