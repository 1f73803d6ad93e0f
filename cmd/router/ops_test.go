package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/trust"
)

// testPKI is a CA, a controller certificate and a router certificate
// named r1.
func testPKI(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.Init(dir, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.Issue(dir, pki.Router, "r1", pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// withCustomSection is mod with a custom section: the same code, another
// sha256 (the router package's tests use the same variants, so the
// compilation cache holds them).
func withCustomSection(mod []byte, name string) []byte {
	payload := append([]byte{byte(len(name))}, name...)
	payload = append(payload, "indexgate router test"...)
	out := append(slices.Clone(mod), 0x00, byte(len(payload)))
	return append(out, payload...)
}

func customHA() []byte     { return withCustomSection(builtin.HA(), "flag") }
func customLegacy() []byte { return withCustomSection(builtin.Legacy(), "swap") }

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := func(body string) string { return writeFile(t, "router.yaml", []byte(body)) }
	valid := fmt.Sprintf("id: r1\ndata-dir: %s\ncontroller: [127.0.0.1:7000]\ninsecure: true\nadmin: 127.0.0.1:0\ncache-dir: %s\n", dir, cacheDir)
	tests := []struct {
		name string
		file string
		args []string
		want string
	}{
		{"unknown key", valid + "colour: blue\n", nil, `line 7: unknown key "colour"`},
		{"the config key itself", valid + "config: other.yaml\n", nil, `unknown key "config"`},
		{"key twice", valid + "insecure: false\n", nil, `key "insecure": given twice`},
		{"list for a single value", valid + "log-format: [text, json]\n", nil, `key "log-format": takes one value, not a list`},
		{"no value", valid + "log-level:\n", nil, `key "log-level": no value`},
		{"bad value", valid + "insecure: maybe\n", nil, `key "insecure"`},
		{"not a mapping", "- id\n- r1\n", nil, "want a mapping"},
		{"not YAML", "id: [r1\n", nil, "yaml"},
		{"value checked like the flag's", valid + "log-format: xml\n", nil, `--log-format "xml"`},
		{"repeatable flags take lists", valid + "pin: [abc]\n", nil, "pin"},
		{"flags win", valid + "log-format: xml\n", []string{"--log-format", "text", "--memory-limit", "1000"}, "64 KiB"},
		{"missing file", "", []string{"--config", filepath.Join(dir, "none.yaml")}, "none.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"run"}
			if tc.file != "" {
				args = append(args, "--config", conf(tc.file))
			}
			code, _, stderr := runCmd(t, append(args, tc.args...)...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			checkOneLine(t, stderr, tc.want)
		})
	}
}

// startRun runs "router run" with a config file and returns the admin
// address it listens on; the router stops when the test ends.
func startRun(t *testing.T, yaml string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	args := append([]string{"run", "--config", writeFile(t, "router.yaml", []byte(yaml)), "--log-format", "json"}, extra...)
	go func() { done <- execute(ctx, args, &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("router run exited %d:\n%s", code, errOut.String())
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		for _, l := range strings.Split(errOut.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "admin API listening" {
				return rec.Addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("router did not start:\n%s", errOut.String())
		}
		select {
		case code := <-done:
			t.Fatalf("router exited %d:\n%s", code, errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestFilterCommands signs a module, verifies it, and drives a running
// router through swap, shadow, promote and rollback, all in-process.
func TestFilterCommands(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	code, stdout, stderr := runCmd(t, "filters", "keygen", "--dir", keys)
	if code != exitOK || !strings.HasPrefix(stdout, "key id  ") || stderr != "" {
		t.Fatalf("keygen: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runCmd(t, "filters", "keygen", "--dir", keys); code != exitFailure {
		t.Errorf("keygen over existing keys: exit %d %s", code, stderr)
	}
	pub, priv := filepath.Join(keys, trust.PublicKeyFile), filepath.Join(keys, trust.PrivateKeyFile)
	mods := t.TempDir()
	custom := filepath.Join(mods, "custom.wasm")
	unsigned := filepath.Join(mods, "unsigned.wasm")
	for p, b := range map[string][]byte{custom: customLegacy(), unsigned: customHA()} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, stdout, stderr := runCmd(t, "filters", "sign", "--key", priv, custom); code != exitOK || !strings.Contains(stdout, custom+".sig") {
		t.Fatalf("sign: exit %d\n%s%s", code, stdout, stderr)
	}

	verify := []struct {
		name string
		args []string
		code int
		out  string // on stdout
		err  string // the stderr line
	}{
		{"signed, key trusted", []string{"--trusted-key", pub, custom}, exitOK, "ACCEPTED: ", ""},
		{"signed, no key", []string{custom}, exitFailure, "REFUSED", "untrusted module"},
		{"pinned", []string{"--pin", sha256Hex(customHA()), unsigned}, exitOK, "ACCEPTED: ", ""},
		{"unsigned", []string{"--trusted-key", pub, unsigned}, exitFailure, "REFUSED", "untrusted module"},
		{"unsigned allowed", []string{"--allow-unsigned", unsigned}, exitOK, "allowed-unsigned", ""},
		{"bad pin", []string{"--pin", "xyz", custom}, exitUsage, "", "pin"},
		{"no file", nil, exitUsage, "", "exactly one FILE.wasm"},
	}
	for _, tc := range verify {
		t.Run("verify "+tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, append([]string{"filters", "verify"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout, tc.out) {
				t.Errorf("exit %d, want %d; stdout:\n%s", code, tc.code, stdout)
			}
			if tc.err == "" && stderr != "" {
				t.Errorf("stderr %q", stderr)
			}
			if tc.err != "" {
				checkOneLine(t, stderr, tc.err)
			}
		})
	}

	token := writeFile(t, "token", []byte("cli-test-token-0123456789abcdef\n"))
	builtinFile := writeFile(t, "legacy.wasm", builtin.Legacy())
	admin := startRun(t, fmt.Sprintf(`
id: r1
data-dir: %s
controller: 127.0.0.1:1
insecure: true
admin: 127.0.0.1:0
admin-token-file: %s
trusted-key: [%s]
cache-dir: %s
call-timeout: 30s
`, t.TempDir(), token, pub, cacheDir))
	ops := []struct {
		name string
		args []string
		code int
		out  string
		err  string
	}{
		{"swap without the token", []string{"swap", "--type", "legacy", custom}, exitFailure, "", "401 Unauthorized"},
		{"swap unsigned", []string{"swap", "--type", "legacy", unsigned, "--token-file", token}, exitFailure, "", "403 Forbidden"},
		{"swap signed", []string{"swap", "--type", "legacy", custom, "--token-file", token}, exitOK, "trusted  true (signed)", ""},
		{"stop without a candidate", []string{"shadow", "--type", "legacy", "--stop", "--token-file", token}, exitFailure, "", "404 Not Found"},
		{"shadow the built-in", []string{"shadow", "--type", "legacy", builtinFile, "--token-file", token}, exitOK, "shadowing legacy candidate: indexgate-legacy", ""},
		{"promote", []string{"promote", "--type", "legacy", "--token-file", token}, exitOK, "promoted legacy: indexgate-legacy", ""},
		{"rollback", []string{"rollback", "--type", "legacy", "--token-file", token}, exitOK, "trusted  true (signed)", ""},
		{"swap the built-in back", []string{"swap", "--type", "legacy", "--builtin", "--token-file", token}, exitOK, "trusted  true (builtin)", ""},
		{"rollback to the signed one", []string{"rollback", "--type", "legacy", "--token-file", token}, exitOK, "trusted  true (signed)", ""},
		{"promote without a candidate", []string{"promote", "--type", "legacy", "--token-file", token}, exitFailure, "", "409 Conflict"},
		{"no type", []string{"promote", "--token-file", token}, exitUsage, "", "--type is required"},
		{"unknown type", []string{"rollback", "--type", "raft"}, exitUsage, "", `--type "raft"`},
		{"shadow without a file", []string{"shadow", "--type", "ha"}, exitUsage, "", "exactly one FILE.wasm"},
		{"not wasm", []string{"swap", "--type", "ha", token}, exitFailure, "", "not a WebAssembly module"},
	}
	for _, tc := range ops {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"filters"}, tc.args...)
			code, stdout, stderr := runCmd(t, append(args, "--admin", admin)...)
			if code != tc.code || !strings.Contains(stdout, tc.out) {
				t.Errorf("exit %d, want %d; stdout:\n%s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if tc.err != "" {
				checkOneLine(t, stderr, tc.err)
			} else if stderr != "" {
				t.Errorf("stderr %q", stderr)
			}
		})
	}
}
