package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// Steps of the persisted migration record (meta key "migration").
const (
	// recSeeding: a migration to HA mode started on NodeID; raft state
	// may be partial and the mode change is not applied. A restart of that
	// node rolls the migration back.
	recSeeding = "seeding"
	// recHA: the mode change to HA mode was applied (by the FSM).
	recHA = "ha"
	// recRolledBack: the cluster rolled back to legacy mode; NodeID
	// continues as the legacy controller, every other member retires.
	recRolledBack = "rolled-back"
)

// migrationRecord is the persisted state of the last migration.
type migrationRecord struct {
	Step      string    `json:"step"`
	NodeID    string    `json:"nodeId"`
	RaftAddr  string    `json:"raftAddr,omitempty"`
	LastIndex uint64    `json:"lastIndex"`
	StartedAt time.Time `json:"startedAt"`
}

// Steps a running migration reports in MigrationStatus.Step.
const (
	StepStartingRaft = "starting-raft" // persisting the record, starting and electing raft (writes go on)
	StepPausing      = "pausing"       // stopping writes, waiting for in-flight ones
	StepWaitingAcks  = "waiting-acks"  // waiting for routers to ack the last index
	StepSeeding      = "seeding"       // starting raft, seeding it with the store
	StepModeChange   = "mode-change"   // applying the mode change through raft
	StepRollback     = "rollback"      // applying the rollback through raft
	StepRetiring     = "retiring"      // waiting for the followers to apply the rollback
	StepStoppingRaft = "stopping-raft" // the new legacy controller leaves raft
	StepDone         = "done"          // writes resumed in the new mode
	StepFailed       = "failed"        // rolled back to the old mode; see Error
)

// progressOf is the rough percentage a step stands for.
func progressOf(step string) int {
	switch step {
	case StepStartingRaft:
		return 5
	case StepPausing:
		return 20
	case StepWaitingAcks:
		return 25
	case StepSeeding:
		return 40
	case StepRollback:
		return 60
	case StepRetiring:
		return 75
	case StepModeChange:
		return 80
	case StepStoppingRaft:
		return 90
	case StepDone, StepFailed:
		return 100
	}
	return 0
}

// MigrateRequest asks for a migration: to "ha" on a running legacy
// controller (NodeID and RaftAddr name the raft node it becomes), or to
// "legacy" on the leader of an HA cluster.
type MigrateRequest struct {
	To       abi.IndexType `json:"to"`
	NodeID   string        `json:"nodeId,omitempty"`
	RaftAddr string        `json:"raftAddr,omitempty"`
}

// MigrationStatus is the progress of this controller's current or last
// migration.
type MigrationStatus struct {
	// To is the target mode; none before any migration.
	To abi.IndexType `json:"to"`
	// Step is one of the Step* constants ("" before any migration).
	Step string `json:"step"`
	// Progress is a rough percentage.
	Progress int `json:"progress"`
	// RoutersAcked of RoutersTotal connected routers acknowledged the last
	// index of the old mode; Stragglers names the others.
	RoutersAcked int      `json:"routersAcked"`
	RoutersTotal int      `json:"routersTotal"`
	Stragglers   []string `json:"stragglers,omitempty"`
	// LastIndex is the last index of the old mode.
	LastIndex uint64    `json:"lastIndex"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	// PauseMs is how long writes were paused (set when writes resume).
	PauseMs float64 `json:"pauseMs"`
	// Error says why the migration failed (Step failed).
	Error string `json:"error,omitempty"`
	// SnapshotBytes is the size of the store image seeded into raft (to
	// HA only; set when seeding starts).
	SnapshotBytes int64 `json:"snapshotBytes,omitempty"`
}

// member is this data directory's HA membership (MemberFile).
type member struct {
	NodeID   string `json:"nodeId"`
	RaftAddr string `json:"raftAddr"`
}

func readMember(dataDir string) (*member, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, MemberFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("controller: %s: %w", MemberFile, err)
	}
	var m member
	if err := json.Unmarshal(b, &m); err != nil || m.NodeID == "" {
		return nil, fmt.Errorf("controller: %s is damaged: %v", MemberFile, err)
	}
	return &m, nil
}

func writeMember(dataDir string, m member) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, MemberFile)
	if err := writeSynced(path+".tmp", bytes.NewReader(b)); err != nil {
		return fmt.Errorf("controller: write %s: %w", MemberFile, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("controller: write %s: %w", MemberFile, err)
	}
	return syncDir(dataDir)
}

// errCrashPoint ends a migration at a test's crash point without any
// cleanup, as if the process had died there.
var errCrashPoint = errors.New("controller: stopped at a crash point")

// crash runs the test hook for a migration step.
func (c *Controller) crash(step string) error {
	if c.crashPoint != nil && c.crashPoint(step) {
		return fmt.Errorf("%w: %s", errCrashPoint, step)
	}
	return nil
}

// initMode decides, at start-up, whether this controller runs legacy or HA
// mode, and finishes or rolls back a migration a crash interrupted
// (docs/migration.md, "Crashes").
func (c *Controller) initMode(ctx context.Context, m meta) error {
	mem, err := readMember(c.cfg.DataDir)
	if err != nil {
		return err
	}
	rec := m.migration
	switch {
	case m.mode == abi.IndexLegacy && rec != nil && rec.Step == recSeeding && (mem == nil || mem.NodeID == rec.NodeID):
		// Nothing of HA mode was ever acknowledged or streamed: the mode
		// change is what publishes it, and it was not applied.
		c.log.Warn("a migration to HA mode was interrupted before its mode change was applied; rolling back to legacy mode",
			"node", rec.NodeID, "lastIndex", rec.LastIndex, "startedAt", rec.StartedAt)
		if err := c.dropHA(ctx); err != nil {
			return err
		}
		mem = nil
	case m.mode == abi.IndexLegacy && rec != nil && rec.Step == recRolledBack && mem != nil:
		if mem.NodeID != rec.NodeID {
			return fmt.Errorf("%w: node %s retired when its cluster rolled back to legacy mode on node %s at index %d; "+
				"its store is stale: remove %s to reuse the data directory", ErrRetired, mem.NodeID, rec.NodeID, rec.LastIndex, c.cfg.DataDir)
		}
		c.log.Warn("finishing an interrupted rollback to legacy mode: removing the raft state", "node", rec.NodeID, "lastIndex", rec.LastIndex)
		if err := removeHAState(c.cfg.DataDir); err != nil {
			return err
		}
		mem = nil
	}
	if !c.cfg.HA && mem == nil && m.mode != abi.IndexHA {
		c.role.Store(int32(roleLegacy))
		c.gate = newGate(newLegacyEngine(c.st, c.hub, c.met, c.log, c.cfg.MaxCommitBatch), c.cfg.PauseTimeout)
		return nil
	}

	// HA mode: who is this node?
	id, addr := c.cfg.NodeID, c.cfg.RaftAddr
	switch {
	case mem != nil && c.cfg.HA && id != mem.NodeID:
		return fmt.Errorf("%w: --node-id %s, but this data directory belongs to HA node %s", ErrInvalidConfig, id, mem.NodeID)
	case mem != nil:
		id = mem.NodeID
		if addr == "" {
			addr = mem.RaftAddr
		}
	case m.mode == abi.IndexHA:
		return fmt.Errorf("%w: the store is in HA mode but %s is missing: this data directory is not an HA member, "+
			"and a copy of a member's store cannot run on its own", ErrWrongMode, MemberFile)
	case !c.cfg.Bootstrap && c.cfg.Join == "":
		return fmt.Errorf("%w: a new HA node needs --bootstrap (a new cluster from this store) or --join (an existing cluster)", ErrInvalidConfig)
	case addr == "":
		return fmt.Errorf("%w: a new HA node needs --raft-addr", ErrInvalidConfig)
	}
	c.setNodeID(id)
	c.role.Store(int32(roleHA))
	if mem == nil && c.cfg.Bootstrap {
		// An offline migration: no router is connected yet, so there is
		// nothing to pause or wait for.
		started := time.Now()
		h, err := c.prepareHA(ctx, id, addr, started)
		if err == nil {
			err = c.seedHA(ctx, h, m.index(), started)
		}
		if err != nil {
			if !errors.Is(err, errCrashPoint) {
				_ = c.abandonHA(ctx, h)
			}
			return fmt.Errorf("controller: bootstrap: %w", err)
		}
		c.gate = newGate(c.newHAEngine(h), c.cfg.PauseTimeout)
		c.log.Info("HA cluster bootstrapped from this store", "node", id, "raftAddr", h.node.Addr(), "lastLegacyIndex", m.index())
		return nil
	}
	if mem == nil {
		if err := writeMember(c.cfg.DataDir, member{NodeID: id, RaftAddr: addr}); err != nil {
			return err
		}
		c.joinURL, _ = joinURL(c.cfg.Join)
	}
	h, err := c.startRaft(ctx, id, addr)
	if err != nil {
		return err
	}
	c.ha.Store(h)
	h.start()
	c.gate = newGate(c.newHAEngine(h), c.cfg.PauseTimeout)
	if m.mode == abi.IndexHA && c.joinURL != "" {
		c.joinURL = "" // already caught up once: a member restarting
	}
	return nil
}

func (c *Controller) newHAEngine(h *haNode) *haEngine {
	return newHAEngine(h, c.st, c.met, c.log, c.cfg.MaxCommitBatch, c.cfg.ApplyPipeline)
}

// dropHA rolls back a migration that did not reach its mode change: the
// raft state and membership go, the record is cleared, the store stays the
// legacy store it was.
func (c *Controller) dropHA(ctx context.Context) error {
	if err := removeHAState(c.cfg.DataDir); err != nil {
		return err
	}
	return c.st.update(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if m.mode != abi.IndexLegacy {
			return fmt.Errorf("controller: cannot roll back a migration: the store is already in %s mode", m.mode)
		}
		m.migration = nil
		return writeMeta(tx, &m)
	})
}

// abandonHA undoes enterHA after a failure: stop the raft node, drop its
// state.
func (c *Controller) abandonHA(ctx context.Context, h *haNode) error {
	if h != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
		_ = h.shutdown(sctx)
		cancel()
	}
	c.ha.Store(nil)
	return c.dropHA(context.WithoutCancel(ctx))
}

// prepareHA starts this legacy node's raft cluster: it persists the
// migration record (from here on a crash rolls the migration back),
// writes the membership file, starts raft, bootstraps a single-voter
// cluster and waits until this node leads. Writes go on meanwhile: the
// election takes an election timeout, which is why it happens before the
// pause. On error the caller abandons the returned node.
func (c *Controller) prepareHA(ctx context.Context, id, raftAddr string, startedAt time.Time) (*haNode, error) {
	err := c.st.update(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if m.mode != abi.IndexLegacy {
			return fmt.Errorf("%w: the store is in %s mode", ErrMigration, m.mode)
		}
		m.migration = &migrationRecord{Step: recSeeding, NodeID: id, RaftAddr: raftAddr, StartedAt: startedAt}
		return writeMeta(tx, &m)
	})
	if err != nil {
		return nil, err
	}
	if err := c.crash("recorded"); err != nil {
		return nil, err
	}
	if err := writeMember(c.cfg.DataDir, member{NodeID: id, RaftAddr: raftAddr}); err != nil {
		return nil, err
	}
	h, err := c.startRaft(ctx, id, raftAddr)
	if err != nil {
		return nil, err
	}
	c.ha.Store(h)
	if err := h.node.Bootstrap(ctx); err != nil {
		return h, err
	}
	if err := h.waitLeader(ctx); err != nil {
		return h, err
	}
	if err := c.crash("bootstrapped"); err != nil {
		return h, err
	}
	return h, nil
}

// seedHA makes the store, paused at legacy index L, the state of the
// cluster h leads: it seeds raft with an image of the store (so raft
// indexes continue above L) and applies the mode change, which records
// ModeChange{legacy → ha, L, L} at (L, 1) and switches the store to HA
// mode.
func (c *Controller) seedHA(ctx context.Context, h *haNode, L uint64, startedAt time.Time) error {
	c.setStep(StepSeeding)
	// The seed gives every member that joins later the store image (the
	// hole it leaves in the log makes them install the snapshot). When L
	// is below what bootstrap and election wrote to the log, the seed goes
	// just above the log: raft indexes are above L anyway.
	if err := h.node.Barrier(ctx); err != nil {
		return err
	}
	seedAt := max(L, h.node.LastIndex()+2) // SeedFromSnapshot's own barrier takes one
	img, size, err := c.st.imageOf(ctx)
	if err != nil {
		return fmt.Errorf("controller: seed image: %w", err)
	}
	c.setMig(func(s *MigrationStatus) { s.SnapshotBytes = size })
	c.met.migrationSnapshot.Set(float64(size))
	err = h.node.SeedFromSnapshot(ctx, seedAt, img, size)
	_ = img.Close()
	if err != nil {
		return err
	}
	if err := c.crash("seeded"); err != nil {
		return err
	}
	c.setStep(StepModeChange)
	cmd, err := encodeJSONCmd(cmdMigrate, migrateCmd{LastIndex: L, Node: c.selfInfo(h.id, h.node.Addr()), StartedAt: startedAt})
	if err != nil {
		return err
	}
	res, err := h.apply(ctx, cmd)
	if err == nil {
		err = res.err
	}
	if err != nil {
		// An Apply whose outcome is unknown may still have committed.
		if m, merr := c.readMeta(context.WithoutCancel(ctx)); merr != nil || m.mode != abi.IndexHA {
			return fmt.Errorf("controller: mode change: %w", err)
		}
	}
	if err := c.crash("mode-changed"); err != nil {
		return err
	}
	h.start()
	return nil
}

// selfInfo is this node's directory entry.
func (c *Controller) selfInfo(id, raftAddr string) nodeInfo {
	return nodeInfo{ID: id, RaftAddr: raftAddr, AdminAddr: advertise(c.adminLn.Addr()), ListenAddr: advertise(c.routerLn.Addr())}
}

// advertise turns a bound address into one other hosts can dial: an
// unspecified IP (":7070") becomes the host name.
func advertise(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// Migrate runs a migration and returns when it is done or has failed (and
// been rolled back to the old mode). Only one runs at a time; errors that
// refuse the request before anything changed wrap ErrMigration.
func (c *Controller) Migrate(ctx context.Context, req MigrateRequest) error {
	if err := c.beginMigration(req); err != nil {
		return err
	}
	return c.runMigration(ctx, req)
}

// beginMigration checks req against the controller's state and claims the
// single migration slot.
func (c *Controller) beginMigration(req MigrateRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || c.closed || c.stop == nil {
		return fmt.Errorf("%w: the controller is not running", ErrMigration)
	}
	if c.migrating {
		return fmt.Errorf("%w: a migration is already running", ErrMigration)
	}
	switch req.To {
	case abi.IndexHA:
		if role(c.role.Load()) != roleLegacy || abi.IndexType(c.mode.Load()) != abi.IndexLegacy {
			return fmt.Errorf("%w: this controller is not a legacy controller", ErrMigration)
		}
		if req.NodeID == "" {
			return fmt.Errorf("%w: nodeId is required", ErrMigration)
		}
		if _, _, err := net.SplitHostPort(req.RaftAddr); err != nil {
			return fmt.Errorf("%w: raftAddr %q: %v", ErrMigration, req.RaftAddr, err)
		}
	case abi.IndexLegacy:
		h := c.ha.Load()
		if role(c.role.Load()) != roleHA || abi.IndexType(c.mode.Load()) != abi.IndexHA || h == nil {
			return fmt.Errorf("%w: this controller is not a member of an HA cluster in HA mode", ErrMigration)
		}
		if !h.isReady() {
			return fmt.Errorf("%w: only the raft leader rolls back: %w", ErrMigration, errFollower)
		}
	default:
		return fmt.Errorf("%w: \"to\" must be \"ha\" or \"legacy\"", ErrMigration)
	}
	c.migrating = true
	return nil
}

// runMigration runs a claimed migration.
func (c *Controller) runMigration(ctx context.Context, req MigrateRequest) (err error) {
	defer func() {
		c.mu.Lock()
		c.migrating = false
		c.mu.Unlock()
		if err != nil {
			c.setMig(func(s *MigrationStatus) { s.Step, s.Error = StepFailed, err.Error() })
			c.log.Error("migration failed", "to", req.To.String(), "err", err)
		}
	}()
	started := time.Now()
	first := StepStartingRaft
	if req.To == abi.IndexLegacy {
		first = StepPausing
	}
	c.setMig(func(s *MigrationStatus) { *s = MigrationStatus{To: req.To, Step: first, StartedAt: started} })
	c.log.Info("migration started", "to", req.To.String(), "node", req.NodeID, "raftAddr", req.RaftAddr)
	var h *haNode
	if req.To == abi.IndexHA {
		if h, err = c.prepareHA(ctx, req.NodeID, req.RaftAddr, started); err != nil {
			if !errors.Is(err, errCrashPoint) {
				if aerr := c.abandonHA(ctx, h); aerr != nil {
					c.log.Error("rolling back the failed migration", "err", aerr)
				}
			}
			return err
		}
	}
	c.setStep(StepPausing)
	paused := time.Now()
	if err := c.gate.pause(ctx); err != nil {
		if h != nil {
			_ = c.abandonHA(ctx, h)
		}
		return err
	}
	if req.To == abi.IndexHA {
		err = c.migrateToHA(ctx, h, req, started)
	} else {
		err = c.rollbackToLegacy(ctx, started)
	}
	if errors.Is(err, errCrashPoint) {
		return err // a simulated crash leaves everything as it is
	}
	if err != nil {
		c.gate.resume(nil)
		return err
	}
	pause := time.Since(paused)
	c.met.migrationPause.Set(pause.Seconds())
	ms := float64(pause.Microseconds()) / 1000
	c.setMig(func(s *MigrationStatus) { s.Step, s.PauseMs = StepDone, ms })
	c.log.Info("migration done; writes resumed", "to", req.To.String(), "pauseMs", ms)
	return nil
}

// migrateToHA is docs/migration.md, "Legacy to HA", steps 1 to 4, with
// raft started and the gate already paused.
func (c *Controller) migrateToHA(ctx context.Context, h *haNode, req MigrateRequest, started time.Time) error {
	c.stopEngine()
	fail := func(err error) error {
		if aerr := c.abandonHA(ctx, h); aerr != nil {
			c.log.Error("rolling back the failed migration", "err", aerr)
		}
		c.startEngine(newLegacyEngine(c.st, c.hub, c.met, c.log, c.cfg.MaxCommitBatch))
		return err
	}
	m, err := c.readMeta(ctx)
	if err != nil {
		return fail(err)
	}
	L := m.index()
	c.setMig(func(s *MigrationStatus) { s.LastIndex = L })
	if err := c.waitAcks(ctx, abi.IndexLegacy, L); err != nil {
		return fail(err)
	}
	if err := c.crash("acked"); err != nil {
		return err
	}
	if err := c.seedHA(ctx, h, L, started); err != nil {
		if errors.Is(err, errCrashPoint) {
			return err
		}
		return fail(err)
	}
	c.setNodeID(req.NodeID)
	c.role.Store(int32(roleHA))
	e := c.newHAEngine(h)
	c.startEngine(e)
	c.gate.resume(e)
	return nil
}

// rollbackToLegacy is docs/migration.md, "Rollback", on the leader, with
// the gate already paused.
func (c *Controller) rollbackToLegacy(ctx context.Context, started time.Time) error {
	h := c.ha.Load()
	c.stopEngine()
	restart := func() { c.startEngine(c.newHAEngine(h)) }
	m, err := c.readMeta(ctx)
	if err != nil {
		restart()
		return err
	}
	H := m.index()
	c.setMig(func(s *MigrationStatus) { s.LastIndex = H })
	if err := c.waitAcks(ctx, abi.IndexHA, H); err != nil {
		restart()
		return err
	}
	c.setStep(StepRollback)
	cmd, err := encodeJSONCmd(cmdRollback, rollbackCmd{NodeID: h.id, StartedAt: started})
	if err != nil {
		restart()
		return err
	}
	res, err := h.apply(ctx, cmd)
	if err == nil {
		err = res.err
	}
	if err != nil {
		if m, merr := c.readMeta(context.WithoutCancel(ctx)); merr != nil || m.mode != abi.IndexLegacy {
			restart()
			return fmt.Errorf("controller: rollback: %w", err)
		}
	}
	// The FSM made this node the legacy controller (storeChanged); the
	// followers retire as they apply the same entry.
	if err := c.crash("rolled-back"); err != nil {
		return err
	}
	c.setStep(StepRetiring)
	c.waitFollowersLegacy(ctx, h)
	c.setStep(StepStoppingRaft)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
	err = h.shutdown(sctx)
	cancel()
	if err != nil {
		c.log.Warn("raft shutdown after the rollback", "err", err)
	}
	c.ha.Store(nil)
	if err := removeHAState(c.cfg.DataDir); err != nil {
		// The store is legacy and this node serves as the legacy
		// controller; a restart removes the leftovers (initMode).
		c.log.Error("removing the raft state after the rollback", "err", err)
	}
	e := newLegacyEngine(c.st, c.hub, c.met, c.log, c.cfg.MaxCommitBatch)
	c.startEngine(e)
	c.gate.resume(e)
	return nil
}

// waitAcks waits, at most Config.AckTimeout, until every connected router
// acknowledged index of type t, and records the progress. Routers that do
// not are reported as stragglers; they catch up later by replay.
func (c *Controller) waitAcks(ctx context.Context, t abi.IndexType, index uint64) error {
	c.setStep(StepWaitingAcks)
	deadline := time.NewTimer(c.cfg.AckTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		acked, total, stragglers := c.routers.ackedAt(t, index)
		c.setMig(func(s *MigrationStatus) { s.RoutersAcked, s.RoutersTotal, s.Stragglers = acked, total, stragglers })
		if acked == total {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			c.log.Warn("routers did not acknowledge the last index in time; they catch up by replay",
				"index", index, "type", t.String(), "acked", acked, "total", total, "stragglers", stragglers)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("controller: waiting for router acks: %w", ctx.Err())
		}
	}
}

// waitFollowersLegacy waits, at most Config.AckTimeout, until every other
// member reports legacy mode (it applied the rollback), so that they have
// streamed the mode change to their routers before this node leaves raft.
func (c *Controller) waitFollowersLegacy(ctx context.Context, h *haNode) {
	nodes, err := c.nodes(ctx)
	if err != nil {
		c.log.Warn("reading the node directory", "err", err)
		return
	}
	deadline := time.Now().Add(c.cfg.AckTimeout)
	pending := map[string]nodeInfo{}
	for id, n := range nodes {
		if id != h.id {
			pending[id] = n
		}
	}
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		for id, n := range pending {
			st, err := fetchStatus(ctx, n.AdminAddr)
			if err == nil && st.Mode == abi.IndexLegacy {
				delete(pending, id)
			}
		}
		if len(pending) > 0 {
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
	if len(pending) > 0 {
		ids := make([]string, 0, len(pending))
		for id := range pending {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		c.log.Warn("members did not report the rollback in time; they retire when they apply it", "members", ids)
	}
}

// storeChanged implements fsmHooks: the FSM changed the store's mode or
// migration record, or replaced the store.
func (c *Controller) storeChanged(m meta) {
	c.mode.Store(uint32(m.mode))
	rec := m.migration
	if m.mode != abi.IndexLegacy || rec == nil || rec.Step != recRolledBack || role(c.role.Load()) != roleHA {
		return
	}
	if rec.NodeID == c.nodeID() {
		// This node continues as the legacy controller; its sessions keep
		// streaming (the mode change, then legacy change sets).
		c.role.Store(int32(roleLegacy))
		return
	}
	c.role.Store(int32(roleRetired))
	c.log.Warn("the cluster rolled back to legacy mode; this node retires and redirects its routers",
		"legacyController", rec.NodeID, "lastIndex", rec.LastIndex)
	c.bg.Go(c.retire)
}

// retire stops the raft node of a member retired by a rollback. Its
// sessions end by themselves once they have streamed the mode change
// (session.stream), and writes are forwarded to the legacy controller.
func (c *Controller) retire() {
	h := c.ha.Swap(nil)
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	defer cancel()
	c.stopEngine()
	if err := h.shutdown(ctx); err != nil {
		c.log.Warn("raft shutdown of a retired node", "err", err)
	}
}

func (c *Controller) setMig(f func(*MigrationStatus)) {
	c.migMu.Lock()
	defer c.migMu.Unlock()
	f(&c.mig)
	c.mig.Progress = progressOf(c.mig.Step)
}

func (c *Controller) setStep(step string) {
	c.setMig(func(s *MigrationStatus) { s.Step = step })
	c.log.Info("migration step", "step", step)
}

func (c *Controller) migration() MigrationStatus {
	c.migMu.Lock()
	defer c.migMu.Unlock()
	s := c.mig
	s.Stragglers = slices.Clone(s.Stragglers)
	return s
}
