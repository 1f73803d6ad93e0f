package model_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/model"
)

func TestChangeValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  model.Change
		wantErr string // substring; empty means valid
	}{
		{"put", model.Change{Op: model.OpPut, Kind: "svc", ID: "a", Value: "v"}, ""},
		{"put empty value", model.Change{Op: model.OpPut, Kind: "svc", ID: "a"}, ""},
		{"delete", model.Change{Op: model.OpDelete, Kind: "svc", ID: "a"}, ""},
		{"max sizes", model.Change{Op: model.OpPut, Kind: strings.Repeat("k", model.MaxKindLen), ID: strings.Repeat("i", model.MaxIDLen), Value: strings.Repeat("v", model.MaxValueLen)}, ""},
		{"unicode", model.Change{Op: model.OpPut, Kind: "ключ", ID: "日本", Value: "✓"}, ""},
		{"empty op", model.Change{Kind: "svc", ID: "a"}, "op: empty"},
		{"unknown op", model.Change{Op: "upsert", Kind: "svc", ID: "a"}, `op: unknown "upsert"`},
		{"op case matters", model.Change{Op: "PUT", Kind: "svc", ID: "a"}, "op: unknown"},
		{"empty kind", model.Change{Op: model.OpPut, ID: "a"}, "kind: empty"},
		{"empty id", model.Change{Op: model.OpPut, Kind: "svc"}, "id: empty"},
		{"nul in kind", model.Change{Op: model.OpPut, Kind: "s\x00vc", ID: "a"}, "kind: \"s\\x00vc\" contains a NUL byte"},
		{"nul in id", model.Change{Op: model.OpDelete, Kind: "svc", ID: "a\x00"}, "id: \"a\\x00\" contains a NUL byte"},
		{"value on delete", model.Change{Op: model.OpDelete, Kind: "svc", ID: "a", Value: "x"}, "value: must be empty"},
		{"kind too long", model.Change{Op: model.OpPut, Kind: strings.Repeat("k", model.MaxKindLen+1), ID: "a"}, "kind: 257 bytes, at most 256"},
		{"id too long", model.Change{Op: model.OpPut, Kind: "svc", ID: strings.Repeat("i", model.MaxIDLen+1)}, "id: 1025 bytes, at most 1024"},
		{"value too long", model.Change{Op: model.OpPut, Kind: "svc", ID: "a", Value: strings.Repeat("v", model.MaxValueLen+1)}, "value: 1048577 bytes"},
		{"bad utf8 kind", model.Change{Op: model.OpPut, Kind: "\xff", ID: "a"}, "kind: \"\\xff\" is not valid UTF-8"},
		{"bad utf8 id", model.Change{Op: model.OpPut, Kind: "svc", ID: "\xc3"}, "id:"},
		{"bad utf8 value", model.Change{Op: model.OpPut, Kind: "svc", ID: "a", Value: "\xff"}, "value: not valid UTF-8"},
		{"huge bad op is truncated", model.Change{Op: model.Op(strings.Repeat("x", 10000)), Kind: "svc", ID: "a"}, "xxx..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.change.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, model.ErrInvalidChange) {
				t.Fatalf("Validate() = %v, want ErrInvalidChange", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message of %d bytes: huge fields must be truncated", len(err.Error()))
			}
		})
	}
}

func TestValidateChangesNamesPosition(t *testing.T) {
	tests := []struct {
		name    string
		changes []model.Change
		wantErr string
	}{
		{"nil", nil, ""},
		{"all valid", []model.Change{{Op: model.OpPut, Kind: "k", ID: "1"}, {Op: model.OpDelete, Kind: "k", ID: "1"}}, ""},
		{"first", []model.Change{{Op: "x", Kind: "k", ID: "1"}}, "change 0: "},
		{"fourth", []model.Change{
			{Op: model.OpPut, Kind: "k", ID: "1"}, {Op: model.OpPut, Kind: "k", ID: "2"},
			{Op: model.OpPut, Kind: "k", ID: "3"}, {Op: model.OpPut, Kind: "", ID: "4"},
		}, "change 3: model: invalid change: kind: empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := model.ValidateChanges(tt.changes)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateChanges() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, model.ErrInvalidChange) || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateChanges() = %v, want ErrInvalidChange starting with %q", err, tt.wantErr)
			}
		})
	}
}

func TestEntityValidate(t *testing.T) {
	tests := []struct {
		name   string
		entity model.Entity
		valid  bool
	}{
		{"ok", model.Entity{Kind: "k", ID: "i", Value: "v"}, true},
		{"empty value", model.Entity{Kind: "k", ID: "i"}, true},
		{"empty kind", model.Entity{ID: "i"}, false},
		{"nul id", model.Entity{Kind: "k", ID: "\x00"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.entity.Validate()
			if (err == nil) != tt.valid || (err != nil && !errors.Is(err, model.ErrInvalidChange)) {
				t.Fatalf("Validate() = %v, want valid=%v", err, tt.valid)
			}
		})
	}
}
