package controller

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/wire"
)

func TestBackupRestoreChangesTimeline(t *testing.T) {
	cfg := testConfig(t)
	c := startController(t, cfg)
	commit(t, c, put("svc", "a", "1"))
	commit(t, c, put("svc", "b", "2"))
	idx := commit(t, c, put("svc", "c", "3"))
	atBackup := status(t, c)

	// A backup of the running controller through the admin API.
	code, backup := httpDo(t, c, http.MethodGet, "/v1/backup", nil)
	if code != http.StatusOK || len(backup) == 0 {
		t.Fatalf("GET /v1/backup: %d, %d bytes", code, len(backup))
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(file, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	// A stopped-store backup refuses a running controller's store.
	if _, err := BackupStore(ctxT(t), cfg.DataDir, &bytes.Buffer{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("BackupStore on a running controller = %v, want ErrInUse", err)
	}
	if _, err := Restore(ctxT(t), cfg.DataDir, file); !errors.Is(err, ErrInUse) {
		t.Fatalf("Restore on a running controller = %v, want ErrInUse", err)
	}

	// History moves on after the backup; a router follows it.
	last := commitN(t, c, "later", 4)
	r := connect(t, c, hello("r1", legacyAt(idx, atBackup.Timeline)))
	r.until(last)
	c.stop(t)

	res, err := Restore(ctxT(t), cfg.DataDir, file)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if res.Index != idx || res.OldTimeline != atBackup.Timeline || res.Timeline == atBackup.Timeline || res.Entities != 3 {
		t.Fatalf("restore result %+v (backup at %d on %s)", res, idx, atBackup.Timeline)
	}
	if res.Replaced == "" {
		t.Fatal("the previous store was not kept")
	}
	if _, err := os.Stat(res.Replaced); err != nil {
		t.Fatal(err)
	}

	c2 := startController(t, cfg)
	st := status(t, c2)
	if st.Index != idx || st.Timeline != res.Timeline || st.Digest != atBackup.Digest || st.ClusterID != atBackup.ClusterID ||
		st.LogFloor != idx || st.LogChangeSets != 0 {
		t.Fatalf("restored status %+v", st)
	}
	// The router is ahead of the restored index on the old timeline: it
	// must take a full state, not skip the indexes it thinks it has.
	r2 := connect(t, c2, hello("r1", legacyAt(last, atBackup.Timeline)))
	if r2.welcome.Resume != wire.ResumeFullState || r2.welcome.Timeline != res.Timeline {
		t.Fatalf("welcome after restore %+v", r2.welcome)
	}
	// Even a router exactly at the backup's index on the old timeline.
	r3 := connect(t, c2, hello("r3", legacyAt(idx, atBackup.Timeline)))
	if r3.welcome.Resume != wire.ResumeFullState {
		t.Fatalf("welcome after restore %+v", r3.welcome)
	}
	begin, _, _ := r2.fullState()
	if begin.Index != idx || begin.Timeline != res.Timeline || len(r2.entities) != 3 {
		t.Fatalf("full state after restore %+v, %d entities", begin, len(r2.entities))
	}
	// The next change set continues the restored counter on the new
	// timeline, and the router follows it.
	next := commit(t, c2, put("svc", "d", "4"))
	if got := r2.until(next); next != idx+1 || got[0].Header.Timeline != res.Timeline {
		t.Fatalf("first change set after restore %+v", got)
	}
}

func TestBackupStoppedStoreAndRestoreErrors(t *testing.T) {
	cfg := testConfig(t)
	c := startController(t, cfg)
	idx := commitN(t, c, "x", 3)
	tl := status(t, c).Timeline
	c.stop(t)

	var buf bytes.Buffer
	n, err := BackupStore(ctxT(t), cfg.DataDir, &buf)
	if err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("BackupStore = %d, %v (%d bytes buffered)", n, err, buf.Len())
	}
	file := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Restoring into an empty data directory works too.
	fresh := t.TempDir()
	res, err := Restore(ctxT(t), fresh, file)
	if err != nil || res.Index != idx || res.Timeline == tl || res.Replaced != "" {
		t.Fatalf("Restore into an empty dir = %+v, %v", res, err)
	}

	if _, err := BackupStore(ctxT(t), t.TempDir(), &buf); err == nil {
		t.Fatal("BackupStore of an empty dir succeeded")
	}
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a store "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctxT(t), cfg.DataDir, junk); err == nil {
		t.Fatal("restored a junk file")
	}
	if _, err := Restore(ctxT(t), cfg.DataDir, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("restored a missing file")
	}
	// A model store that is not a controller's (a router's, say).
	other := filepath.Join(t.TempDir(), "other.db")
	db, err := openExclusive(other)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := Restore(ctxT(t), cfg.DataDir, other); !errors.Is(err, ErrNotControllerStore) {
		t.Fatalf("Restore of a non-controller store = %v, want ErrNotControllerStore", err)
	}
	// Failed restores left the store alone.
	c2 := startController(t, cfg)
	if st := status(t, c2); st.Index != idx || st.Timeline != tl {
		t.Fatalf("store after failed restores %+v", st)
	}
}
