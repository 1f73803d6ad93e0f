package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runCLI(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		// stderr must be exactly one line containing this.
		msg string
	}{
		{"no TLS and not insecure", []string{"run", "--data-dir", dir}, exitUsage, "TLS is not configured"},
		{"unknown flag", []string{"run", "--data-dir", dir, "--insecure", "--tls-magic"}, exitUsage, "unknown flag: --tls-magic"},
		{"missing data dir", []string{"run", "--insecure"}, exitUsage, `required flag(s) "data-dir" not set`},
		{"bad retention", []string{"run", "--data-dir", dir, "--insecure", "--retention", "lots"}, exitUsage, "retention"},
		{"bad log format", []string{"run", "--data-dir", dir, "--insecure", "--log-format", "xml"}, exitUsage, `--log-format "xml"`},
		{"bad log level", []string{"run", "--data-dir", dir, "--insecure", "--log-level", "loud"}, exitUsage, `--log-level "loud"`},
		{"bad listen address", []string{"run", "--data-dir", dir, "--insecure", "--listen", "127.0.0.1:99999", "--admin", "127.0.0.1:0"}, exitFailure, "router listener"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"stray argument", []string{"run", "extra", "--data-dir", dir, "--insecure"}, exitUsage, "unknown command"},
		{"backup needs a source", []string{"backup", "--out", filepath.Join(dir, "b")}, exitUsage, "exactly one of --data-dir"},
		{"backup of nothing", []string{"backup", "--data-dir", filepath.Join(dir, "none"), "--out", filepath.Join(dir, "b")}, exitFailure, "backup"},
		{"restore from a missing file", []string{"restore", "--data-dir", dir, "--from", filepath.Join(dir, "missing")}, exitFailure, "restore"},
		{"restore needs --from", []string{"restore", "--data-dir", dir}, exitUsage, `required flag(s) "from" not set`},
		{"ha needs a node id", []string{"run", "--data-dir", dir, "--insecure", "--ha"}, exitUsage, "needs a node id"},
		{"bootstrap needs ha", []string{"run", "--data-dir", dir, "--insecure", "--bootstrap"}, exitUsage, "need --ha"},
		{"bootstrap or join", []string{"run", "--data-dir", dir, "--insecure", "--ha", "--node-id", "n1", "--bootstrap", "--join", "127.0.0.1:1"}, exitUsage, "not both"},
		{"bad join address", []string{"run", "--data-dir", dir, "--insecure", "--ha", "--node-id", "n1", "--join", "ftp://x"}, exitUsage, "join address"},
		{"new member needs a way in", []string{"run", "--data-dir", t.TempDir(), "--insecure", "--ha", "--node-id", "n1",
			"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, exitUsage, "--bootstrap"},
		{"migrate needs --to", []string{"migrate"}, exitUsage, `required flag(s) "to" not set`},
		{"migrate to nowhere", []string{"migrate", "--to", "sideways"}, exitUsage, `--to "sideways"`},
		{"migrate to ha needs ids", []string{"migrate", "--to", "ha"}, exitUsage, "--node-id and --raft-addr"},
		{"migrate unreachable", []string{"migrate", "--to", "legacy", "--admin", "127.0.0.1:1"}, exitFailure, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(context.Background(), tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "controller: ") || !strings.Contains(lines[0], tt.msg) {
				t.Fatalf("stderr %q, want one line containing %q", stderr, tt.msg)
			}
			if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
				t.Fatalf("stack trace on stderr: %s", stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := runCLI(context.Background(), "run", "--help")
	if code != exitOK || !strings.Contains(out, "--insecure") || !strings.Contains(out, "--retention") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
}

// TestRunBackupRestore runs the controller until its context ends (what
// SIGINT does), then backs up the stopped store and restores it.
func TestRunBackupRestore(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"run", "--data-dir", dir, "--insecure", "--listen", "127.0.0.1:0",
			"--admin", "127.0.0.1:0", "--log-format", "json", "--retention", "50"}, &bytes.Buffer{}, &errb)
	}()
	// Wait for the store to exist, then stop; the controller shuts down
	// gracefully and exits 0.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "controller.db")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("store never created")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("run exited %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), `"level":"WARN","msg":"INSECURE: routers`) {
		t.Fatalf("--insecure was not logged loudly:\n%s", errb.String())
	}
	if !strings.Contains(errb.String(), `"msg":"controller stopped"`) {
		t.Fatalf("json log lacks the stop event:\n%s", errb.String())
	}

	file := filepath.Join(t.TempDir(), "backup.db")
	code, out, stderr := runCLI(context.Background(), "backup", "--data-dir", dir, "--out", file)
	if code != exitOK || !strings.Contains(out, "backup written") {
		t.Fatalf("backup: exit %d %s %s", code, out, stderr)
	}
	code, out, stderr = runCLI(context.Background(), "restore", "--data-dir", dir, "--from", file)
	if code != exitOK || !strings.Contains(out, "new timeline") || !strings.Contains(out, "previous store is kept") {
		t.Fatalf("restore: exit %d %s %s", code, out, stderr)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestMigrateCommand runs a legacy controller, migrates it to HA mode with
// "controller migrate" (real raft over TCP), which prints its progress,
// then rolls it back; a second migration to the same mode is refused with
// one line and exit 1.
func TestMigrateCommand(t *testing.T) {
	dir, admin := t.TempDir(), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"run", "--data-dir", dir, "--insecure", "--listen", "127.0.0.1:0",
			"--admin", admin, "--log-level", "error"}, &bytes.Buffer{}, &errb)
	}()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("run exited %d: %s", code, errb.String())
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Post("http://"+admin+"/v1/changes", "application/json", strings.NewReader(`{"changes":[{"op":"put","kind":"k","id":"i","value":"v"}]}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("controller never took a write")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, out, stderr := runCLI(ctx, "migrate", "--to", "ha", "--admin", admin, "--node-id", "n1", "--raft-addr", freeAddr(t))
	if code != exitOK || !strings.Contains(out, "migration to ha done") || !strings.Contains(out, "% ") {
		t.Fatalf("migrate --to ha: exit %d\n%s%s", code, out, stderr)
	}
	code, _, stderr = runCLI(ctx, "migrate", "--to", "ha", "--admin", admin, "--node-id", "n1", "--raft-addr", freeAddr(t))
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != exitFailure || len(lines) != 1 || !strings.Contains(stderr, "not a legacy controller") {
		t.Fatalf("second migrate --to ha: exit %d %q", code, stderr)
	}
	// Rolling back needs an HA change set since the migration.
	resp, err := http.Post("http://"+admin+"/v1/changes", "application/json", strings.NewReader(`{"changes":[{"op":"put","kind":"k","id":"j","value":"v"}]}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("HA write: %v %v", resp, err)
	}
	resp.Body.Close()
	code, out, stderr = runCLI(ctx, "migrate", "--to", "legacy", "--admin", admin)
	if code != exitOK || !strings.Contains(out, "migration to legacy done") {
		t.Fatalf("migrate --to legacy: exit %d\n%s%s", code, out, stderr)
	}
}
