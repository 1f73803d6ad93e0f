package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/model"
)

// barrierTimeout bounds one Barrier of a new leader; on failure the
// watcher tries again while this node still leads.
const barrierTimeout = 30 * time.Second

// errFollower is what the HA engine answers on a node that does not lead:
// nothing was appended, so the caller forwards the write to the leader.
var errFollower = errors.New("controller: this node is not the raft leader")

// haNode is this controller's raft membership: the raft node, the state
// machine that commits to the controller's store, the HA engine, and the
// leadership watcher that makes the engine accept writes only after a
// Barrier.
type haNode struct {
	id   string
	dir  string
	node *raftnode.Node
	fsm  *haFSM
	log  *slog.Logger

	mu sync.Mutex
	// ready is closed while this node leads and has applied everything
	// committed before its term (Barrier); nil when not ready.
	ready chan struct{}
	// changed is closed and replaced on every change of ready, so waiters
	// can watch for the next one.
	changed chan struct{}

	watching  bool
	watchDone chan struct{}
}

// startRaft starts the raft node of this data directory (RaftDir) as id at
// raftAddr, with the controller's store as its state machine. It neither
// bootstraps nor joins: a node with state rejoins its cluster, a new one
// waits to be bootstrapped or added.
func (c *Controller) startRaft(ctx context.Context, id, raftAddr string) (*haNode, error) {
	dir := filepath.Join(c.cfg.DataDir, RaftDir)
	rc := raftnode.Config{NodeID: id, RaftAddr: raftAddr, DataDir: dir, Logger: c.log, Registerer: c.reg}
	if c.cfg.RaftTransport != nil {
		t, err := c.cfg.RaftTransport(raftAddr)
		if err != nil {
			return nil, fmt.Errorf("controller: raft transport: %w", err)
		}
		rc.Transport = t
	} else if c.raftServerTLS != nil {
		sl, err := raftnode.NewTLSStreamLayer(raftAddr, "", c.raftServerTLS, c.raftClientTLS)
		if err != nil {
			return nil, fmt.Errorf("controller: raft TLS transport: %w", err)
		}
		rc.StreamLayer = sl
	}
	if c.cfg.RaftConfig != nil {
		c.cfg.RaftConfig(&rc)
	}
	fsm := &haFSM{st: c.st, hub: c.hub, met: c.met, log: c.log.With("part", "fsm"), hooks: c}
	node, err := raftnode.New(ctx, rc, fsm)
	if err != nil {
		if rc.StreamLayer != nil {
			_ = rc.StreamLayer.Close() // raftnode closes it only once it made the transport
		}
		return nil, fmt.Errorf("controller: start raft node %s: %w", id, err)
	}
	h := &haNode{id: id, dir: dir, node: node, fsm: fsm, log: c.log, changed: make(chan struct{}), watchDone: make(chan struct{})}
	return h, nil
}

// start begins following leadership. A migration starts it only after
// seeding: the watcher's Barrier appends to the raft log, which must stay
// below the seed index until the seed is in.
func (h *haNode) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.watching {
		h.watching = true
		go h.watch()
	}
}

// watch follows leadership: on acquisition it runs a Barrier (raft
// declares a leader before it knows what earlier terms committed) and only
// then marks the node ready for writes; on loss it marks it not ready. It
// ends when the node shuts down (LeaderChanges closes).
func (h *haNode) watch() {
	defer close(h.watchDone)
	for leads := range h.node.LeaderChanges() {
		h.setReady(false)
		if !leads {
			continue
		}
		for h.node.IsLeader() {
			ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
			err := h.node.Barrier(ctx)
			cancel()
			if err == nil {
				h.setReady(true)
				h.log.Info("raft leader ready for writes", "node", h.id, "term", h.node.Term(), "applied", h.node.AppliedIndex())
				break
			}
			if errors.Is(err, raftnode.ErrShutdown) || errors.Is(err, raftnode.ErrNotLeader) {
				break
			}
			h.log.Warn("barrier of a new leader failed; retrying", "err", err)
		}
	}
	h.setReady(false)
}

func (h *haNode) setReady(v bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v == (h.ready != nil) {
		return
	}
	if v {
		h.ready = make(chan struct{})
		close(h.ready)
	} else {
		h.ready = nil
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// isReady reports whether this node leads and has passed its Barrier.
func (h *haNode) isReady() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready != nil
}

// leaderWait bounds how long a write waits for an election to produce a
// leader before it is refused (503, retry).
const leaderWait = 10 * time.Second

// waitReady waits until this node is ready for writes, or returns
// errFollower as soon as it is clear that another node leads (or no
// leader emerged within leaderWait).
func (h *haNode) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(leaderWait)
	for {
		h.mu.Lock()
		ready, changed := h.ready, h.changed
		h.mu.Unlock()
		if ready != nil {
			return nil
		}
		if !h.node.IsLeader() {
			if id, _ := h.node.Leader(); id != "" || time.Now().After(deadline) {
				return errFollower
			}
		}
		// A leader waiting for its Barrier, or an election: short polls
		// also catch changes the watcher has not reported yet.
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("controller: waiting for the new leader's barrier: %w", ctx.Err())
		}
		t.Stop()
	}
}

// waitLeader waits until this node leads (a single-voter cluster elects
// itself within an election timeout).
func (h *haNode) waitLeader(ctx context.Context) error {
	for !h.node.IsLeader() {
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("controller: waiting for raft leadership: %w", ctx.Err())
		}
	}
	return nil
}

// apply runs one command through raft and returns the FSM's answer.
func (h *haNode) apply(ctx context.Context, cmd []byte) (applyResult, error) {
	_, resp, err := h.node.Apply(ctx, cmd)
	if err != nil {
		return applyResult{}, err
	}
	res, ok := resp.(applyResult)
	if !ok {
		return applyResult{}, fmt.Errorf("controller: unexpected state machine answer %T", resp)
	}
	return res, nil
}

// shutdown stops the raft node and waits for the watcher.
func (h *haNode) shutdown(ctx context.Context) error {
	err := h.node.Shutdown(ctx)
	h.mu.Lock()
	watching := h.watching
	h.mu.Unlock()
	if watching {
		select {
		case <-h.watchDone:
		case <-ctx.Done():
		}
	}
	return err
}

// removeHAState deletes this data directory's raft state and membership
// file: after a rolled-back migration, or once a rollback to legacy mode
// has finished on the node that continues as the legacy controller.
func removeHAState(dataDir string) error {
	if err := os.RemoveAll(filepath.Join(dataDir, RaftDir)); err != nil {
		return fmt.Errorf("controller: remove raft state: %w", err)
	}
	if err := os.Remove(filepath.Join(dataDir, MemberFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("controller: remove membership file: %w", err)
	}
	return syncDir(dataDir)
}

// haEngine is the HA index source. Writers queue their requests; a few
// workers (Config.ApplyPipeline) each take every request that is waiting,
// merge them into ONE change set (the changes concatenated, in queue
// order), replicate it as one raft entry and answer every request with
// that change set's header. Raft group-commits the entries in flight, the
// FSM commits each entry to the store and publishes it. So one raft entry,
// one fsync on each node and one FSM transaction serve many writers.
type haEngine struct {
	h   *haNode
	st  *store
	met *metrics
	log *slog.Logger

	reqs     chan *commitReq
	stopped  chan struct{}
	pipeline int
	maxBatch int
}

func newHAEngine(h *haNode, st *store, met *metrics, log *slog.Logger, maxBatch, pipeline int) *haEngine {
	return &haEngine{
		h: h, st: st, met: met, log: log,
		reqs:     make(chan *commitReq, maxBatch),
		stopped:  make(chan struct{}),
		pipeline: pipeline,
		maxBatch: maxBatch,
	}
}

func (e *haEngine) indexType() abi.IndexType { return abi.IndexHA }

func (e *haEngine) submit(ctx context.Context, changes []model.Change) (abi.Header, error) {
	size, err := checkChanges(changes, e.st.maxSetFrame)
	if err != nil {
		return abi.Header{}, err
	}
	if err := e.h.waitReady(ctx); err != nil {
		return abi.Header{}, err
	}
	r := &commitReq{ctx: ctx, changes: changes, size: size, done: make(chan commitRes, 1)}
	return enqueue(ctx, e.reqs, e.stopped, r)
}

func (e *haEngine) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range e.pipeline {
		wg.Go(func() { e.worker(ctx) })
	}
	wg.Wait()
	close(e.stopped)
	for {
		select {
		case r := <-e.reqs:
			r.done <- commitRes{err: ErrNotServing}
		default:
			return
		}
	}
}

// worker takes what is waiting, up to maxBatch requests and one frame's
// worth of changes, and replicates it as one entry. A request that would
// overflow the entry is carried over to the next one.
func (e *haEngine) worker(ctx context.Context) {
	var carry *commitReq
	batch := make([]*commitReq, 0, e.maxBatch)
	for {
		if ctx.Err() != nil {
			if carry != nil {
				carry.done <- commitRes{err: ErrNotServing}
			}
			return
		}
		batch = batch[:0]
		if carry != nil {
			batch, carry = append(batch, carry), nil
		} else {
			select {
			case r := <-e.reqs:
				batch = append(batch, r)
			case <-ctx.Done():
				return
			}
		}
		size := batch[0].size
	gather:
		for len(batch) < e.maxBatch {
			select {
			case r := <-e.reqs:
				// Every request's worst-case frame includes a header; the
				// sum is therefore an upper bound of the merged frame.
				if size+r.size > e.st.maxSetFrame {
					carry = r
					break gather
				}
				batch = append(batch, r)
				size += r.size
			default:
				break gather
			}
		}
		e.replicate(ctx, batch)
	}
}

// replicate applies batch as one change set and answers every request.
func (e *haEngine) replicate(ctx context.Context, batch []*commitReq) {
	var changes []model.Change
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- commitRes{err: fmt.Errorf("controller: submit: %w", err)}
			continue
		}
		changes = append(changes, r.changes...)
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	answer := func(res commitRes) {
		for _, r := range live {
			r.done <- res
		}
	}
	cmd, err := encodeChangeSetCmd(changes)
	if err != nil {
		answer(commitRes{err: fmt.Errorf("%w: %w", ErrInvalidRequest, err)})
		return
	}
	e.met.haRequestsPerEntry.Observe(float64(len(live)))
	res, err := e.h.apply(ctx, cmd)
	switch {
	case errors.Is(err, raftnode.ErrNotLeader):
		// Not appended: the requests can go to the leader.
		answer(commitRes{err: errFollower})
	case err != nil:
		e.log.Warn("raft apply failed", "requests", len(live), "err", err)
		answer(commitRes{err: fmt.Errorf("%w: %w", ErrNotServing, err)})
	default:
		answer(commitRes{hdr: res.hdr, err: res.err})
	}
}

// checkChanges validates a write before it is queued, so that a bad
// request never reaches a shared transaction or raft entry, and returns
// the worst-case size of its change set frame.
func checkChanges(changes []model.Change, maxSetFrame int) (int, error) {
	if len(changes) == 0 {
		return 0, fmt.Errorf("%w: no changes", ErrInvalidRequest)
	}
	if err := model.ValidateChanges(changes); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	size, err := worstCaseSetFrame(changes)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if size > maxSetFrame {
		return 0, fmt.Errorf("%w: its frame would be %d bytes, limit %d", ErrChangeSetTooLarge, size, maxSetFrame)
	}
	return size, nil
}

// enqueue hands r to an engine's queue and waits for the answer.
func enqueue(ctx context.Context, reqs chan<- *commitReq, stopped <-chan struct{}, r *commitReq) (abi.Header, error) {
	select {
	case reqs <- r:
	case <-stopped:
		return abi.Header{}, ErrNotServing
	case <-ctx.Done():
		return abi.Header{}, fmt.Errorf("controller: submit: %w", ctx.Err())
	}
	select {
	case res := <-r.done:
		return res.hdr, res.err
	case <-stopped:
		// The engine answers every request it took before it stops.
		select {
		case res := <-r.done:
			return res.hdr, res.err
		default:
			return abi.Header{}, ErrNotServing
		}
	case <-ctx.Done():
		// The request may still commit; the caller cannot know. That is
		// the contract of any database write whose caller gives up.
		return abi.Header{}, fmt.Errorf("controller: submit: %w (the change set may still be committed)", ctx.Err())
	}
}
