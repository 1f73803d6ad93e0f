package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/indexgate/indexgate/internal/adminhttp"
)

// process is one controller or router child process.
type process struct {
	name    string
	bin     string
	args    []string
	logPath string
	admin   string // host:port of its admin API
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
}

func (p *process) start() error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.logFile = f
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout = f
	p.cmd.Stderr = f
	// Own process group so a Ctrl-C of the demo does not race our cleanup.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return nil
}

func (p *process) running() bool {
	if p.cmd == nil || p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends sig and waits for the process to exit.
func (p *process) kill(sig syscall.Signal, wait time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(wait):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	if p.logFile != nil {
		p.logFile.Close()
	}
}

// stop asks for a graceful exit, then kills.
func (p *process) stop() { p.kill(syscall.SIGTERM, 10*time.Second) }

// tail returns the last lines of the process log for failure reports.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// addrPool hands out 127.0.0.1 addresses whose ports were free, and
// distinct, when the pool was made: all listeners are held open together
// and only then closed, so no two processes of the demo are ever given the
// same port (a router answering a controller's /healthz would otherwise go
// unnoticed).
type addrPool struct{ addrs []string }

func newAddrPool(n int) (*addrPool, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	p := &addrPool{}
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		p.addrs = append(p.addrs, l.Addr().String())
	}
	return p, nil
}

func (p *addrPool) next() (string, error) {
	if len(p.addrs) == 0 {
		return "", errors.New("demo: address pool exhausted")
	}
	a := p.addrs[0]
	p.addrs = p.addrs[1:]
	return a, nil
}

// client is a small JSON client for the admin APIs.
type client struct{ http *http.Client }

func newClient() *client { return &client{http: &http.Client{Timeout: 10 * time.Second}} }

func (c *client) do(ctx context.Context, method, url, ctype string, body []byte, out any) error {
	return adminhttp.Do(ctx, c.http, adminhttp.Request{Method: method, URL: url, ContentType: ctype, Body: body}, out)
}

// retryable reports errors worth retrying a write for: connection trouble
// and 503 (a controller pausing writes).
func retryable(err error) bool {
	var he *adminhttp.Error
	if errors.As(err, &he) {
		return he.Status == http.StatusServiceUnavailable || he.Status == http.StatusTooManyRequests
	}
	return err != nil
}

func (c *client) getJSON(ctx context.Context, url string, out any) error {
	return c.do(ctx, http.MethodGet, url, "", nil, out)
}

// waitHealthy polls GET /healthz until it answers 200 or ctx ends.
func (c *client) waitHealthy(ctx context.Context, p *process) error {
	for {
		err := c.do(ctx, http.MethodGet, "http://"+p.admin+"/healthz", "", nil, nil)
		if err == nil {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("%s exited during start-up:\n%s", p.name, p.tail(20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w (last error: %v)", p.name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func mkdir(parts ...string) (string, error) {
	d := filepath.Join(parts...)
	return d, os.MkdirAll(d, 0o755)
}
