package router

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/abi"
)

// TestKill9 runs the router as a child process (this test binary, running
// TestKill9Child), SIGKILLs it at random instants while the controller
// streams, restarts it on the same data directory, and finally checks
// that every change set was applied exactly once and the model matches.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts router processes")
	}
	fc := newFakeController(t)
	addr := fc.listen()
	dir := t.TempDir()

	// The first full state in-process: every change set after it must
	// then be applied one by one, so Applied counts them exactly.
	tr := startRouter(t, testConfig(dir, addr), nil)
	waitFirstFullState(t, tr)
	tr.stop(t)

	const kills, perKill = 4, 100
	var wg sync.WaitGroup
	defer wg.Wait()
	for kill := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Child$")
		cmd.Env = append(os.Environ(), kill9ChildEnv+"=1", "ROUTER_KILL9_DIR="+dir, "ROUTER_KILL9_ADDR="+addr,
			"INDEXGATE_TEST_WASM_CACHE="+testCacheDir)
		// The child exits when this pipe closes, so it cannot outlive a
		// parent that failed or was killed.
		lifeline, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			lifeline.Close()
			_ = cmd.Process.Kill()
		})
		hellos := len(fc.helloList())
		waitFor(t, "the child router to connect", func() bool { return len(fc.helloList()) > hellos })
		// Change sets trickle in, one commit each, while the child runs
		// and after it died.
		wg.Go(func() {
			for i := range perKill {
				if kill == 2 && i == perKill/2 {
					fc.switchMode(abi.IndexHA)
				}
				fc.appendN(1)
				time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
			}
		})
		acks := fc.acks.Load()
		waitFor(t, "the child router to ack", func() bool { return fc.acks.Load() > acks+2 })
		time.Sleep(time.Duration(rand.N(3000)) * time.Microsecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("kill %d: %d change sets, %d acks so far", kill, fc.changeSets(), fc.acks.Load())
	}
	wg.Wait()

	tr = startRouter(t, testConfig(dir, addr), nil)
	s := waitConverged(t, tr, fc)
	if want := (Counters{Applied: fc.changeSets(), InitialSyncs: 1}); s.Counters != want {
		t.Errorf("counters %+v, want %+v: every change set applied exactly once across %d kills", s.Counters, want, kills)
	}
}

// TestKill9Child is the router process TestKill9 kills; it does nothing
// when run on its own.
func TestKill9Child(t *testing.T) {
	if os.Getenv(kill9ChildEnv) == "" {
		t.Skip("run by TestKill9")
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3) // the parent is gone
	}()
	cfg := testConfig(os.Getenv("ROUTER_KILL9_DIR"), os.Getenv("ROUTER_KILL9_ADDR"))
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Run(context.Background()) // until SIGKILL
}
