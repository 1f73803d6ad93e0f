package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config says where the binaries are and how big the run is.
type Config struct {
	// BinDir holds the controller and router binaries.
	BinDir string
	// SwapModule is the wasm file hot-swapped into one router's HA slot.
	SwapModule string
	// WorkDir keeps data dirs and logs; "" makes (and removes) a temp dir.
	WorkDir string
	// Keep leaves WorkDir in place for inspection.
	Keep bool
	// Writers is the number of concurrent writers; Batches the POSTs each
	// makes; BatchSize the changes per POST.
	Writers, Batches, BatchSize int
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Out receives progress lines and the summary.
	Out io.Writer
	// Logger receives diagnostics.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Writers <= 0 {
		c.Writers = 4
	}
	if c.Batches <= 0 {
		c.Batches = 100
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 10
	}
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Minute
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Result is the demo's summary.
type Result struct {
	Changes     int // changes acknowledged by the controller
	ChangeSets  uint64
	Routers     int
	Lost        int // acknowledged writes missing or wrong on some router
	Duplicated  int // change sets applied more than once
	FullResyncs int
	Swapped     bool
	Killed      bool
}

// Line renders the summary line the README promises.
func (r Result) Line(ok bool, reason string) string {
	s := fmt.Sprintf("changes=%d routers=%d lost=%d duplicated=%d full_resyncs=%d",
		r.Changes, r.Routers, r.Lost, r.Duplicated, r.FullResyncs)
	if ok {
		return "demo: OK " + s
	}
	return "demo: FAIL " + s + " reason=" + reason
}

type controllerStatus struct {
	Mode       string `json:"mode"`
	Index      uint64 `json:"index"`
	Timeline   string `json:"timeline"`
	Entities   uint64 `json:"entities"`
	Digest     string `json:"digest"`
	ChangeSets uint64 `json:"changeSets"`
	Routers    []struct {
		ID         string `json:"id"`
		Connected  bool   `json:"connected"`
		AckedIndex uint64 `json:"ackedIndex"`
	} `json:"routers"`
}

type routerStatus struct {
	ID        string            `json:"id"`
	Connected bool              `json:"connected"`
	Mode      string            `json:"mode"`
	Timeline  string            `json:"timeline"`
	LastIndex map[string]uint64 `json:"lastIndex"`
	Entities  uint64            `json:"entities"`
	Digest    string            `json:"digest"`
	Counters  struct {
		Applied     uint64 `json:"applied"`
		Skipped     uint64 `json:"skipped"`
		FullResyncs uint64 `json:"fullResyncs"`
		Gaps        uint64 `json:"gaps"`
	} `json:"counters"`
	Filters map[string]struct {
		SHA256 string `json:"sha256"`
		ABI    uint32 `json:"abi"`
	} `json:"filters"`
}

type entity struct {
	Kind  string `json:"kind"`
	ID    string `json:"id"`
	Value string `json:"value"`
}

type change struct {
	Op    string `json:"op"`
	Kind  string `json:"kind"`
	ID    string `json:"id"`
	Value string `json:"value,omitempty"`
}

// Run executes the demo and returns its result; err says why it failed.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	d := &run{cfg: cfg, c: newClient(), expected: map[string]string{}}
	defer d.cleanup()
	res, err := d.run(ctx)
	if err != nil {
		for _, p := range d.procs() {
			fmt.Fprintf(cfg.Out, "--- last log lines of %s (%s)\n%s\n", p.name, p.logPath, p.tail(15))
		}
	}
	return res, err
}

type run struct {
	cfg     Config
	c       *client
	dir     string
	ctrl    *process
	// ctrlListen is the controller's router-facing address.
	ctrlListen string
	routers []*process

	mu       sync.Mutex
	expected map[string]string // kind/id → value, from acknowledged writes
	changes  atomic.Int64
}

func (d *run) procs() []*process {
	var ps []*process
	if d.ctrl != nil {
		ps = append(ps, d.ctrl)
	}
	return append(ps, d.routers...)
}

func (d *run) say(format string, args ...any) {
	fmt.Fprintf(d.cfg.Out, "demo: "+format+"\n", args...)
}

func (d *run) cleanup() {
	for _, p := range d.routers {
		p.stop()
	}
	if d.ctrl != nil {
		d.ctrl.stop()
	}
	if d.dir != "" && !d.cfg.Keep && d.cfg.WorkDir == "" {
		os.RemoveAll(d.dir)
	}
}

func (d *run) bin(name string) string { return filepath.Join(d.cfg.BinDir, name) }

func (d *run) run(ctx context.Context) (Result, error) {
	var res Result
	var err error
	if d.cfg.WorkDir != "" {
		d.dir = d.cfg.WorkDir
		err = os.MkdirAll(d.dir, 0o755)
	} else {
		d.dir, err = os.MkdirTemp("", "indexgate-demo-")
	}
	if err != nil {
		return res, err
	}
	for _, b := range []string{"controller", "router"} {
		if _, err := os.Stat(d.bin(b)); err != nil {
			return res, fmt.Errorf("binary %s missing (run make build): %w", d.bin(b), err)
		}
	}

	if err := d.startController(ctx); err != nil {
		return res, err
	}
	for i := 1; i <= 3; i++ {
		if err := d.startRouter(ctx, fmt.Sprintf("router-%d", i)); err != nil {
			return res, err
		}
	}
	res.Routers = len(d.routers)
	if err := d.waitConnected(ctx); err != nil {
		return res, err
	}
	d.say("controller %s and %d routers up; writing %d batches of %d changes from %d writers",
		d.ctrl.admin, len(d.routers), d.cfg.Batches*d.cfg.Writers, d.cfg.BatchSize, d.cfg.Writers)

	total := int64(d.cfg.Writers * d.cfg.Batches)
	var posted atomic.Int64
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	werr := make(chan error, d.cfg.Writers)
	for w := 0; w < d.cfg.Writers; w++ {
		go func(w int) { werr <- d.writer(wctx, w, &posted) }(w)
	}

	// Chaos while the writers run: SIGKILL a router, restart it; hot-swap a filter.
	victim, swapper := d.routers[1], d.routers[2]
	if err := waitFor(ctx, func() bool { return posted.Load() >= total*3/10 }); err != nil {
		return res, err
	}
	d.say("SIGKILL %s at %d/%d batches", victim.name, posted.Load(), total)
	victim.kill(syscall.SIGKILL, 5*time.Second)
	res.Killed = true
	if err := waitFor(ctx, func() bool { return posted.Load() >= total/2 }); err != nil {
		return res, err
	}
	d.say("restart %s", victim.name)
	if err := victim.start(); err != nil {
		return res, err
	}
	if err := d.c.waitHealthy(ctx, victim); err != nil {
		return res, err
	}
	if err := waitFor(ctx, func() bool { return posted.Load() >= total*6/10 }); err != nil {
		return res, err
	}
	sha, err := d.swapFilter(ctx, swapper, "ha", d.cfg.SwapModule)
	if err != nil {
		return res, fmt.Errorf("hot swap on %s: %w", swapper.name, err)
	}
	res.Swapped = true
	d.say("hot-swapped the ha filter on %s to %s (%s)", swapper.name, filepath.Base(d.cfg.SwapModule), short(sha))

	for w := 0; w < d.cfg.Writers; w++ {
		if err := <-werr; err != nil {
			return res, fmt.Errorf("writer: %w", err)
		}
	}
	res.Changes = int(d.changes.Load())
	d.say("%d changes acknowledged; waiting for convergence", res.Changes)
	return d.verify(ctx, res)
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func (d *run) startController(ctx context.Context) error {
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	data, err := mkdir(d.dir, "controller")
	if err != nil {
		return err
	}
	d.ctrl = &process{
		name: "controller", bin: d.bin("controller"), admin: admin,
		logPath: filepath.Join(d.dir, "controller.log"),
		args: []string{"run", "--data-dir", data, "--listen", listen, "--admin", admin, "--insecure"},
	}
	if err := d.ctrl.start(); err != nil {
		return err
	}
	d.ctrlListen = listen
	return d.c.waitHealthy(ctx, d.ctrl)
}

func (d *run) startRouter(ctx context.Context, id string) error {
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	data, err := mkdir(d.dir, id)
	if err != nil {
		return err
	}
	p := &process{
		name: id, bin: d.bin("router"), admin: admin,
		logPath: filepath.Join(d.dir, id+".log"),
		args: []string{"run", "--id", id, "--data-dir", data, "--controller", d.ctrlListen,
			"--admin", admin, "--insecure"},
	}
	if err := p.start(); err != nil {
		return err
	}
	d.routers = append(d.routers, p)
	return d.c.waitHealthy(ctx, p)
}

func (d *run) waitConnected(ctx context.Context) error {
	return waitFor(ctx, func() bool {
		var st controllerStatus
		if d.c.getJSON(ctx, "http://"+d.ctrl.admin+"/v1/status", &st) != nil {
			return false
		}
		n := 0
		for _, r := range st.Routers {
			if r.Connected {
				n++
			}
		}
		return n == len(d.routers)
	})
}

// writer posts its batches. Every batch only touches the writer's own keys
// and is idempotent (puts of fixed values, deletes), so a write whose answer
// was lost can be retried and the expected model stays exact.
func (d *run) writer(ctx context.Context, w int, posted *atomic.Int64) error {
	for b := 0; b < d.cfg.Batches; b++ {
		var cs []change
		for i := 0; i < d.cfg.BatchSize; i++ {
			n := b*d.cfg.BatchSize + i
			id := fmt.Sprintf("w%d-%05d", w, n)
			switch {
			case n%7 == 3 && n >= 7: // delete an earlier key
				cs = append(cs, change{Op: "delete", Kind: "service", ID: fmt.Sprintf("w%d-%05d", w, n-7)})
			case n%5 == 0 && n >= 5: // update an earlier key
				cs = append(cs, change{Op: "put", Kind: "service", ID: fmt.Sprintf("w%d-%05d", w, n-5), Value: fmt.Sprintf("v2-%d", n)})
			default:
				cs = append(cs, change{Op: "put", Kind: "service", ID: id, Value: fmt.Sprintf("v1-%d", n)})
			}
		}
		body, _ := json.Marshal(map[string]any{"changes": cs})
		for attempt := 0; ; attempt++ {
			var out struct {
				Index uint64 `json:"index"`
			}
			err := d.c.do(ctx, "POST", "http://"+d.ctrl.admin+"/v1/changes", "application/json", body, &out)
			if err == nil {
				break
			}
			if !retryable(err) || attempt > 200 || ctx.Err() != nil {
				return fmt.Errorf("POST /v1/changes: %w", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		d.mu.Lock()
		for _, c := range cs {
			k := c.Kind + "/" + c.ID
			if c.Op == "delete" {
				delete(d.expected, k)
			} else {
				d.expected[k] = c.Value
			}
		}
		d.mu.Unlock()
		d.changes.Add(int64(len(cs)))
		posted.Add(1)
	}
	return nil
}

func (d *run) swapFilter(ctx context.Context, p *process, typ, file string) (string, error) {
	wasm, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var out struct {
		SHA256 string `json:"sha256"`
	}
	err = d.c.do(ctx, "PUT", "http://"+p.admin+"/v1/filters/"+typ, "application/wasm", wasm, &out)
	return out.SHA256, err
}

// verify waits until every router reports the controller's digest, then
// counts lost and duplicated change sets.
func (d *run) verify(ctx context.Context, res Result) (Result, error) {
	var cst controllerStatus
	vctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	converged := waitFor(vctx, func() bool {
		if d.c.getJSON(vctx, "http://"+d.ctrl.admin+"/v1/status", &cst) != nil {
			return false
		}
		for _, p := range d.routers {
			var rs routerStatus
			if d.c.getJSON(vctx, "http://"+p.admin+"/v1/status", &rs) != nil || rs.Digest != cst.Digest {
				return false
			}
		}
		return true
	})
	res.ChangeSets = cst.ChangeSets

	d.mu.Lock()
	expected := d.expected
	d.mu.Unlock()
	var problems []string
	for _, p := range d.routers {
		var rs routerStatus
		if err := d.c.getJSON(ctx, "http://"+p.admin+"/v1/status", &rs); err != nil {
			problems = append(problems, fmt.Sprintf("%s: status: %v", p.name, err))
			res.Lost += len(expected)
			continue
		}
		res.FullResyncs += int(rs.Counters.FullResyncs)
		if rs.Counters.Applied > cst.ChangeSets {
			res.Duplicated += int(rs.Counters.Applied - cst.ChangeSets)
		}
		var ents []entity
		if err := d.c.getJSON(ctx, "http://"+p.admin+"/v1/entities", &ents); err != nil {
			problems = append(problems, fmt.Sprintf("%s: entities: %v", p.name, err))
			res.Lost += len(expected)
			continue
		}
		got := make(map[string]string, len(ents))
		for _, e := range ents {
			got[e.Kind+"/"+e.ID] = e.Value
		}
		lost := 0
		for k, v := range expected {
			if got[k] != v {
				lost++
			}
		}
		if lost > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d acknowledged writes missing or wrong", p.name, lost))
		}
		res.Lost += lost
		d.say("%s: digest %s entities=%d applied=%d skipped=%d full_resyncs=%d gaps=%d",
			p.name, short(rs.Digest), rs.Entities, rs.Counters.Applied, rs.Counters.Skipped,
			rs.Counters.FullResyncs, rs.Counters.Gaps)
	}
	if converged != nil {
		problems = append(problems, "routers did not converge on the controller's digest within 60s")
	}
	if uint64(len(expected)) != cst.Entities {
		problems = append(problems, fmt.Sprintf("controller has %d entities, writers expect %d", cst.Entities, len(expected)))
	}
	if res.Duplicated > 0 {
		problems = append(problems, fmt.Sprintf("%d change sets applied more than once", res.Duplicated))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return res, errors.New(strings.Join(problems, "; "))
	}
	return res, nil
}

// waitFor polls cond every 50ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
