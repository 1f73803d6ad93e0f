package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/wire"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   error
	}{
		{"valid", func(*Config) {}, nil},
		{"no data dir", func(c *Config) { c.DataDir = "" }, ErrInvalidConfig},
		{"no TLS and not insecure", func(c *Config) { c.Insecure = false }, ErrTLSNotConfigured},
		{"tiny max frame", func(c *Config) { c.MaxFrame = 1024 }, ErrInvalidConfig},
		{"negative ring", func(c *Config) { c.RingSize = -1 }, ErrInvalidConfig},
		{"negative timeout", func(c *Config) { c.WriteTimeout = -1 }, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.mutate(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				if _, err := New(cfg); !errors.Is(err, tt.want) {
					t.Fatalf("New = %v, want %v", err, tt.want)
				}
			}
		})
	}
}

func TestWritePathValidation(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxRequestBytes = 4 << 10
	c := startController(t, cfg)
	commit(t, c, put("svc", "seed", "v"))
	before := status(t, c)

	big := strings.Repeat("x", 8<<10)
	tests := []struct {
		name   string
		body   string
		detail string
	}{
		{"not JSON", `{"changes":`, "not a valid change request"},
		{"garbage", `hello`, "not a valid change request"},
		{"array instead of object", `[{"op":"put","kind":"k","id":"i"}]`, "not a valid change request"},
		{"unknown top-level field", `{"changes":[{"op":"put","kind":"k","id":"i","value":"v"}],"dryRun":true}`, `unknown field "dryRun"`},
		{"unknown change field", `{"changes":[{"op":"put","kind":"k","id":"i","value":"v","ttl":3}]}`, `unknown field "ttl"`},
		{"wrong type", `{"changes":[{"op":"put","kind":"k","id":7}]}`, "not a valid change request"},
		{"empty body", ``, "not a valid change request"},
		{"no changes field", `{}`, `"changes" is empty`},
		{"empty changes", `{"changes":[]}`, `"changes" is empty`},
		{"null changes", `{"changes":null}`, `"changes" is empty`},
		{"unknown op", `{"changes":[{"op":"upsert","kind":"k","id":"i","value":"v"}]}`, `unknown "upsert"`},
		{"missing op", `{"changes":[{"kind":"k","id":"i","value":"v"}]}`, "op: empty"},
		{"empty kind", `{"changes":[{"op":"put","kind":"","id":"i","value":"v"}]}`, "kind"},
		{"empty id", `{"changes":[{"op":"put","kind":"k","id":"","value":"v"}]}`, "id"},
		{"NUL in id", `{"changes":[{"op":"put","kind":"k","id":"a\u0000b","value":"v"}]}`, "id"},
		{"delete with a value", `{"changes":[{"op":"delete","kind":"k","id":"i","value":"v"}]}`, "must be empty"},
		{"second change invalid, first valid", `{"changes":[{"op":"put","kind":"k","id":"ok","value":"v"},{"op":"put","kind":"","id":"i"}]}`, "change 1"},
		{"trailing data", `{"changes":[{"op":"put","kind":"k","id":"i","value":"v"}]} {}`, "trailing data"},
		{"oversize body", `{"changes":[{"op":"put","kind":"k","id":"i","value":"` + big + `"}]}`, "exceeds 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := httpDo(t, c, http.MethodPost, "/v1/changes", []byte(tt.body))
			if code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", code, body)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, tt.detail) {
				t.Fatalf("error body %s, want a message containing %q", body, tt.detail)
			}
		})
	}
	after := status(t, c)
	if after.Index != before.Index || after.Digest != before.Digest || after.ChangeSets != before.ChangeSets {
		t.Fatalf("rejected writes changed the store: before %+v, after %+v", before, after)
	}

	t.Run("valid write", func(t *testing.T) {
		code, body := httpDo(t, c, http.MethodPost, "/v1/changes",
			[]byte(`{"changes":[{"op":"put","kind":"svc","id":"a","value":"v1"},{"op":"delete","kind":"svc","id":"seed"}]}`))
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		var res struct {
			Index     uint64 `json:"index"`
			IndexType string `json:"indexType"`
			Timeline  string `json:"timeline"`
		}
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		if res.Index != before.Index+1 || res.IndexType != "legacy" || res.Timeline != before.Timeline.String() {
			t.Fatalf("response %s, want index %d legacy on %s", body, before.Index+1, before.Timeline)
		}
		if got := entitiesOf(t, c, ""); len(got) != 1 || got["svc/a"] != "v1" {
			t.Fatalf("entities %v", got)
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		if code, _ := httpDo(t, c, http.MethodGet, "/v1/changes", nil); code != http.StatusMethodNotAllowed {
			t.Fatalf("GET /v1/changes: %d", code)
		}
	})
}

func TestChangeSetTooLargeForAFrame(t *testing.T) {
	c := startController(t, testConfig(t))
	// 17 values of 1 MiB: each change is valid, the change set's frame is
	// above the 16 MiB every router accepts.
	var chs []model.Change
	for i := range 17 {
		chs = append(chs, put("blob", fmt.Sprint(i), strings.Repeat("x", model.MaxValueLen)))
	}
	if _, err := c.Commit(ctxT(t), chs); !errors.Is(err, ErrChangeSetTooLarge) {
		t.Fatalf("Commit = %v, want ErrChangeSetTooLarge", err)
	}
	if st := status(t, c); st.Index != 0 || st.Entities != 0 {
		t.Fatalf("nothing may be applied: %+v", st)
	}
}

// TestIndexSurvivesRestart is the regression test for OpenZiti #3860: a
// controller that came back at index 0 after a restart.
func TestIndexSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	cfg.NoSync = false
	c := startController(t, cfg)
	last := commitN(t, c, "a", 5)
	before := status(t, c)
	c.stop(t)

	c2 := startController(t, cfg)
	after := status(t, c2)
	if after.Index != last || after.Timeline != before.Timeline || after.ClusterID != before.ClusterID ||
		after.Digest != before.Digest || after.ChangeSets != 5 || after.Mode != abi.IndexLegacy {
		t.Fatalf("after restart %+v, before %+v", after, before)
	}
	if next := commit(t, c2, put("svc", "b", "v")); next != last+1 {
		t.Fatalf("first index after restart %d, want %d", next, last+1)
	}
	// A router that was up to date before the restart resumes without a
	// full state.
	r := connect(t, c2, hello("r1", legacyAt(last, before.Timeline)))
	if r.welcome.Resume != wire.ResumeReplay || r.welcome.Index != last+1 {
		t.Fatalf("welcome %+v", r.welcome)
	}
	if got := r.until(last + 1); len(got) != 1 || got[0].Header.PrevIndex != last {
		t.Fatalf("replayed %+v", got)
	}
}

func TestNewStoresGetDistinctTimelines(t *testing.T) {
	a := startController(t, testConfig(t))
	b := startController(t, testConfig(t))
	sa, sb := status(t, a), status(t, b)
	if sa.Timeline.IsZero() || sa.Timeline == sb.Timeline || sa.ClusterID == sb.ClusterID || sa.ClusterID == "" {
		t.Fatalf("timelines %s %s, cluster ids %q %q", sa.Timeline, sb.Timeline, sa.ClusterID, sb.ClusterID)
	}
}

func TestGroupCommitConcurrentWriters(t *testing.T) {
	c := startController(t, testConfig(t))
	const writers, each = 32, 20
	type result struct {
		writer, seq int
		index       uint64
	}
	results := make(chan result, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := c.Commit(context.Background(), []model.Change{
					put("w", fmt.Sprintf("%d-%d", w, i), fmt.Sprintf("v%d", i)),
					put("last", fmt.Sprint(w), fmt.Sprint(i)),
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				results <- result{w, i, res.Index}
			}
		}()
	}
	wg.Wait()
	close(results)
	const n = writers * each
	byIndex := map[uint64]result{}
	lastOf := map[int]uint64{}
	for r := range results {
		if prev, dup := byIndex[r.index]; dup {
			t.Fatalf("index %d given to %+v and %+v", r.index, prev, r)
		}
		byIndex[r.index] = r
		// One writer's requests are sequential, so its indexes increase.
		if r.index <= lastOf[r.writer] {
			t.Fatalf("writer %d got index %d after %d", r.writer, r.index, lastOf[r.writer])
		}
		lastOf[r.writer] = r.index
	}
	if len(byIndex) != n {
		t.Fatalf("%d results, want %d", len(byIndex), n)
	}
	for i := uint64(1); i <= n; i++ {
		if _, ok := byIndex[i]; !ok {
			t.Fatalf("index %d missing: indexes are not 1..%d", i, n)
		}
	}
	st := status(t, c)
	if st.Index != n || st.ChangeSets != n || st.LogChangeSets != n || st.Entities != n+writers {
		t.Fatalf("status %+v", st)
	}
	// The log holds every change set, each with the changes of the request
	// that was answered with its index, chained by prevIndex.
	r := connect(t, c, hello("checker", legacyAt(0, st.Timeline)))
	sets := r.until(n)
	for _, cs := range sets {
		want := byIndex[cs.Header.Index]
		if len(cs.Changes) != 2 || cs.Changes[0].ID != fmt.Sprintf("%d-%d", want.writer, want.seq) {
			t.Fatalf("log entry %d holds %+v, want writer %d seq %d", cs.Header.Index, cs.Changes, want.writer, want.seq)
		}
	}
	if d := digestOf(t, r.entities); d != st.Digest {
		t.Fatalf("replayed log digest %s, store digest %s", d, st.Digest)
	}
}

// TestGroupCommitBatchesWaitingRequests holds the writer on its first
// transaction until more requests queue up, and checks that they are then
// committed together, one transaction, each with its own index.
func TestGroupCommitBatchesWaitingRequests(t *testing.T) {
	c, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	eng := c.gate.engine().(*legacyEngine)
	release := make(chan struct{})
	var sizes []int
	var mu sync.Mutex
	eng.beforeCommit = func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release
		}
	}
	rc := runController(t, c)
	const queued = 10
	var wg sync.WaitGroup
	indexes := make(chan uint64, queued+1)
	submit := func(i int) {
		defer wg.Done()
		res, err := rc.Commit(context.Background(), []model.Change{put("k", fmt.Sprint(i), "v")})
		if err != nil {
			t.Error(err)
			return
		}
		indexes <- res.Index
	}
	wg.Add(1)
	go submit(0)
	waitFor(t, "the first transaction to start", func() bool { mu.Lock(); defer mu.Unlock(); return len(sizes) == 1 })
	for i := 1; i <= queued; i++ {
		wg.Add(1)
		go submit(i)
	}
	waitFor(t, "requests to queue", func() bool { return len(eng.reqs) == queued })
	close(release)
	wg.Wait()
	close(indexes)
	seen := map[uint64]bool{}
	for i := range indexes {
		seen[i] = true
	}
	if len(seen) != queued+1 {
		t.Fatalf("indexes %v", seen)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != queued {
		t.Fatalf("transactions of %v requests, want [1 %d]", sizes, queued)
	}
}

func TestCommitBeforeRunAndAfterClose(t *testing.T) {
	c, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	// A Commit made before Run waits for it, so an embedder may start Run
	// in a goroutine and write right away.
	done := make(chan error, 1)
	go func() {
		_, err := c.Commit(ctxT(t), []model.Change{put("k", "early", "v")})
		done <- err
	}()
	rc := runController(t, c)
	if err := <-done; err != nil {
		t.Fatalf("Commit before Run: %v", err)
	}
	rc.stop(t)
	if _, err := c.Commit(ctxT(t), []model.Change{put("k", "late", "v")}); !errors.Is(err, ErrNotServing) {
		t.Fatalf("Commit after Close = %v, want ErrNotServing", err)
	}

	// Close without Run fails a waiting Commit instead of leaving it hanging.
	c2, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := c2.Commit(ctxT(t), []model.Change{put("k", "never", "v")})
		done <- err
	}()
	waitFor(t, "the commit to queue", func() bool { return len(c2.gate.engine().(*legacyEngine).reqs) == 1 })
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrNotServing) {
		t.Fatalf("Commit pending at Close = %v, want ErrNotServing", err)
	}
}

func TestStatusMetricsAndEntities(t *testing.T) {
	c := startController(t, testConfig(t))
	commit(t, c, put("svc", "a", "1"), put("route", "r", "2"))
	commit(t, c, put("svc", "b", "3"))
	if code, body := httpDo(t, c, http.MethodGet, "/healthz", nil); code != http.StatusOK {
		t.Fatalf("healthz %d %s", code, body)
	}
	code, body := httpDo(t, c, http.MethodGet, "/v1/status", nil)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "index", "timeline", "entities", "digest", "changeSets", "clusterId", "logFloor", "routers"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q: %s", k, body)
		}
	}
	if st["mode"] != "legacy" || st["index"] != 2.0 || st["entities"] != 3.0 || st["changeSets"] != 2.0 {
		t.Fatalf("status %s", body)
	}
	if got := entitiesOf(t, c, "?kind=svc"); len(got) != 2 || got["svc/b"] != "3" {
		t.Fatalf("entities of kind svc: %v", got)
	}
	if got := entitiesOf(t, c, "?kind=none"); len(got) != 0 {
		t.Fatalf("entities of kind none: %v", got)
	}
	if got := entitiesOf(t, c, ""); len(got) != 3 {
		t.Fatalf("entities: %v", got)
	}
	code, body = httpDo(t, c, http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("metrics %d", code)
	}
	for _, want := range []string{
		"indexgate_controller_change_sets_committed_total 2",
		"indexgate_controller_commit_batch_size_count",
		"indexgate_controller_commit_duration_seconds_count",
		"indexgate_controller_routers_connected 0",
		"indexgate_controller_full_states_sent_total 0",
		"indexgate_controller_replays_total 0",
		`indexgate_controller_frames_rejected_total{reason="malformed"} 0`,
		"indexgate_controller_index 2",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
