package router

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/trust"
)

// signingKey makes a key pair in a new directory.
func signingKey(t testing.TB) (trust.KeyFiles, ed25519.PrivateKey) {
	t.Helper()
	kf, err := trust.GenerateKey(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := trust.LoadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	return kf, priv
}

func sign(t testing.TB, module []byte, priv ed25519.PrivateKey) []byte {
	t.Helper()
	sig, err := trust.Sign(module, priv)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// putModule uploads a module with an optional signature header.
func putModule(t testing.TB, url string, module []byte, sigHeader string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPut, url, bytes.NewReader(module))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/wasm")
	if sigHeader != "" {
		req.Header.Set(SignatureHeader, sigHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v: %s", url, err, b)
	}
	return resp.StatusCode, m
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestTrustPolicy(t *testing.T) {
	kf, priv := signingKey(t)
	_, otherPriv := signingKey(t)
	// The same module variants as the hot swap tests, so the compilation
	// cache has them.
	custom := withCustomSection(builtin.Legacy(), "swap")
	pinned := withCustomSection(builtin.HA(), "flag")
	fc := newFakeController(t)
	dir := t.TempDir()
	cfg := testConfig(dir, fc.listen())
	cfg.Trust = trust.Config{KeyFiles: []string{kf.Public}, Pins: []string{hexSHA256(pinned)}}
	tr := startRouter(t, cfg, nil)
	waitFirstFullState(t, tr)
	base := "http://" + tr.AdminAddr() + "/v1/filters/"
	legacySum, _ := builtin.SHA256Hex(abi.IndexLegacy)

	refused := []struct {
		name, typ string
		module    []byte
		sig       string
		code      int
		want      string
	}{
		{"unsigned", "legacy", custom, "", http.StatusForbidden, "untrusted module"},
		{"signed by an unknown key", "legacy", custom, b64(sign(t, custom, otherPriv)), http.StatusForbidden, "untrusted module"},
		{"signature of another module", "legacy", custom, b64(sign(t, pinned, priv)), http.StatusForbidden, "untrusted module"},
		{"pinned but with a signature of another module", "ha", pinned, b64(sign(t, custom, priv)), http.StatusForbidden, "untrusted module"},
		{"signature header not base64", "legacy", custom, "not base64!", http.StatusBadRequest, SignatureHeader},
		{"signature not a signature", "legacy", custom, b64([]byte("hello")), http.StatusForbidden, "malformed"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			code, resp := putModule(t, base+tc.typ, tc.module, tc.sig)
			if msg, _ := resp["error"].(string); code != tc.code || !strings.Contains(msg, tc.want) {
				t.Errorf("%d %v, want %d with %q", code, resp, tc.code, tc.want)
			}
			if f := tr.status(t).Filters["legacy"]; f.SHA256 != legacySum || f.Trust != "builtin" {
				t.Errorf("after a refused swap the legacy filter is %+v", f)
			}
		})
	}

	// Signed by the trusted key: swapped in, trusted, and the signature is
	// persisted with the module.
	code, resp := putModule(t, base+"legacy", custom, b64(sign(t, custom, priv)))
	if code != http.StatusOK || resp["trusted"] != true || resp["trust"] != "signed" {
		t.Fatalf("signed swap: %d %v", code, resp)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "filters", "legacy.wasm.sig")); err != nil || !bytes.HasPrefix(b, []byte(trust.SignatureHeader)) {
		t.Errorf("signature not persisted: %v", err)
	}
	code, resp = putModule(t, base+"ha", pinned, "")
	if code != http.StatusOK || resp["trusted"] != true || resp["trust"] != "pinned" {
		t.Fatalf("pinned swap: %d %v", code, resp)
	}
	s := tr.status(t)
	if f := s.Filters["legacy"]; f.SHA256 != hexSHA256(custom) || !f.Trusted || f.Trust != "signed" {
		t.Errorf("legacy filter %+v", f)
	}
	if f := s.Filters["ha"]; f.SHA256 != hexSHA256(pinned) || !f.Trusted || f.Trust != "pinned" {
		t.Errorf("ha filter %+v", f)
	}
	fc.appendN(2)
	waitConverged(t, tr, fc)
	tr.stop(t)

	// The persisted modules are verified again at start: without the key,
	// the signed one may no longer serve.
	cfg.Trust.KeyFiles = nil
	_, err := New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "hot-swapped earlier") || !errors.Is(err, trust.ErrUntrusted) {
		t.Errorf("New without the signing key: %v", err)
	}

	// A configured module passes the same policy.
	cfg.Filters = map[abi.IndexType]host.Module{abi.IndexLegacy: {Name: "custom.wasm", Bytes: custom}}
	if _, err := New(context.Background(), cfg); !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, trust.ErrUntrusted) {
		t.Errorf("New with an unsigned configured module: %v", err)
	}
}
