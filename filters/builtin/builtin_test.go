//go:build !wasip1

package builtin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
)

func TestFor(t *testing.T) {
	tests := []struct {
		typ     abi.IndexType
		file    string
		wantErr error
	}{
		{abi.IndexLegacy, "legacy.wasm", nil},
		{abi.IndexHA, "ha.wasm", nil},
		{abi.IndexNone, "", abi.ErrUnknownIndexType},
		{abi.IndexType(9), "", abi.ErrUnknownIndexType},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			got, err := builtin.For(tt.typ)
			hexSum, hexErr := builtin.SHA256Hex(tt.typ)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(hexErr, tt.wantErr) {
					t.Fatalf("For/SHA256Hex(%d) errors = %v, %v; want %v", tt.typ, err, hexErr, tt.wantErr)
				}
				return
			}
			if err != nil || hexErr != nil {
				t.Fatalf("For/SHA256Hex(%s): %v, %v", tt.typ, err, hexErr)
			}
			want, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("For(%s) differs from %s", tt.typ, tt.file)
			}
			sum := sha256.Sum256(want)
			if hexSum != hex.EncodeToString(sum[:]) {
				t.Fatalf("SHA256Hex(%s) = %s, want %x", tt.typ, hexSum, sum)
			}
			// The bytes handed out are a copy: changing them must not change
			// what the next caller gets.
			got[0] ^= 0xff
			if again, _ := builtin.For(tt.typ); !bytes.Equal(again, want) {
				t.Fatal("For returned the embedded bytes themselves")
			}
		})
	}
}

// TestModuleSmoke proves the exports work end to end in a real runtime. The
// full host, with its conformance checks, lives in host/.
func TestModuleSmoke(t *testing.T) {
	tl := abi.Timeline{1, 2, 3}
	for _, typ := range abi.IndexTypes {
		t.Run(typ.String(), func(t *testing.T) {
			// Compiling a Go module dominates; two cores, two modules.
			t.Parallel()
			ctx := t.Context()
			wasm, err := builtin.For(typ)
			if err != nil {
				t.Fatal(err)
			}
			r := wazero.NewRuntime(ctx)
			defer r.Close(ctx)
			compiled, err := r.CompileModule(ctx, wasm)
			if err != nil {
				t.Fatal(err)
			}
			for _, fn := range compiled.ImportedFunctions() {
				if mod, name, _ := fn.Import(); mod != wasi_snapshot_preview1.ModuleName {
					t.Errorf("module imports %s.%s; only %s is allowed", mod, name, wasi_snapshot_preview1.ModuleName)
				}
			}
			wasi_snapshot_preview1.MustInstantiate(ctx, r)
			mod, err := r.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithStartFunctions(abi.ExportInitialize))
			if err != nil {
				t.Fatal(err)
			}
			g := guestModule{t: t, ctx: ctx, mod: mod}
			t.Logf("%d KiB of linear memory after _initialize", mod.Memory().Size()/1024)

			if v := api.DecodeI32(g.call(abi.ExportABIVersion)); v != int32(abi.Version) {
				t.Fatalf("ig_abi_version = %d, want %d", v, abi.Version)
			}
			if p := api.DecodeI32(g.call(abi.ExportBuffer, api.EncodeI32(-1))); p != 0 {
				t.Fatalf("ig_buffer(-1) = %d, want 0", p)
			}

			other := abi.IndexLegacy
			if typ == abi.IndexLegacy {
				other = abi.IndexHA
			}
			if _, msg := g.send(abi.ExportInit, abi.AppendConfig(nil, &abi.Config{Type: other})); msg == "" {
				t.Fatal("ig_init with the other index type succeeded")
			}
			out, msg := g.send(abi.ExportInit, abi.AppendConfig(nil, &abi.Config{Type: typ}))
			if msg != "" {
				t.Fatalf("ig_init: %s", msg)
			}
			if info, err := abi.DecodeInfo(out); err != nil || info.Type != typ {
				t.Fatalf("ig_init result %+v, %v", info, err)
			}
			mc := abi.ModeChange{From: other, To: typ, LastIndex: 10, BaseIndex: 10, Timeline: tl}
			if out, msg := g.send(abi.ExportModeChange, abi.AppendModeChange(nil, &mc)); msg != "" || len(out) != 0 {
				t.Fatalf("ig_mode_change = %x, %q", out, msg)
			}

			batch := []abi.Header{
				{Index: 11, PrevIndex: 10, Type: typ, Term: 2, Timeline: tl},
				{Index: 11, PrevIndex: 10, Type: typ, Term: 2, Timeline: tl},
				{Index: 14, PrevIndex: 13, Type: typ, Term: 2, Timeline: tl},
				{Index: 12, PrevIndex: 11, Type: other, Term: 2, Timeline: tl},
				{Index: 12, PrevIndex: 11, Type: typ, Term: 3, Timeline: tl},
			}
			want := []abi.Verdict{
				{Action: abi.Apply, Reason: abi.ReasonOK},
				{Action: abi.Skip, Reason: abi.ReasonDuplicate},
				{Action: abi.Resync, Reason: abi.ReasonGap},
				{Action: abi.Skip, Reason: abi.ReasonWrongType},
				{Action: abi.Apply, Reason: abi.ReasonOK},
			}
			out, msg = g.send(abi.ExportDecide, abi.AppendHeaderBatch(nil, batch))
			if msg != "" {
				t.Fatalf("ig_decide: %s", msg)
			}
			got, err := abi.DecodeVerdicts(out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("ig_decide returned %d verdicts, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("verdict %d = %s, want %s", i, got[i], want[i])
				}
			}

			out, msg = g.send(abi.ExportSnapshot, nil)
			if msg != "" {
				t.Fatalf("ig_snapshot: %s", msg)
			}
			s, err := abi.DecodeState(out)
			if err != nil {
				t.Fatal(err)
			}
			if s.Type != typ || !s.Initialized || s.LastIndex != 12 || s.Term != 3 || s.Timeline != tl {
				t.Fatalf("snapshot %+v, want %s at 12 term 3", s, typ)
			}
			s.LastIndex = 20
			if _, msg := g.send(abi.ExportRestore, abi.AppendState(nil, &s)); msg != "" {
				t.Fatalf("ig_restore: %s", msg)
			}
			out, _ = g.send(abi.ExportSnapshot, nil)
			if s, err := abi.DecodeState(out); err != nil || s.LastIndex != 20 {
				t.Fatalf("snapshot after restore %+v, %v", s, err)
			}
		})
	}
}

// guestModule calls a module's exports the way docs/abi.md describes.
type guestModule struct {
	t   *testing.T
	ctx context.Context
	mod api.Module
}

func (g guestModule) call(name string, params ...uint64) uint64 {
	g.t.Helper()
	fn := g.mod.ExportedFunction(name)
	if fn == nil {
		g.t.Fatalf("module does not export %s", name)
	}
	res, err := fn.Call(g.ctx, params...)
	if err != nil {
		g.t.Fatalf("%s: %v", name, err)
	}
	return res[0]
}

// send writes in to the guest's input buffer (unless name takes no input),
// calls name and returns the result bytes or the error message.
func (g guestModule) send(name string, in []byte) (out []byte, errMsg string) {
	g.t.Helper()
	var r int64
	if name == abi.ExportSnapshot {
		r = int64(g.call(name))
	} else {
		ptr := uint32(api.DecodeI32(g.call(abi.ExportBuffer, api.EncodeI32(int32(len(in))))))
		if ptr == 0 || !g.mod.Memory().Write(ptr, in) {
			g.t.Fatalf("ig_buffer(%d) gave unusable pointer %d", len(in), ptr)
		}
		r = int64(g.call(name, api.EncodeI32(int32(len(in)))))
	}
	failed := r < 0
	if failed {
		r = -r
	}
	b, ok := g.mod.Memory().Read(uint32(r>>32), uint32(r))
	if !ok {
		g.t.Fatalf("%s result %#x is outside memory", name, r)
	}
	b = bytes.Clone(b)
	if failed {
		if len(b) == 0 {
			g.t.Fatalf("%s failed with an empty message", name)
		}
		return nil, string(b)
	}
	return b, ""
}
