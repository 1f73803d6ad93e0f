package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
)

var (
	strictOnce sync.Once
	strictWasm []byte
	strictErr  error
)

// strictHA is examples/strictha built for wasip1: the built-in HA rules
// plus its own, so with "max-term-jump=1" it refuses change sets the
// built-in applies (a raft term jumping by more than 1).
func strictHA(t testing.TB) []byte {
	t.Helper()
	strictOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			return
		}
		dir, err := os.MkdirTemp("", "router-strictha-")
		if err != nil {
			strictErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "strictha.wasm")
		cmd := exec.Command(gobin, "build", "-trimpath", "-buildvcs=false", "-buildmode=c-shared", "-o", out,
			"github.com/indexgate/indexgate/examples/strictha")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if msg, err := cmd.CombinedOutput(); err != nil {
			strictErr = errors.New("go build examples/strictha: " + err.Error() + "\n" + string(msg))
			return
		}
		strictWasm, strictErr = os.ReadFile(out)
	})
	if strictErr != nil {
		t.Fatal(strictErr)
	}
	if strictWasm == nil {
		t.Skip("go tool not found: cannot build examples/strictha")
	}
	return strictWasm
}

// adminCall sends a request with the test token and returns the status
// and body.
func adminCall(t testing.TB, method, url string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestShadowPromoteRollback canaries examples/strictha beside the built-in
// HA filter through the admin API, promotes it and rolls it back.
func TestShadowPromoteRollback(t *testing.T) {
	strict := strictHA(t)
	fc := newFakeController(t)
	dir := t.TempDir()
	cfg := testConfig(dir, fc.listen())
	cfg.AdminTokenFile = writeToken(t, t.TempDir(), testToken)
	cfg.Trust.AllowUnsigned = true
	tr := startRouter(t, cfg, nil)
	waitFirstFullState(t, tr)
	fc.appendN(2)
	fc.switchMode(abi.IndexHA)
	fc.appendN(2)
	waitConverged(t, tr, fc)
	api := "http://" + tr.AdminAddr() + "/v1/filters/ha/"
	haSum, _ := builtin.SHA256Hex(abi.IndexHA)

	if code, body := adminCall(t, http.MethodPost, api+"promote", nil); code != http.StatusConflict {
		t.Errorf("promote without a candidate: %d %s", code, body)
	}
	if code, body := adminCall(t, http.MethodPost, api+"rollback", nil); code != http.StatusConflict {
		t.Errorf("rollback without a previous module: %d %s", code, body)
	}
	if code, body := adminCall(t, http.MethodDelete, api+"shadow", nil); code != http.StatusNotFound {
		t.Errorf("stop without a candidate: %d %s", code, body)
	}
	if code, body := adminCall(t, http.MethodPut, api+"shadow?options=max-term-jump=1", strict); code != http.StatusOK ||
		!strings.Contains(body, `"name": "example-strictha"`) {
		t.Fatalf("shadow: %d %s", code, body)
	}

	// The cluster's term jumps from 1 to 5: the built-in applies, the
	// candidate would have refused. Later change sets agree again.
	fc.setTerm(5)
	fc.appendN(3)
	s := waitConverged(t, tr, fc)
	if s.Counters.Applied != 7 {
		t.Fatalf("counters %+v: the candidate must not change what is applied", s.Counters)
	}
	sh, ok := s.Shadow["ha"]
	if !ok {
		t.Fatalf("no shadow in the status: %+v", s.Shadow)
	}
	if sh.Disagreements != 1 || sh.Decisions != 3 || sh.Resyncs != 1 || sh.Failed != "" || sh.Trust != "allowed-unsigned" ||
		len(sh.FirstDisagreements) != 1 || sh.SHA256 != hexSHA256(strict) {
		t.Fatalf("shadow status %+v", sh)
	}
	d := sh.FirstDisagreements[0]
	if d.Header.Index != fc.position(abi.IndexHA)-2 || d.Header.Term != 5 || d.Active != "apply/ok" || d.Candidate != "resync/term" {
		t.Errorf("disagreement %+v", d)
	}
	_, metricsText := adminCall(t, http.MethodGet, "http://"+tr.AdminAddr()+"/metrics", nil)
	for _, want := range []string{
		`indexgate_filter_shadow_decisions_total{type="ha"} 3`,
		`indexgate_filter_shadow_disagreements_total{type="ha"} 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Promote: the candidate serves, from where the built-in stopped,
	// and is persisted with its options.
	code, body := adminCall(t, http.MethodPost, api+"promote", nil)
	if code != http.StatusOK || !strings.Contains(body, hexSHA256(strict)) {
		t.Fatalf("promote: %d %s", code, body)
	}
	persisted := filepath.Join(dir, "filters", "ha.wasm")
	if b, _ := os.ReadFile(persisted); !bytes.Equal(b, strict) {
		t.Error("the promoted module was not persisted")
	}
	if o, _ := os.ReadFile(filepath.Join(dir, "filters", "ha.options")); string(o) != "max-term-jump=1" {
		t.Errorf("persisted options %q", o)
	}
	fc.appendN(2)
	s = waitConverged(t, tr, fc)
	if f := s.Filters["ha"]; f.SHA256 != hexSHA256(strict) || f.PreviousSHA256 != haSum || len(s.Shadow) != 0 {
		t.Errorf("after promote: filter %+v, shadow %+v", f, s.Shadow)
	}

	// Roll back to the built-in: the persisted module goes away.
	if code, body := adminCall(t, http.MethodPost, api+"rollback", nil); code != http.StatusOK {
		t.Fatalf("rollback: %d %s", code, body)
	}
	if _, err := os.Stat(persisted); !os.IsNotExist(err) {
		t.Errorf("the rolled-back module is still persisted: %v", err)
	}
	fc.appendN(2)
	s = waitConverged(t, tr, fc)
	if f := s.Filters["ha"]; f.SHA256 != haSum || f.PreviousSHA256 != hexSHA256(strict) || f.Trust != "builtin" {
		t.Errorf("after rollback: filter %+v", f)
	}
	if s.Counters.Applied != 11 {
		t.Errorf("counters %+v", s.Counters)
	}

	// A candidate that cannot serve the type is refused and nothing
	// changes; a stopped candidate reports its totals.
	if code, body := adminCall(t, http.MethodPut, api+"shadow", builtin.Legacy()); code != http.StatusUnprocessableEntity {
		t.Errorf("legacy module as ha candidate: %d %s", code, body)
	}
	if len(tr.status(t).Shadow) != 0 {
		t.Error("a refused candidate is shadowing")
	}
}

// TestPromoteRollbackUnderLoad streams change sets while a candidate is
// shadowed, promoted and rolled back, over and over: every change set
// must be applied exactly once.
func TestPromoteRollbackUnderLoad(t *testing.T) {
	fc := newFakeController(t)
	fc.batchMax = 16
	cfg := testConfig(t.TempDir(), fc.listen())
	cfg.Trust.AllowUnsigned = true
	tr := startRouter(t, cfg, nil)
	waitFirstFullState(t, tr)
	custom := withCustomSection(builtin.Legacy(), "swap") // compiled by the hot swap tests

	// Change sets keep coming until the switches are over.
	stop, done := make(chan struct{}), make(chan struct{})
	var total uint64
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			fc.appendAtOnce(3)
			total += 3
			time.Sleep(time.Millisecond)
		}
	}()
	ctx := context.Background()
	for range 2 {
		if _, err := tr.fstore.shadow(ctx, abi.IndexLegacy, "candidate", custom, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := tr.fstore.promote(ctx, abi.IndexLegacy); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := tr.fstore.rollback(ctx, abi.IndexLegacy); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	s := waitConverged(t, tr, fc)
	if s.Counters != (Counters{Applied: total, InitialSyncs: 1}) {
		t.Errorf("counters %+v, want each of %d change sets applied once", s.Counters, total)
	}
	t.Logf("%d change sets during 2 promotions and 2 rollbacks", total)
	if n := metricValue(t, tr.reg, "indexgate_filter_swaps_total", "type", "legacy", "result", "ok"); n != 4 {
		t.Errorf("%v swaps, want 4 (two promotions, two rollbacks)", n)
	}
}
