package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/model"
)

// TestValidateCatchesTamperedRouter is OpenZiti's `validate
// router-data-model` case with the real router: an entity is written into a
// stopped router's bbolt store behind its back; after the restart the router
// resumes at the same position (nothing tells it), and only the controller's
// validation, comparing digests at the same position, finds the difference.
// The untouched router must still match.
func TestValidateCatchesTamperedRouter(t *testing.T) {
	rng := newRand(t)
	ctl := itest.StartController(t, itest.ControllerConfig(t.TempDir()))
	good := itest.StartRouter(t, itest.RouterConfig(t, "good", t.TempDir(), ctl.RouterAddr().String()))
	badCfg := itest.RouterConfig(t, "tampered", t.TempDir(), ctl.RouterAddr().String())
	bad := itest.StartRouter(t, badCfg)
	commitN(t, ctl, rng, 20)
	st := ctl.MustStatus(t)
	itest.WaitRouterAt(t, good, st)
	itest.WaitRouterAt(t, bad, st)

	ctx, cancel := context.WithTimeout(context.Background(), itest.Guard)
	defer cancel()
	if v, err := ctl.Validate(ctx); err != nil || !v.OK {
		t.Fatalf("before tampering: validation %+v, err %v; want every router to match", v, err)
	}

	bad.Stop(t)
	s, err := model.Open(filepath.Join(badCfg.DataDir, "router.db"), model.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *model.Tx) error {
		return tx.Apply([]model.Change{itest.Put("service", "injected", "not from the controller")})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	bad = itest.StartRouter(t, badCfg)
	// Wait until it is connected again at the controller's position.
	poll(ctx, t, "the tampered router reconnecting", func() (bool, error) {
		rs := bad.MustStatus(t)
		return rs.Connected && rs.LastIndex["legacy"] == st.Index, nil
	})

	v, err := ctl.Validate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK {
		t.Fatalf("validation passed with a tampered router: %+v", v)
	}
	matched := map[string]bool{}
	for _, r := range v.Routers {
		matched[r.ID] = r.Match
	}
	if !matched["good"] || matched["tampered"] || len(matched) != 2 {
		t.Fatalf("per-router matches %v, want good=true tampered=false", matched)
	}
}
