package router

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/trust"
)

// dirWatcher hot-swaps the modules an operator (or a deployment tool)
// drops into Config.FilterDir: TYPE.wasm, signed by TYPE.wasm.sig. It
// watches the directory rather than the files, so a module renamed into
// place (the safe way to publish one) is seen like one written in place.
//
// A file is read once no event touched it for the settle time, and only if
// it did not change while being read, so a copy in progress is not swapped
// in half-written; one that still is (a writer pausing longer than the
// settle time) fails the host's checks and is refused, and its next write
// triggers another attempt. Every attempt goes through the same trust check
// and hot swap as the admin API; a refusal is logged and counted and the
// old module keeps serving.
type dirWatcher struct {
	dir    string
	settle time.Duration
	fstore *filterStore
	log    *slog.Logger
	met    *metrics
	w      *fsnotify.Watcher
}

func newDirWatcher(dir string, settle time.Duration, fstore *filterStore, log *slog.Logger, met *metrics) (*dirWatcher, error) {
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: filter directory %s: %w", ErrInvalidConfig, dir, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("router: watch filter directory: %w", err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("router: watch filter directory %s: %w", dir, err)
	}
	return &dirWatcher{dir: dir, settle: settle, fstore: fstore, log: log.With("filter_dir", dir), met: met, w: w}, nil
}

func (d *dirWatcher) close() error { return d.w.Close() }

// typeOfFile maps TYPE.wasm and TYPE.wasm.sig to TYPE.
func typeOfFile(name string) (abi.IndexType, bool) {
	base := strings.TrimSuffix(filepath.Base(name), trust.SignatureExt)
	stem, ok := strings.CutSuffix(base, ".wasm")
	if !ok {
		return abi.IndexNone, false
	}
	t, err := abi.ParseIndexType(stem)
	return t, err == nil
}

// run handles the directory's events until ctx ends. The modules already
// there are considered first, as if they had just been written.
func (d *dirWatcher) run(ctx context.Context) {
	var due [numTypes]time.Time // zero: nothing pending for the type
	now := time.Now()
	for _, t := range abi.IndexTypes {
		if _, err := os.Stat(d.modulePath(t)); err == nil {
			due[t] = now
		}
	}
	d.log.Info("watching the filter directory for modules", "files", "legacy.wasm, ha.wasm (+ .sig)", "settle", d.settle)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var next time.Time
		for _, t := range abi.IndexTypes {
			if !due[t].IsZero() && (next.IsZero() || due[t].Before(next)) {
				next = due[t]
			}
		}
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), 0))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-d.w.Events:
			if !ok {
				return
			}
			if t, ok := typeOfFile(ev.Name); ok && !ev.Has(fsnotify.Chmod) {
				d.log.Debug("filter directory event", "event", ev.String())
				due[t] = time.Now().Add(d.settle)
			}
		case err, ok := <-d.w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: look at every module again.
			d.log.Warn("filter directory watch error; rescanning", "err", err)
			for _, t := range abi.IndexTypes {
				due[t] = time.Now().Add(d.settle)
			}
		case <-fire:
			now := time.Now()
			for _, t := range abi.IndexTypes {
				if due[t].IsZero() || due[t].After(now) {
					continue
				}
				due[t] = time.Time{}
				if d.consider(ctx, t) {
					due[t] = time.Now().Add(d.settle)
				}
			}
		}
	}
}

func (d *dirWatcher) modulePath(t abi.IndexType) string {
	return filepath.Join(d.dir, t.String()+".wasm")
}

// consider swaps in the module file of type t if it is new. It reports
// whether the file was still changing, to be looked at again later.
func (d *dirWatcher) consider(ctx context.Context, t abi.IndexType) (retry bool) {
	path := d.modulePath(t)
	before, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		// Removing a module changes nothing: the one serving stays.
		return false
	}
	var bin, sig []byte
	if err == nil {
		bin, err = os.ReadFile(path)
	}
	if err == nil {
		sig, err = readOptional(trust.SignaturePath(path))
	}
	var after os.FileInfo
	if err == nil {
		after, err = os.Stat(path)
	}
	if err != nil {
		d.result(t, "failed", path, bin, fmt.Errorf("read: %w", err))
		return false
	}
	if !sameFile(before, after) || time.Since(after.ModTime()) < d.settle/2 {
		return true
	}
	log := d.log.With("type", t.String(), "file", path, "sha256", hexSHA256(bin))
	if cur, _ := d.fstore.records(t); cur != nil && cur.sha == hexSHA256(bin) && len(cur.options) == 0 {
		d.met.filterDirSwaps.WithLabelValues(t.String(), "unchanged").Inc()
		log.Debug("the module in the filter directory is the one serving")
		return false
	}
	if !isWasm(bin) {
		d.result(t, "failed", path, bin, errors.New("not a WebAssembly module (no \\0asm header)"))
		return false
	}
	info, rep, note, err := d.fstore.swap(ctx, t, path, bin, sig, nil)
	switch {
	case ctx.Err() != nil:
		return false
	case errors.Is(err, trust.ErrUntrusted):
		d.result(t, "refused", path, bin, err)
	case err != nil && !errors.Is(err, errNotPersisted):
		d.result(t, "failed", path, bin, err)
	default:
		d.met.filterDirSwaps.WithLabelValues(t.String(), "ok").Inc()
		log.Info("filter module from the filter directory swapped in", "old_sha256", rep.OldSHA256,
			"name", info.Name, "version", info.Version, "trusted", info.Trusted, "pause", rep.Pause)
		if note != "" {
			log.Warn(note)
		}
		if err != nil {
			log.Error("filter module swapped in but not persisted", "err", err)
		}
	}
	return false
}

func (d *dirWatcher) result(t abi.IndexType, res, path string, bin []byte, err error) {
	d.met.filterDirSwaps.WithLabelValues(t.String(), res).Inc()
	d.log.Warn("filter module in the filter directory not swapped in; the old module keeps serving",
		"type", t.String(), "file", path, "sha256", hexSHA256(bin), "result", res, "err", err)
}
