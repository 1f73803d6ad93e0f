package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/internal/itest"
	"github.com/indexgate/indexgate/model"
)

// guard bounds each test's waits. It is a deadlock guard, not a speed
// assertion: nothing here checks how long anything took.
const guard = 2 * time.Minute

// built holds the binaries TestMain's directory receives. They are built
// on first use, so a benchmark-only run (-run '^$') builds nothing.
var built struct {
	dir  string
	once sync.Once
	bins itest.Binaries
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "indexgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	built.dir = dir
	return m.Run()
}

// binaries returns the controller and router built from this checkout,
// skipping the test when there is no go tool to build them with.
func binaries(t *testing.T) itest.Binaries {
	t.Helper()
	built.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		built.bins, built.err = itest.BuildBinaries(ctx, built.dir)
	})
	if errors.Is(built.err, itest.ErrNoGoTool) {
		t.Skip("no go tool to build the binaries with")
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bins
}

// poll calls cond until it reports true, failing the test when ctx ends
// first. cond's last error is reported then, not earlier: servers that
// are starting refuse connections for a while.
func poll(ctx context.Context, t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s: %v (last error: %v)", what, ctx.Err(), last)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// keySpace is how many distinct entities the writers touch: small enough
// that digests stay cheap, large enough that puts and deletes interleave.
const keySpace = 300

// randomChanges is one change set of 1–3 puts and deletes. Deleting an
// absent entity is valid and changes nothing, which the digests check too.
func randomChanges(rng *rand.Rand, seq uint64) []model.Change {
	cs := make([]model.Change, 1+rng.IntN(3))
	for i := range cs {
		id := "e" + strconv.Itoa(rng.IntN(keySpace))
		if rng.IntN(5) == 0 {
			cs[i] = model.Change{Op: model.OpDelete, Kind: "svc", ID: id}
			continue
		}
		cs[i] = itest.Put("svc", id, fmt.Sprintf("v%d.%d", seq, i))
	}
	return cs
}

// commitN commits n change sets to ctl, one at a time.
func commitN(t testing.TB, ctl *itest.Controller, rng *rand.Rand, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	for i := range n {
		if _, err := ctl.Commit(ctx, randomChanges(rng, uint64(i))); err != nil {
			t.Fatalf("commit %d of %d: %v", i+1, n, err)
		}
	}
}

// metric reads one sample from a Prometheus text endpoint: name is the
// metric with its labels as exposed, e.g. `x_total{reason="malformed"}`.
func metric(t testing.TB, admin, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			t.Fatalf("metric %s: %v", name, err)
		}
		return f
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	t.Fatalf("metric %s not exposed", name)
	return 0
}

// newRand is a seeded generator; the seed is logged so a failure can be
// replayed with E2E_SEED.
func newRand(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("E2E_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("E2E_SEED: %v", err)
		}
	}
	t.Logf("seed %d (set E2E_SEED to repeat)", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
