package wire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/wire"
)

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name                   string
		lmin, lmax, rmin, rmax uint16
		want                   uint16
		wantErr                string // substring of the error; empty: success
	}{
		{"same single", 1, 1, 1, 1, 1, ""},
		{"highest common", 1, 3, 2, 5, 3, ""},
		{"remote newer overlaps", 1, 2, 2, 9, 2, ""},
		{"remote contains local", 2, 3, 1, 9, 3, ""},
		{"this package", wire.MinProtocol, wire.MaxProtocol, 1, 1, 1, ""},
		{"remote too new", 1, 1, 2, 3, 0, "local [1, 1], remote [2, 3]"},
		{"remote too old", 4, 6, 1, 3, 0, "local [4, 6], remote [1, 3]"},
		{"empty local range", 2, 1, 1, 3, 0, "invalid range"},
		{"empty remote range", 1, 3, 3, 2, 0, "invalid range"},
		{"zero version", 0, 1, 0, 1, 0, "invalid range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wire.Negotiate(tt.lmin, tt.lmax, tt.rmin, tt.rmax)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Negotiate = %d, %v; want %d", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, wire.ErrVersionMismatch) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Negotiate = %d, %v; want ErrVersionMismatch containing %q", got, err, tt.wantErr)
			}
		})
	}
}
