package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

// engine is an index source: it turns write requests into durably
// committed change sets, numbered in its index space, and publishes them
// to the hub. The legacy engine is a persisted counter; the HA engine
// (ha.go) replicates merged change sets through raft and its FSM (fsm.go)
// commits them through the same store and hub.
type engine interface {
	// indexType is the index space of the change sets it commits.
	indexType() abi.IndexType
	// submit commits changes as one change set and returns its header
	// once the commit is durable. The changes are the engine's from then
	// on: the caller must not modify them.
	submit(ctx context.Context, changes []model.Change) (abi.Header, error)
	// run serves submits until ctx ends; submits still queued then fail
	// with ErrNotServing.
	run(ctx context.Context)
}

// commitReq is one submit waiting for the writer.
type commitReq struct {
	ctx     context.Context
	changes []model.Change
	size    int
	done    chan commitRes // buffered: the writer never blocks on it
}

type commitRes struct {
	hdr abi.Header
	err error
}

// legacyEngine numbers change sets with the persisted counter (index + 1)
// and commits them with group commit: a single writer goroutine takes
// every request that is waiting and commits them together in one bbolt
// transaction (one fsync), each with its own change set and index.
type legacyEngine struct {
	st  *store
	hub *hub
	met *metrics
	log *slog.Logger

	reqs     chan *commitReq
	stopped  chan struct{} // closed when run has returned
	maxBatch int
	// maxBatchBytes bounds the change set frames of one transaction, so
	// that a burst of large writes does not build one enormous commit.
	maxBatchBytes int

	// beforeCommit, if set (tests), runs in the writer before each
	// transaction with the number of requests in it.
	beforeCommit func(n int)
}

// maxBatchBytes is legacyEngine.maxBatchBytes: a few full-size frames.
const maxBatchBytes = 4 * wire.DefaultMaxFrame

func newLegacyEngine(st *store, h *hub, met *metrics, log *slog.Logger, maxBatch int) *legacyEngine {
	return &legacyEngine{
		st: st, hub: h, met: met, log: log,
		// A queue as deep as one batch: submitters beyond it wait in
		// submit, where their context still counts.
		reqs:          make(chan *commitReq, maxBatch),
		stopped:       make(chan struct{}),
		maxBatch:      maxBatch,
		maxBatchBytes: maxBatchBytes,
	}
}

func (e *legacyEngine) indexType() abi.IndexType { return abi.IndexLegacy }

// submit validates the changes before queueing them, so that a bad
// request never reaches the shared transaction and never delays others.
func (e *legacyEngine) submit(ctx context.Context, changes []model.Change) (abi.Header, error) {
	size, err := checkChanges(changes, e.st.maxSetFrame)
	if err != nil {
		return abi.Header{}, err
	}
	r := &commitReq{ctx: ctx, changes: changes, size: size, done: make(chan commitRes, 1)}
	return enqueue(ctx, e.reqs, e.stopped, r)
}

func (e *legacyEngine) run(ctx context.Context) {
	defer func() {
		close(e.stopped)
		for {
			select {
			case r := <-e.reqs:
				r.done <- commitRes{err: ErrNotServing}
			default:
				return
			}
		}
	}()
	batch := make([]*commitReq, 0, e.maxBatch)
	for {
		// Checked first: select picks at random among ready cases, and a
		// stopped engine must not commit.
		if ctx.Err() != nil {
			return
		}
		batch = batch[:0]
		select {
		case r := <-e.reqs:
			batch = append(batch, r)
		case <-ctx.Done():
			return
		}
		bytes := batch[0].size
	gather:
		for len(batch) < e.maxBatch && bytes < e.maxBatchBytes {
			select {
			case r := <-e.reqs:
				batch = append(batch, r)
				bytes += r.size
			default:
				break gather
			}
		}
		if e.beforeCommit != nil {
			e.beforeCommit(len(batch))
		}
		e.commit(ctx, batch)
	}
}

// commit writes batch in one transaction and answers every request.
func (e *legacyEngine) commit(ctx context.Context, batch []*commitReq) {
	res := make([]commitRes, len(batch))
	var entries []*logEntry
	var index uint64
	start := time.Now()
	// Once taken, a batch commits even if the controller is shutting down:
	// a half-cancelled commit would only fail every request in it.
	err := e.st.update(context.WithoutCancel(ctx), func(tx *model.Tx) error {
		entries = entries[:0]
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if m.mode != abi.IndexLegacy {
			return fmt.Errorf("%w: %s, the legacy engine commits only in legacy mode", ErrWrongMode, m.mode)
		}
		for i, r := range batch {
			if err := r.ctx.Err(); err != nil {
				res[i].err = fmt.Errorf("controller: submit: %w", err)
				continue
			}
			last := m.last[abi.IndexLegacy]
			cs := &wire.ChangeSet{
				Header:  abi.Header{Index: last + 1, PrevIndex: last, Type: abi.IndexLegacy, Timeline: m.timeline},
				Changes: r.changes,
			}
			le, err := e.st.appendChangeSet(tx, &m, cs)
			if errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrChangeSetTooLarge) {
				// Refused before anything was written: the others go on.
				res[i].err = err
				continue
			}
			if err != nil {
				return err
			}
			entries = append(entries, le)
			res[i].hdr = cs.Header
		}
		if err := e.st.trim(tx, &m); err != nil {
			return err
		}
		index = m.index()
		return writeMeta(tx, &m)
	})
	e.met.commitDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		e.met.commitFailures.Inc()
		e.log.Error("commit failed", "changeSets", len(batch), "err", err)
		for i := range batch {
			batch[i].done <- commitRes{err: fmt.Errorf("controller: commit: %w", err)}
		}
		return
	}
	if len(entries) > 0 {
		e.met.batchSize.Observe(float64(len(entries)))
		e.met.committed.Add(float64(len(entries)))
		e.hub.publish(entries, index)
	}
	for i := range batch {
		batch[i].done <- res[i]
	}
}
