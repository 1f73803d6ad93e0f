package itest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/indexgate/indexgate/internal/adminhttp"
)

// ErrNoGoTool reports that the go command, which builds the real
// binaries, is not installed: tests then skip rather than fail.
var ErrNoGoTool = errors.New("itest: go tool not found")

// Binaries are the controller and router commands built from the
// checkout under test.
type Binaries struct {
	Controller, Router string
}

// goTool finds the go command: on PATH, else in the GOROOT the test binary
// was built with.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", ErrNoGoTool
}

// BuildBinaries builds ./cmd/controller and ./cmd/router of this module
// into dir. They are built without -race even when the tests run with it:
// the children are what the tests observe, not what they check for races,
// and a race-built wasm host compiles modules several times slower.
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	gobin, err := goTool()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Controller: filepath.Join(dir, "controller"), Router: filepath.Join(dir, "router")}
	for out, pkg := range map[string]string{
		b.Controller: "github.com/indexgate/indexgate/cmd/controller",
		b.Router:     "github.com/indexgate/indexgate/cmd/router",
	} {
		cmd := exec.CommandContext(ctx, gobin, "build", "-o", out, pkg)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("itest: go build %s: %w\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

// Process is a controller or router binary running as a child process.
// Its stdout and stderr go to a log file whose tail is printed when the
// test fails.
type Process struct {
	// Name labels the process in test output.
	Name string
	// Admin is the host:port of its admin API.
	Admin string

	bin     string
	args    []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// StartProcess starts bin with args; admin is the address its admin API
// listens on. The process is killed when the test ends, and — on Linux —
// when the test process dies, so a timed-out test leaves no servers behind.
func StartProcess(t testing.TB, name, admin, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Admin: admin, bin: bin, args: args,
		logPath: filepath.Join(t.TempDir(), name+".log")}
	p.start(t)
	t.Cleanup(func() {
		p.Kill(t)
		if t.Failed() {
			t.Logf("itest: last lines of %s's log:\n%s", p.Name, p.LogTail(30))
		}
	})
	return p
}

func (p *Process) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("itest: start %s: %v", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
}

// Restart starts the process again with the same arguments (so the same
// data directory and addresses) after it exited.
func (p *Process) Restart(t testing.TB) {
	t.Helper()
	if p.Running() {
		t.Fatalf("itest: restart %s: still running", p.Name)
	}
	p.start(t)
}

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to exit: no shutdown code
// runs, as after a crash or kill -9.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
}

// Stop sends SIGTERM and waits for a graceful exit (bounded by Guard,
// then SIGKILL).
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
}

func (p *Process) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if !p.Running() {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("itest: signal %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(Guard):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("itest: %s ignored %v for %v", p.Name, sig, Guard)
	}
}

// LogTail returns the last n lines the process wrote.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	lines = lines[max(0, len(lines)-n):]
	return string(bytes.Join(lines, []byte("\n")))
}

// HTTPError is an admin API answer outside 2xx.
type HTTPError = adminhttp.Error

// requestTimeout bounds each admin request, so that a wedged server fails
// the call, not the test binary's deadline.
const requestTimeout = 10 * time.Second

// GetJSON decodes the JSON answer of GET http://addr+path into out.
func GetJSON(ctx context.Context, addr, path string, out any) error {
	return doJSON(ctx, http.MethodGet, addr, path, nil, out)
}

// PostJSON posts in as JSON to http://addr+path and decodes the answer
// into out (nil: discard it).
func PostJSON(ctx context.Context, addr, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return doJSON(ctx, http.MethodPost, addr, path, body, out)
}

func doJSON(ctx context.Context, method, addr, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return adminhttp.Do(ctx, nil, adminhttp.Request{Method: method, URL: "http://" + addr + path, Body: body}, out)
}
