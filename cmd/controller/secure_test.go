package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// adminPost posts a write with an optional bearer token.
func adminPost(t *testing.T, admin, token string) (int, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+admin+"/v1/changes", strings.NewReader(`{"changes":[{"op":"put","kind":"k","id":"i","value":"v"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestSecureControllerCLI walks the operator's path: pki init and issue,
// run with --pki-dir and a token file, a router over mutual TLS whose
// model was tampered with, then "routers" lists it and "validate" fails.
func TestSecureControllerCLI(t *testing.T) {
	pdir := filepath.Join(t.TempDir(), "pki")
	ctx := context.Background()
	for _, tt := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"pki", "init", "--dir", pdir, "--hosts", "127.0.0.1,localhost"}, exitOK, "controller certificate"},
		{[]string{"pki", "init", "--dir", pdir}, exitUsage, "--force"},
		{[]string{"pki", "issue", "--dir", pdir, "--router", "r1"}, exitOK, "router-r1.crt"},
		{[]string{"pki", "issue", "--dir", pdir, "--router", "r1"}, exitUsage, "already exists"},
		{[]string{"pki", "issue", "--dir", pdir}, exitUsage, "exactly one of --router"},
		{[]string{"pki", "issue", "--dir", pdir, "--router", "bad name!"}, exitUsage, "invalid"},
		{[]string{"pki", "issue", "--dir", pdir, "--controller", "n2", "--hosts", "10.0.0.2"}, exitOK, "controller-n2.crt"},
		{[]string{"pki", "issue", "router", "edge-1", "--dir", pdir}, exitOK, "router-edge-1.crt"},
		{[]string{"pki", "issue", "controller", "n3", "--dir", pdir, "--host", "10.0.0.3", "--host", "n3.example"}, exitOK, "controller-n3.crt"},
		{[]string{"pki", "issue", "switch", "s1", "--dir", pdir}, exitUsage, "switch"},
		{[]string{"pki", "issue", "router", "--dir", pdir}, exitUsage, "KIND NAME"},
		{[]string{"pki", "issue", "--router", "r9", "--dir", pdir, "--host", "h"}, exitUsage, "--hosts goes with --controller"},
		{[]string{"run", "--data-dir", t.TempDir(), "--pki-dir", pdir, "--tls-cert", "x"}, exitUsage, "not both"},
		{[]string{"run", "--data-dir", t.TempDir(), "--pki-dir", pdir, "--tls-name", "nobody"}, exitUsage, "controller-nobody"},
	} {
		code, out, stderr := runCLI(ctx, tt.args...)
		if code != tt.code || !strings.Contains(out+stderr, tt.out) {
			t.Fatalf("%v: exit %d (want %d)\n%s%s", tt.args, code, tt.code, out, stderr)
		}
		if strings.Count(stderr, "\n") > 1 {
			t.Fatalf("%v: more than one line on stderr: %s", tt.args, stderr)
		}
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("t0ken-t0ken-t0ken-t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, admin := freeAddr(t), freeAddr(t)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(rctx, []string{"run", "--data-dir", t.TempDir(), "--pki-dir", pdir, "--admin-token-file", tokenFile,
			"--listen", listen, "--admin", admin}, &bytes.Buffer{}, &errb)
	}()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("run exited %d: %s", code, errb.String())
		}
		if strings.Contains(errb.String(), "INSECURE") {
			t.Errorf("a TLS controller with a token logged INSECURE:\n%s", errb.String())
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, err := adminPost(t, admin, "t0ken-t0ken-t0ken-t0ken")
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller never took a write (HTTP %d, %v)", code, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, err := adminPost(t, admin, ""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("write without a token: %d %v", code, err)
	}

	// A router over mutual TLS whose model was tampered with.
	cfg, err := pki.IdentityFor(pdir, pki.Router, "r1").ClientTLS("", pki.PeerPolicy{Kind: pki.Controller})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	conn := wire.NewConn(nc, wire.ConnOptions{})
	defer conn.Close()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := conn.Write(wctx, &wire.Hello{ProtoMin: wire.MinProtocol, ProtoMax: wire.MaxProtocol, RouterID: "r1",
		IndexTypes: []abi.IndexType{abi.IndexLegacy, abi.IndexHA}, ABIVersions: []uint32{abi.Version}}); err != nil {
		t.Fatal(err)
	}
	var pos wire.Position
	for {
		m, err := conn.Read(wctx)
		if err != nil {
			t.Fatalf("router read: %v", err)
		}
		if b, ok := m.(*wire.FullStateBegin); ok {
			for _, p := range b.Positions {
				if p.Type == b.Mode {
					pos = p
				}
			}
		}
		if _, ok := m.(*wire.FullStateEnd); ok {
			break
		}
	}
	go func() {
		for {
			m, err := conn.Read(wctx)
			if err != nil {
				return
			}
			if _, ok := m.(*wire.DigestRequest); ok {
				_ = conn.Write(wctx, &wire.DigestReply{Position: pos, Entities: 1, Digest: "tampered"})
			}
		}
	}()

	code, out, stderr := runCLI(ctx, "routers", "--admin", admin)
	if code != exitOK || !strings.Contains(out, "r1") || !strings.Contains(out, "connected") {
		t.Fatalf("routers: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runCLI(ctx, "validate", "--admin", admin, "--timeout", "20s")
	if code != exitFailure || !strings.Contains(out, "MISMATCH") || !strings.Contains(stderr, "validation failed") {
		t.Fatalf("validate: exit %d\n%s%s", code, out, stderr)
	}
	backup := filepath.Join(t.TempDir(), "b.db")
	code, _, stderr = runCLI(ctx, "backup", "--admin", admin, "--out", backup)
	if code != exitFailure || !strings.Contains(stderr, "401") {
		t.Fatalf("backup without a token: exit %d %s", code, stderr)
	}
	code, out, stderr = runCLI(ctx, "backup", "--admin", admin, "--out", backup, "--admin-token-file", tokenFile)
	if code != exitOK || !strings.Contains(out, "backup written") {
		t.Fatalf("backup with the token: exit %d %s%s", code, out, stderr)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		file string
		args []string
		code int
		msg  string
	}{
		{"unknown key", "data-dir: " + dir + "\ninsecure: true\nlisten-adress: 127.0.0.1:1\n", nil, exitUsage, `unknown key "listen-adress"`},
		{"bad value", "data-dir: " + dir + "\ninsecure: true\nretention: lots\n", nil, exitUsage, `key "retention"`},
		{"nested value", "data-dir: " + dir + "\ninsecure: {a: 1}\n", nil, exitUsage, `key "insecure"`},
		{"not yaml", "data-dir: [\n", nil, exitUsage, "--config"},
		{"missing file", "", []string{"--config", filepath.Join(dir, "none.yaml")}, exitUsage, "--config"},
		// The file supplies the required data dir: the TLS error, not a
		// missing --data-dir, proves it was read.
		{"file without TLS", "data-dir: " + dir + "\n", nil, exitUsage, "TLS is not configured"},
		{"flag overrides file", "data-dir: " + dir + "\ninsecure: true\nha: true\n", []string{"--ha=false", "--bootstrap"}, exitUsage, "need --ha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"run"}, tt.args...)
			if tt.file != "" {
				args = append(args, "--config", write(tt.file))
			}
			code, _, stderr := runCLI(context.Background(), args...)
			if code != tt.code || !strings.Contains(stderr, tt.msg) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d (want %d), stderr %q, want one line with %q", code, tt.code, stderr, tt.msg)
			}
		})
	}
	code, out, _ := runCLI(context.Background(), "run", "--help")
	for _, f := range []string{"--config", "--pki-dir", "--admin-token-file", "--tls-cert", "--log-format", `(default "127.0.0.1:7071")`} {
		if code != exitOK || !strings.Contains(out, f) {
			t.Errorf("run --help lacks %s", f)
		}
	}
}
