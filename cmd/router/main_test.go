package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/filters/builtin"
)

// cacheDir is the compilation cache the tests share; see wasmCacheDir.
var cacheDir string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, cleanup, err := wasmCacheDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	cacheDir = dir
	return m.Run()
}

// wasmCacheDir persists compiled modules across test runs (compiling the
// built-ins takes tens of seconds under -race); wazero keys entries by its
// version, so stale ones are never used.
func wasmCacheDir() (string, func(), error) {
	dir := os.Getenv("INDEXGATE_TEST_WASM_CACHE")
	if dir == "" {
		if ucd, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(ucd, "indexgate", "test-wasm-cache")
		}
	}
	if dir != "" && os.MkdirAll(dir, 0o700) == nil {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "router-cmd-test-cache-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = execute(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkOneLine requires stderr to be exactly one "router: ..." line with
// want in it: no usage dump, no panic trace.
func checkOneLine(t *testing.T, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "router: ") || !strings.Contains(lines[0], want) {
		t.Errorf("stderr %q, want one line containing %q", stderr, want)
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	notWasm := writeFile(t, "notes.wasm", []byte("just text"))
	haModule := writeFile(t, "ha.wasm", builtin.HA())
	pkiDir := testPKI(t)
	base := []string{"run", "--id", "r1", "--data-dir", dir, "--controller", "127.0.0.1:7000", "--admin", "127.0.0.1:0", "--cache-dir", cacheDir}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"neither TLS nor insecure", base, "TLS needs --tls-cert, --tls-key and --tls-ca"},
		{"TLS without a CA", with("--tls-cert", "c.crt", "--tls-key", "c.key"), "TLS needs"},
		{"insecure and TLS", with("--insecure", "--pki-dir", dir), "exclude each other"},
		{"router certificate of another name", with("--pki-dir", pkiDir, "--id", "r2", "--tls-cert", filepath.Join(pkiDir, "router-r1.crt"),
			"--tls-key", filepath.Join(pkiDir, "router-r1.key")), `names router "r1" but the router's id is "r2"`},
		{"bad pin", with("--insecure", "--pin", "abc"), "pin"},
		{"missing trusted key", with("--insecure", "--trusted-key", filepath.Join(dir, "none.pub")), "none.pub"},
		{"short admin token", with("--insecure", "--admin-token-file", writeFile(t, "token", []byte("short"))), "at least 16"},
		{"filter dir missing", with("--insecure", "--filter-dir", filepath.Join(dir, "none")), "filter directory"},
		{"unsigned filter", with("--insecure", "--filter", "ha="+writeFile(t, "custom.wasm", customHA())), "untrusted module"},
		{"no id", []string{"run", "--data-dir", dir, "--controller", "127.0.0.1:7000", "--insecure"}, "--id is required"},
		{"no data dir", []string{"run", "--id", "r1", "--controller", "127.0.0.1:7000", "--insecure"}, "--data-dir is required"},
		{"no controller", []string{"run", "--id", "r1", "--data-dir", dir, "--insecure"}, "--controller is required"},
		{"controller without port", with("--insecure", "--controller", "localhost"), `controller address "localhost"`},
		{"unknown flag", with("--insecure", "--colour"), "unknown flag: --colour"},
		{"unknown filter type", with("--insecure", "--filter", "raft=x.wasm"), `unknown index type "raft"`},
		{"filter without file", with("--insecure", "--filter", "ha"), "want TYPE=VALUE"},
		{"unreadable filter", with("--insecure", "--filter", "ha="+filepath.Join(dir, "missing.wasm")), "no such file"},
		{"filter not wasm", with("--insecure", "--filter", "ha="+notWasm), "is not a WebAssembly module"},
		{"filter twice", with("--insecure", "--filter", "ha="+haModule, "--filter", "ha="+haModule), "index type ha given twice"},
		{"module for the wrong type", with("--insecure", "--filter", "ha="+writeFile(t, "legacy.wasm", builtin.Legacy()), "--allow-unsigned"), "invalid configuration"},
		{"options without a module", with("--insecure", "--filter-options", "ha=x"), "needs a --filter ha=FILE"},
		{"bad memory limit", with("--insecure", "--memory-limit", "lots"), "--memory-limit"},
		{"memory limit not in pages", with("--insecure", "--memory-limit", "1000"), "64 KiB"},
		{"bad log format", with("--insecure", "--log-format", "xml"), "--log-format"},
		{"bad log level", with("--insecure", "--log-level", "loud"), "--log-level"},
		{"stray argument", with("--insecure", "extra"), `unknown command "extra"`},
		{"no command", nil, "missing command"},
		{"unknown command", []string{"start"}, `unknown command "start"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			// These are only found by router.New, after the logger started;
			// everything else fails before any log line.
			if strings.Contains(stderr, "level=") {
				lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
				stderr = lines[len(lines)-1] + "\n"
			}
			checkOneLine(t, stderr, tc.want)
		})
	}
}

func TestRunStartsAndStopsGracefully(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, []string{"run", "--id", "r1", "--data-dir", t.TempDir(), "--controller", "127.0.0.1:1",
			"--admin", "127.0.0.1:0", "--cache-dir", cacheDir, "--insecure", "--log-format", "json"}, &out, &errOut)
	}()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(errOut.String(), `"msg":"admin API listening"`) {
		if time.Now().After(deadline) {
			t.Fatalf("router did not start:\n%s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel() // SIGINT / SIGTERM
	if code := <-done; code != exitOK {
		t.Errorf("exit %d after shutdown, want 0:\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), `"msg":"router stopped"`) {
		t.Errorf("no shutdown log line:\n%s", errOut.String())
	}
}
