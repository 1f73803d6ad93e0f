package model

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Size limits of a change. The key limit keeps kind+0x00+id well under
// bbolt's 32 KiB key limit; the value limit keeps a single change far below
// the wire's default frame size so that batches and full-state chunks of
// many entities still fit in one frame.
const (
	// MaxKindLen is the longest kind in bytes.
	MaxKindLen = 256
	// MaxIDLen is the longest id in bytes.
	MaxIDLen = 1024
	// MaxValueLen is the longest value in bytes.
	MaxValueLen = 1 << 20
)

// ErrInvalidChange reports a change or entity that must not be stored. The
// message names the field at fault.
var ErrInvalidChange = errors.New("model: invalid change")

// Op is what a change does to its entity.
type Op string

const (
	// OpPut creates the entity or replaces its value.
	OpPut Op = "put"
	// OpDelete removes the entity; deleting a missing entity is a no-op.
	OpDelete Op = "delete"
)

// Change is one entity operation of a change set.
type Change struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Op is put or delete.
	Op Op `msgpack:"op" json:"op"`
	// Kind is the entity's type, e.g. "service".
	Kind string `msgpack:"kind" json:"kind"`
	// ID names the entity within its kind.
	ID string `msgpack:"id" json:"id"`
	// Value is the new value of a put; empty for a delete. msgpack always
	// carries it (as_array has no omitempty), JSON omits it when empty.
	Value string `msgpack:"value" json:"value,omitempty"`
}

// Validate reports, wrapping ErrInvalidChange, why c cannot be applied.
func (c *Change) Validate() error {
	switch c.Op {
	case OpPut:
	case OpDelete:
		if c.Value != "" {
			return fmt.Errorf("%w: value: must be empty for op %q (%d bytes given)", ErrInvalidChange, OpDelete, len(c.Value))
		}
	case "":
		return fmt.Errorf("%w: op: empty (want %q or %q)", ErrInvalidChange, OpPut, OpDelete)
	default:
		return fmt.Errorf("%w: op: unknown %q (want %q or %q)", ErrInvalidChange, truncate(string(c.Op)), OpPut, OpDelete)
	}
	return validateEntity(c.Kind, c.ID, c.Value)
}

// ValidateChanges validates every change and names the position of the
// first invalid one ("change 3: ...").
func ValidateChanges(changes []Change) error {
	for i := range changes {
		if err := changes[i].Validate(); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
	}
	return nil
}

// Entity is one stored (kind, id) → value.
type Entity struct {
	_msgpack struct{} `msgpack:",as_array"`
	// Kind is the entity's type.
	Kind string `msgpack:"kind" json:"kind"`
	// ID names the entity within its kind.
	ID string `msgpack:"id" json:"id"`
	// Value is the stored value.
	Value string `msgpack:"value" json:"value"`
}

// Validate applies the same field rules as Change.Validate for a put.
func (e *Entity) Validate() error { return validateEntity(e.Kind, e.ID, e.Value) }

func validateEntity(kind, id, value string) error {
	if err := validateName("kind", kind, MaxKindLen); err != nil {
		return err
	}
	if err := validateName("id", id, MaxIDLen); err != nil {
		return err
	}
	if len(value) > MaxValueLen {
		return fmt.Errorf("%w: value: %d bytes, at most %d", ErrInvalidChange, len(value), MaxValueLen)
	}
	// Invalid UTF-8 would be rewritten to U+FFFD by any JSON view of the
	// model (admin API, POST bodies), so the bytes an operator sees would not
	// be the bytes the digest covers.
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: value: not valid UTF-8", ErrInvalidChange)
	}
	return nil
}

func validateName(field, s string, limit int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s: empty", ErrInvalidChange, field)
	case len(s) > limit:
		return fmt.Errorf("%w: %s: %d bytes, at most %d", ErrInvalidChange, field, len(s), limit)
	case strings.IndexByte(s, 0) >= 0:
		// The key is kind 0x00 id: a NUL inside would make two different
		// (kind, id) pairs share a key and break the key order the digest
		// relies on.
		return fmt.Errorf("%w: %s: %q contains a NUL byte", ErrInvalidChange, field, truncate(s))
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s: %q is not valid UTF-8", ErrInvalidChange, field, truncate(s))
	}
	return nil
}

// truncate keeps error messages short when the offending field is huge.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
