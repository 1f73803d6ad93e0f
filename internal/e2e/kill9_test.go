package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/model"
)

// ctlStatus and routerStatus are the fields of GET /v1/status these tests
// read, decoded from the binaries' JSON.
type ctlStatus struct {
	Mode       string `json:"mode"`
	Index      uint64 `json:"index"`
	Digest     string `json:"digest"`
	Entities   uint64 `json:"entities"`
	ChangeSets uint64 `json:"changeSets"`
}

type routerStatus struct {
	Connected bool              `json:"connected"`
	LastIndex map[string]uint64 `json:"lastIndex"`
	Digest    string            `json:"digest"`
	Entities  uint64            `json:"entities"`
	Counters  struct {
		Applied      uint64 `json:"applied"`
		Skipped      uint64 `json:"skipped"`
		FullResyncs  uint64 `json:"fullResyncs"`
		InitialSyncs uint64 `json:"initialSyncs"`
		Gaps         uint64 `json:"gaps"`
	} `json:"counters"`
	LastError string `json:"lastError"`
}

// TestKill9RoutersDuringIngest runs the real binaries — one controller,
// three routers — while writers post change sets through the admin API,
// SIGKILLs routers at random points of the stream, restarts each on its
// data directory, and checks once the writes stop that every router holds
// the controller's model, applied every change set exactly once, and
// never needed a full resync: a crash costs a replay, not a full state.
func TestKill9RoutersDuringIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	bins := binaries(t)
	rng := newRand(t)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()

	ctlAddr, ctlAdmin := itest.FreeAddr(t), itest.FreeAddr(t)
	itest.StartProcess(t, "controller", ctlAdmin, bins.Controller, "run",
		"--data-dir", t.TempDir(), "--listen", ctlAddr, "--admin", ctlAdmin, "--insecure", "--log-format", "json")
	cache := itest.WasmCacheDir(t)
	routers := make([]*itest.Process, 3)
	for i := range routers {
		id, admin := fmt.Sprintf("router-%d", i), itest.FreeAddr(t)
		routers[i] = itest.StartProcess(t, id, admin, bins.Router, "run", "--id", id,
			"--data-dir", t.TempDir(), "--controller", ctlAddr, "--admin", admin, "--insecure", "--cache-dir", cache)
	}
	// Every router takes its bootstrap full state of the empty store
	// before the first write, so every change set reaches it one by one
	// and its applied counter can be compared with the controller's.
	for _, r := range routers {
		poll(ctx, t, r.Name+"'s initial sync", func() (bool, error) {
			st, err := getRouter(ctx, r)
			return err == nil && st.Connected && st.Counters.InitialSyncs == 1, err
		})
	}

	w := startHTTPWriters(ctx, t, ctlAdmin, 3, rng)
	const kills = 6
	for k := range kills {
		r := routers[rng.IntN(len(routers))]
		// A random stretch of stream since the last kill, so the kill
		// lands mid-batch, mid-commit or between frames.
		var from uint64
		poll(ctx, t, r.Name+" to be up", func() (bool, error) {
			st, err := getRouter(ctx, r)
			from = st.Counters.Applied
			return err == nil && st.Connected, err
		})
		more := 1 + uint64(rng.IntN(150))
		poll(ctx, t, fmt.Sprintf("%s to apply %d more", r.Name, more), func() (bool, error) {
			st, err := getRouter(ctx, r)
			return err == nil && st.Counters.Applied >= from+more, err
		})
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		r.Kill(t)
		t.Logf("kill %d: %s after %d+ applied, %d change sets posted", k+1, r.Name, from+more, w.posted.Load())
		// Writes go on while it is down, so the restart has a log to replay.
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
		r.Restart(t)
	}
	// Some writes after the last restart, so the last one resumes a live
	// stream too.
	posted := w.posted.Load()
	poll(ctx, t, "writes after the last restart", func() (bool, error) { return w.posted.Load() >= posted+100, nil })
	w.stop()
	if t.Failed() {
		return
	}

	var cs ctlStatus
	if err := itest.GetJSON(ctx, ctlAdmin, "/v1/status", &cs); err != nil {
		t.Fatal(err)
	}
	if cs.ChangeSets != w.posted.Load() {
		t.Errorf("controller committed %d change sets, writers got %d acknowledged", cs.ChangeSets, w.posted.Load())
	}
	for _, r := range routers {
		var st routerStatus
		poll(ctx, t, r.Name+" to converge", func() (bool, error) {
			var err error
			st, err = getRouter(ctx, r)
			return err == nil && st.LastIndex["legacy"] == cs.Index && st.Digest == cs.Digest, err
		})
		c := st.Counters
		t.Logf("%s: %+v", r.Name, c)
		if c.Applied != cs.ChangeSets || c.FullResyncs != 0 || c.InitialSyncs != 1 || c.Gaps != 0 {
			t.Errorf("%s counters %+v: want applied %d (every change set exactly once), fullResyncs 0, initialSyncs 1, gaps 0",
				r.Name, c, cs.ChangeSets)
		}
		if st.Entities != cs.Entities {
			t.Errorf("%s has %d entities, controller %d", r.Name, st.Entities, cs.Entities)
		}
	}
}

func getRouter(ctx context.Context, r *itest.Process) (routerStatus, error) {
	var st routerStatus
	err := itest.GetJSON(ctx, r.Admin, "/v1/status", &st)
	return st, err
}

// httpWriters post change sets to POST /v1/changes until stopped.
type httpWriters struct {
	posted   atomic.Uint64 // acknowledged change sets
	stopping atomic.Bool
	wg       sync.WaitGroup
}

func startHTTPWriters(ctx context.Context, t *testing.T, admin string, n int, rng *rand.Rand) *httpWriters {
	w := &httpWriters{}
	// Before the servers' cleanups: a writer must not outlive the test.
	t.Cleanup(w.stop)
	for range n {
		wr := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		w.wg.Go(func() {
			for seq := uint64(0); !w.stopping.Load(); seq++ {
				body := struct {
					Changes []model.Change `json:"changes"`
				}{randomChanges(wr, seq)}
				if err := itest.PostJSON(ctx, admin, "/v1/changes", body, nil); err != nil {
					t.Errorf("POST /v1/changes: %v", err)
					return
				}
				w.posted.Add(1)
			}
		})
	}
	return w
}

// stop lets every writer finish its request in flight, so that posted
// counts exactly the change sets the controller committed.
func (w *httpWriters) stop() {
	w.stopping.Store(true)
	w.wg.Wait()
}
