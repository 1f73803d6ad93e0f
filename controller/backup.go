package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// lockProbeTimeout is how long BackupStore and Restore wait for the store's
// file lock before concluding that a running controller holds it.
const lockProbeTimeout = 500 * time.Millisecond

// PreRestoreFile is where Restore keeps the store it replaced, inside the
// data directory, so an operator can undo a restore.
const PreRestoreFile = StoreFile + ".pre-restore"

// RestoreResult describes an installed backup.
type RestoreResult struct {
	// Mode, Index and ChangeSets are the restored store's.
	Mode       abi.IndexType `json:"mode"`
	Index      uint64        `json:"index"`
	ChangeSets uint64        `json:"changeSets"`
	Entities   uint64        `json:"entities"`
	// OldTimeline is the backup's timeline, Timeline the new one.
	OldTimeline abi.Timeline `json:"oldTimeline"`
	Timeline    abi.Timeline `json:"timeline"`
	// Replaced is the path the previous store was moved to ("" when the
	// data directory had none).
	Replaced string `json:"replaced,omitempty"`
}

// openExclusive opens a store, reporting ErrInUse when a running
// controller holds its lock.
func openExclusive(path string) (*model.Store, error) {
	db, err := model.Open(path, model.Options{Timeout: lockProbeTimeout})
	if errors.Is(err, model.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	}
	return db, err
}

// BackupStore writes a copy of the store of a stopped controller in
// dataDir to w. A running controller holds the store's lock (ErrInUse):
// back it up with Controller.Backup or GET /v1/backup instead.
func BackupStore(ctx context.Context, dataDir string, w io.Writer) (int64, error) {
	path := filepath.Join(dataDir, StoreFile)
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("controller: backup: %w", err)
	}
	db, err := openExclusive(path)
	if err != nil {
		return 0, fmt.Errorf("controller: backup: %w", err)
	}
	defer db.Close()
	var n int64
	err = db.View(ctx, func(tx *model.Tx) error {
		if _, err := readMeta(tx); err != nil {
			return err
		}
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("controller: backup: %w", err)
	}
	return n, nil
}

// Restore installs the backup file from as the store of the stopped
// controller in dataDir. The restored history is older than what routers
// may have applied, so it is not a continuation: Restore gives it a new
// random timeline, and every router takes a full state instead of
// skipping change sets whose indexes it believes it has. The change log is
// emptied (its entries carry the old timeline) and logFloor set to the
// restored index. The previous store, if any, is kept as PreRestoreFile.
func Restore(ctx context.Context, dataDir, from string) (RestoreResult, error) {
	var res RestoreResult
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return res, fmt.Errorf("controller: restore: %w", err)
	}
	path := filepath.Join(dataDir, StoreFile)
	// Refuse while a controller runs on dataDir: swapping the file under it
	// would lose its writes and confuse its routers.
	if _, err := os.Stat(path); err == nil {
		db, err := openExclusive(path)
		if err != nil {
			return res, fmt.Errorf("controller: restore: %w", err)
		}
		_ = db.Close()
	}
	tmp := path + ".restoring"
	if err := copyFile(from, tmp); err != nil {
		return res, fmt.Errorf("controller: restore: %w", err)
	}
	defer os.Remove(tmp) // a no-op once renamed
	db, err := model.Open(tmp, model.Options{Timeout: lockProbeTimeout})
	if err != nil {
		return res, fmt.Errorf("controller: restore: %s is not a usable store: %w", from, err)
	}
	err = db.Update(ctx, func(tx *model.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		res.OldTimeline = m.timeline
		m.timeline = abi.NewTimeline()
		if err := clearLog(tx); err != nil {
			return err
		}
		m.logCount = 0
		m.logFloor = max(m.logFloor, m.index())
		res.Mode, res.Index, res.ChangeSets, res.Entities, res.Timeline = m.mode, m.index(), m.changeSets, tx.Count(), m.timeline
		return writeMeta(tx, &m)
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, model.ErrBucketNotFound) || errors.Is(err, ErrNotControllerStore) {
			return res, fmt.Errorf("%w: %s: %w", ErrNotControllerStore, from, err)
		}
		return res, fmt.Errorf("controller: restore: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		res.Replaced = filepath.Join(dataDir, PreRestoreFile)
		if err := os.Rename(path, res.Replaced); err != nil {
			return res, fmt.Errorf("controller: restore: keeping the previous store: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, fmt.Errorf("controller: restore: %w", err)
	}
	if err := syncDir(dataDir); err != nil {
		return res, fmt.Errorf("controller: restore: %w", err)
	}
	return res, nil
}

// clearLog deletes every log entry.
func clearLog(tx *model.Tx) error {
	lb, err := tx.Bucket(bucketLog)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotControllerStore, err)
	}
	var keys [][]byte
	c := lb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := lb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src to dst and syncs dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeSynced(dst, in)
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
