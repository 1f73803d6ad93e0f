package e2e

import (
	"testing"

	"github.com/indexgate/indexgate/controller"
	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/router"
)

// TestResumeReplayOrFullResync stops a router, writes while it is away and
// restarts it on its data directory: while the controller's log still
// holds what follows the router's position it resumes by replay (no full
// state, every change set applied one by one); once retention has trimmed
// it, with exactly one full resync. The phases run in order on the same
// controller and router directory, across the boundary.
func TestResumeReplayOrFullResync(t *testing.T) {
	const (
		retention  = 50
		replays    = "indexgate_controller_replays_total"
		fullStates = "indexgate_controller_full_states_sent_total"
	)
	rng := newRand(t)
	cfg := itest.ControllerConfig(t.TempDir())
	cfg.Retention = retention
	ctl := itest.StartController(t, cfg)
	admin := ctl.AdminAddr().String()
	rcfg := itest.RouterConfig(t, "r1", t.TempDir(), ctl.RouterAddr().String())
	r := itest.StartRouter(t, rcfg)
	itest.WaitRouterAt(t, r, ctl.MustStatus(t))

	applied := uint64(0)
	// Not subtests: the router outlives each phase, and a subtest's
	// cleanups would stop it.
	for _, ph := range []struct {
		name string
		// online is written while the router runs, offline while it is
		// stopped, before the restart.
		online, offline int
		// replay: the restart resumes by replay; else by a full state.
		replay      bool
		fullResyncs uint64 // the router's counter after the phase
	}{
		{name: "well within the log", online: 20, offline: 30, replay: true},
		{name: "exactly the retention", online: 5, offline: retention, replay: true},
		{name: "one beyond the retention", online: 0, offline: retention + 1, fullResyncs: 1},
		{name: "far beyond the retention", online: 7, offline: 3 * retention, fullResyncs: 2},
		{name: "within the log after resyncs", online: 1, offline: 10, replay: true, fullResyncs: 2},
	} {
		commitN(t, ctl, rng, ph.online)
		applied += uint64(ph.online)
		at := itest.WaitRouterAt(t, r, ctl.MustStatus(t)).LastIndex["legacy"]
		r.Stop(t)

		replays0, fulls0 := metric(t, admin, replays), metric(t, admin, fullStates)
		commitN(t, ctl, rng, ph.offline)
		st := ctl.MustStatus(t)
		if inLog := st.LogFloor <= at; inLog != ph.replay {
			t.Fatalf("%s: log floor %d, router at %d: the setup does not match the phase", ph.name, st.LogFloor, at)
		}
		r = itest.StartRouter(t, rcfg)
		rs := itest.WaitRouterAt(t, r, st)

		wantResume, wantReplays, wantFulls := "full-state", 0.0, 1.0
		if ph.replay {
			applied += uint64(ph.offline)
			wantResume, wantReplays, wantFulls = "replay", 1, 0
		}
		if want := (router.Counters{Applied: applied, FullResyncs: ph.fullResyncs, InitialSyncs: 1}); rs.Counters != want {
			t.Errorf("%s: router counters %+v, want %+v", ph.name, rs.Counters, want)
		}
		if got := resumeOf(ctl.MustStatus(t), rcfg.ID); got != wantResume {
			t.Errorf("%s: controller reports resume %q, want %q", ph.name, got, wantResume)
		}
		if d := metric(t, admin, replays) - replays0; d != wantReplays {
			t.Errorf("%s: %s grew by %v, want %v", ph.name, replays, d, wantReplays)
		}
		if d := metric(t, admin, fullStates) - fulls0; d != wantFulls {
			t.Errorf("%s: %s grew by %v, want %v", ph.name, fullStates, d, wantFulls)
		}
	}
}

// resumeOf is how the controller says router id's last session started.
func resumeOf(st controller.Status, id string) string {
	for _, r := range st.Routers {
		if r.ID == id {
			return r.Resume
		}
	}
	return ""
}
