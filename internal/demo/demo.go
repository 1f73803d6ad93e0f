package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	// Writers is the number of concurrent writers; Batches the number of
	// acknowledged POSTs between two steps of the story; BatchSize the
	// changes per POST; Pace the pause of a writer between two POSTs.
	Writers, Batches, BatchSize int
	Pace                        time.Duration
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
	if c.Pace <= 0 {
		c.Pace = 10 * time.Millisecond
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
	// MigrationPauseMs is the write pause of the live legacy → HA migration.
	MigrationPauseMs float64
	// FailoverMs is the time from the leader's SIGKILL until every router
	// had applied a write acknowledged after it.
	FailoverMs float64
}

// Line renders the summary line the README promises.
func (r Result) Line(ok bool, reason string) string {
	s := fmt.Sprintf("changes=%d routers=%d lost=%d duplicated=%d full_resyncs=%d migration_pause_ms=%.0f",
		r.Changes, r.Routers, r.Lost, r.Duplicated, r.FullResyncs, r.MigrationPauseMs)

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
	NodeID     string `json:"nodeId"`
	Leader     bool   `json:"leader"`
	Serving    bool   `json:"serving"`
	Peers      []struct {
		ID string `json:"id"`
	} `json:"peers"`
	Migration struct {
		Step    string  `json:"step"`
		PauseMs float64 `json:"pauseMs"`
		Error   string  `json:"error"`
	} `json:"migration"`
	Routers []struct {
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
	cfg   Config
	c     *client
	dir   string
	addrs *addrPool
	// swapSHA is the sha256 of the module hot-swapped mid-stream; routers
	// pin it, the way an operator vouches for a module they roll out.
	swapSHA string
	// nodes are the controller processes: n1 starts as the legacy
	// controller and becomes the first raft member; n2 and n3 join.
	nodes   []*node
	routers []*process

	mu       sync.Mutex
	expected map[string]string // kind/id → value, from acknowledged writes
	changes  atomic.Int64
}

// node is one controller process and its addresses.
type node struct {
	*process
	id, listen, raft string
}

func (d *run) procs() []*process {
	var ps []*process
	for _, n := range d.nodes {
		ps = append(ps, n.process)
	}
	return append(ps, d.routers...)
}

// admins lists the admin addresses of the controller nodes still running,
// for writers and status polls to rotate through.
func (d *run) admins() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, n := range d.nodes {
		if n.running() {
			out = append(out, n.admin)
		}
	}
	return out
}

func (d *run) say(format string, args ...any) {
	fmt.Fprintf(d.cfg.Out, "demo: "+format+"\n", args...)
}

func (d *run) cleanup() {
	for _, p := range d.routers {
		p.stop()
	}
	for _, n := range d.nodes {
		n.stop()
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
	swap, err := os.ReadFile(d.cfg.SwapModule)
	if err != nil {
		return res, fmt.Errorf("swap module: %w", err)
	}
	sum := sha256.Sum256(swap)
	d.swapSHA = hex.EncodeToString(sum[:])
	// Addresses for every process up front (3 per controller node, 1 per
	// router): routers are given every node's router address and fail
	// over between them.
	if d.addrs, err = newAddrPool(3*3 + 3); err != nil {
		return res, err
	}
	for i := 1; i <= 3; i++ {
		n := &node{id: fmt.Sprintf("n%d", i), process: &process{name: fmt.Sprintf("controller-n%d", i)}}
		for _, a := range []*string{&n.admin, &n.listen, &n.raft} {
			if *a, err = d.addrs.next(); err != nil {
				return res, err
			}
		}
		d.nodes = append(d.nodes, n)
	}
	if err := d.startLegacy(ctx, d.nodes[0]); err != nil {
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
	d.say("legacy controller n1 (%s) and %d routers up; %d writers posting batches of %d changes until the end",
		d.nodes[0].admin, len(d.routers), d.cfg.Writers, d.cfg.BatchSize)

	// The writers run until the last phase is over; each phase waits for
	// cfg.Batches more acknowledged batches, so every step happens under load.
	var posted atomic.Int64
	var stop atomic.Bool
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	werr := make(chan error, d.cfg.Writers)
	for w := 0; w < d.cfg.Writers; w++ {
		go func(w int) { werr <- d.writer(wctx, w, &posted, &stop) }(w)
	}
	step := func() error {
		target := posted.Load() + int64(d.cfg.Batches)
		return waitFor(ctx, func() bool { return posted.Load() >= target })
	}

	// 1. A router is killed with SIGKILL and restarted (legacy mode).
	victim := d.routers[1]
	if err := step(); err != nil {
		return res, err
	}
	d.say("SIGKILL %s after %d batches", victim.name, posted.Load())
	victim.kill(syscall.SIGKILL, 5*time.Second)
	res.Killed = true
	if err := step(); err != nil {
		return res, err
	}
	d.say("restart %s", victim.name)
	if err := victim.start(); err != nil {
		return res, err
	}
	if err := d.c.waitHealthy(ctx, victim); err != nil {
		return res, err
	}
	if err := step(); err != nil {
		return res, err
	}

	// 2. Live migration of n1 to HA mode under the write load.
	before := posted.Load()
	pause, err := d.migrate(ctx, d.nodes[0])
	if err != nil {
		return res, fmt.Errorf("migration to HA: %w", err)
	}
	res.MigrationPauseMs = pause
	d.say("migrated n1 to HA mode live (%d batches written during the migration): write pause %.0f ms",
		posted.Load()-before, pause)

	// 3. Two more members join.
	for _, n := range d.nodes[1:] {
		if err := d.startMember(ctx, n, d.nodes[0].admin); err != nil {
			return res, err
		}
	}
	if err := d.waitPeers(ctx, 3); err != nil {
		return res, err
	}
	d.say("n2 and n3 joined: 3-node raft cluster")

	// 4. Hot swap of the HA filter on every router, mid-stream.
	if err := step(); err != nil {
		return res, err
	}
	for _, r := range d.routers {
		sha, err := d.swapFilter(ctx, r, "ha", d.cfg.SwapModule)
		if err != nil {
			return res, fmt.Errorf("hot swap on %s: %w", r.name, err)
		}
		d.say("hot-swapped the ha filter on %s to %s (%s)", r.name, filepath.Base(d.cfg.SwapModule), short(sha))
	}
	res.Swapped = true

	// 5. The leader is killed; writes continue on the survivors.
	if err := step(); err != nil {
		return res, err
	}
	leader, err := d.leader(ctx)
	if err != nil {
		return res, err
	}
	d.say("SIGKILL the raft leader %s after %d batches", leader.id, posted.Load())
	killed := time.Now()
	leader.kill(syscall.SIGKILL, 5*time.Second)
	failover, err := d.failover(ctx, killed)
	if err != nil {
		return res, fmt.Errorf("failover: %w", err)
	}
	res.FailoverMs = float64(failover.Microseconds()) / 1000
	d.say("failover: every router applied a new write %.0f ms after the leader was killed", res.FailoverMs)
	if err := step(); err != nil {
		return res, err
	}
	d.say("writes continue on the survivors (%d batches in all)", posted.Load())
	stop.Store(true)

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

func (d *run) startNode(ctx context.Context, n *node, extra ...string) error {
	data, err := mkdir(d.dir, n.name)
	if err != nil {
		return err
	}
	n.bin = d.bin("controller")
	n.logPath = filepath.Join(d.dir, n.name+".log")
	n.args = append([]string{"run", "--data-dir", data, "--listen", n.listen, "--admin", n.admin, "--insecure"}, extra...)
	if err := n.start(); err != nil {
		return err
	}
	return d.c.waitHealthy(ctx, n.process)
}

// startLegacy starts n as a plain legacy controller.
func (d *run) startLegacy(ctx context.Context, n *node) error { return d.startNode(ctx, n) }

// startMember starts n as an HA node joining through an existing member.
func (d *run) startMember(ctx context.Context, n *node, via string) error {
	return d.startNode(ctx, n, "--ha", "--node-id", n.id, "--raft-addr", n.raft, "--join", "http://"+via)
}

// migrate asks the legacy controller n to become the first raft member and
// waits for the migration to finish; it returns the write pause.
func (d *run) migrate(ctx context.Context, n *node) (float64, error) {
	body, _ := json.Marshal(map[string]string{"to": "ha", "nodeId": n.id, "raftAddr": n.raft})
	if err := d.c.do(ctx, "POST", "http://"+n.admin+"/v1/migrate", "application/json", body, nil); err != nil {
		return 0, err
	}
	var st controllerStatus
	var last string
	err := waitFor(ctx, func() bool {
		if d.c.getJSON(ctx, "http://"+n.admin+"/v1/status", &st) != nil {
			return false
		}
		if st.Migration.Step != last {
			last = st.Migration.Step
			d.say("  migration step: %s", last)
		}
		return st.Migration.Step == "done" || st.Migration.Step == "failed" || st.Migration.Error != ""
	})
	if err != nil {
		return 0, err
	}
	if st.Migration.Step != "done" {
		return 0, fmt.Errorf("step %s: %s", st.Migration.Step, st.Migration.Error)
	}
	return st.Migration.PauseMs, nil
}

// waitPeers waits until a member reports n voters and every running node
// serves routers.
func (d *run) waitPeers(ctx context.Context, n int) error {
	return waitFor(ctx, func() bool {
		for _, a := range d.admins() {
			var st controllerStatus
			if d.c.getJSON(ctx, "http://"+a+"/v1/status", &st) != nil || len(st.Peers) != n || !st.Serving {
				return false
			}
		}
		return true
	})
}

// leader finds the node that currently leads the raft cluster.
func (d *run) leader(ctx context.Context) (*node, error) {
	var found *node
	err := waitFor(ctx, func() bool {
		for _, n := range d.nodes {
			var st controllerStatus
			if n.running() && d.c.getJSON(ctx, "http://"+n.admin+"/v1/status", &st) == nil && st.Leader {
				found = n
				return true
			}
		}
		return false
	})
	return found, err
}

func (d *run) startRouter(ctx context.Context, id string) error {
	admin, err := d.addrs.next()
	if err != nil {
		return err
	}
	data, err := mkdir(d.dir, id)
	if err != nil {
		return err
	}
	var ctrls []string
	for _, n := range d.nodes {
		ctrls = append(ctrls, n.listen)
	}
	p := &process{
		name: id, bin: d.bin("router"), admin: admin,
		logPath: filepath.Join(d.dir, id+".log"),
		args: []string{"run", "--id", id, "--data-dir", data, "--controller", strings.Join(ctrls, ","),
			"--admin", admin, "--insecure", "--pin", d.swapSHA},
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
		if d.c.getJSON(ctx, "http://"+d.nodes[0].admin+"/v1/status", &st) != nil {
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
// was lost (a leader killed mid-request) is retried on another node and the
// expected model stays exact.
func (d *run) writer(ctx context.Context, w int, posted *atomic.Int64, stop *atomic.Bool) error {
	next := w // rotate through the nodes on failure
	for b := 0; !stop.Load(); b++ {
		// A steady stream rather than a burst, so every phase sees writes.
		time.Sleep(d.cfg.Pace)
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
			admins := d.admins()
			if len(admins) == 0 {
				return errors.New("no controller node running")
			}
			target := admins[next%len(admins)]
			var out struct {
				Index uint64 `json:"index"`
			}
			err := d.c.do(ctx, "POST", "http://"+target+"/v1/changes", "application/json", body, &out)
			if err == nil {
				break
			}
			if !retryable(err) || attempt > 600 || ctx.Err() != nil {
				return fmt.Errorf("POST %s/v1/changes: %w", target, err)
			}
			next++
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

// verify waits until every running controller node and every router report
// the same digest, then counts lost and duplicated change sets.
func (d *run) verify(ctx context.Context, res Result) (Result, error) {
	var cst controllerStatus
	vctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	converged := waitFor(vctx, func() bool {
		admins := d.admins()
		if len(admins) == 0 || d.c.getJSON(vctx, "http://"+admins[0]+"/v1/status", &cst) != nil {
			return false
		}
		for _, a := range admins[1:] {
			var st controllerStatus
			if d.c.getJSON(vctx, "http://"+a+"/v1/status", &st) != nil || st.Digest != cst.Digest {
				return false
			}
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
		d.say("%s: digest %s entities=%d applied=%d skipped=%d full_resyncs=%d gaps=%d mode=%s",
			p.name, short(rs.Digest), rs.Entities, rs.Counters.Applied, rs.Counters.Skipped,
			rs.Counters.FullResyncs, rs.Counters.Gaps, rs.Mode)
	}
	if converged != nil {
		problems = append(problems, "routers and controller nodes did not converge on one digest within 60s")
	}
	if uint64(len(expected)) != cst.Entities {
		problems = append(problems, fmt.Sprintf("controller has %d entities, writers expect %d", cst.Entities, len(expected)))
	}
	if res.Duplicated > 0 {
		problems = append(problems, fmt.Sprintf("%d change sets applied more than once", res.Duplicated))
	}
	if res.FullResyncs > 0 {
		problems = append(problems, fmt.Sprintf("%d full resyncs (want none)", res.FullResyncs))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return res, errors.New(strings.Join(problems, "; "))
	}
	return res, nil
}

// failover measures how long after killed every router applies a write
// that the surviving nodes acknowledged after the kill.
func (d *run) failover(ctx context.Context, killed time.Time) (time.Duration, error) {
	body, _ := json.Marshal(map[string]any{"changes": []change{{Op: "put", Kind: "probe", ID: "failover", Value: killed.String()}}})
	var out struct {
		Index uint64 `json:"index"`
	}
	next := 0
	err := waitFor(ctx, func() bool {
		admins := d.admins()
		if len(admins) == 0 {
			return false
		}
		next++
		return d.c.do(ctx, "POST", "http://"+admins[next%len(admins)]+"/v1/changes", "application/json", body, &out) == nil
	})
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.expected["probe/failover"] = killed.String()
	d.mu.Unlock()
	err = waitFor(ctx, func() bool {
		for _, p := range d.routers {
			var rs routerStatus
			if d.c.getJSON(ctx, "http://"+p.admin+"/v1/status", &rs) != nil || rs.LastIndex["ha"] < out.Index {
				return false
			}
		}
		return true
	})
	return time.Since(killed), err
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
