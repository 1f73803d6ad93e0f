package rafttest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/indexgate/indexgate/controller/raftnode"
)

// Entry is one command a Recorder applied.
type Entry struct {
	Index, Term uint64
	Cmd         []byte
}

// Recorder is an in-memory raftnode.StateMachine that records every command
// it applies, in order. It skips indexes at or below the last one it
// applied, as the StateMachine contract asks, and answers each Apply with
// the entry's index. Its snapshot image is the recorded list; Restore
// replaces the list and keeps a copy of the image. Being in memory, a
// restarted Recorder starts empty: use Config.RestoreSnapshotOnStart, or
// restart only nodes whose log still starts at index 1.
type Recorder struct {
	mu       sync.Mutex
	entries  []Entry
	last     uint64
	skipped  int
	restored [][]byte
}

var _ raftnode.StateMachine = (*Recorder)(nil)

// NewRecorder returns an empty Recorder; its signature fits NewCluster.
func NewRecorder(string) raftnode.StateMachine { return &Recorder{} }

// Apply records cmd unless index was already applied.
func (r *Recorder) Apply(index, term uint64, cmd []byte) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if index <= r.last {
		r.skipped++
		return index
	}
	r.entries = append(r.entries, Entry{Index: index, Term: term, Cmd: slices.Clone(cmd)})
	r.last = index
	return index
}

// Entries returns a copy of the recorded commands.
func (r *Recorder) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

// LastIndex returns the index of the last recorded command.
func (r *Recorder) LastIndex() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Skipped returns how many Apply calls were replays of applied indexes.
func (r *Recorder) Skipped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.skipped
}

// Restored returns the images Restore was called with, oldest first.
func (r *Recorder) Restored() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.restored)
}

// Snapshot captures the list; raft writes it out on its own goroutine.
func (r *Recorder) Snapshot() (raftnode.SnapshotWriter, error) {
	r.mu.Lock()
	img := EncodeEntries(r.entries)
	r.mu.Unlock()
	return raftnode.SnapshotFunc(func(w io.Writer) error {
		_, err := w.Write(img)
		return err
	}), nil
}

// Restore replaces the list with the image's.
func (r *Recorder) Restore(rd io.Reader) error {
	img, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	entries, err := DecodeEntries(img)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = entries
	r.last = 0
	if len(entries) > 0 {
		r.last = entries[len(entries)-1].Index
	}
	r.restored = append(r.restored, img)
	return nil
}

// imageMagic starts every Recorder image, so that Restore rejects anything
// else (tests of a refused seed rely on it).
const imageMagic = "rafttest.Recorder/1\n"

// EncodeEntries returns the Recorder image of entries: a seed image for
// SeedFromSnapshot can be built with it.
func EncodeEntries(entries []Entry) []byte {
	var b bytes.Buffer
	b.WriteString(imageMagic)
	var hdr [20]byte
	for _, e := range entries {
		binary.BigEndian.PutUint64(hdr[0:], e.Index)
		binary.BigEndian.PutUint64(hdr[8:], e.Term)
		binary.BigEndian.PutUint32(hdr[16:], uint32(len(e.Cmd)))
		b.Write(hdr[:])
		b.Write(e.Cmd)
	}
	return b.Bytes()
}

// DecodeEntries parses a Recorder image.
func DecodeEntries(img []byte) ([]Entry, error) {
	rest, ok := bytes.CutPrefix(img, []byte(imageMagic))
	if !ok {
		return nil, errors.New("rafttest: not a Recorder image")
	}
	var out []Entry
	for len(rest) > 0 {
		if len(rest) < 20 {
			return nil, fmt.Errorf("rafttest: truncated image entry header (%d bytes)", len(rest))
		}
		e := Entry{Index: binary.BigEndian.Uint64(rest), Term: binary.BigEndian.Uint64(rest[8:])}
		n := binary.BigEndian.Uint32(rest[16:])
		rest = rest[20:]
		if uint64(len(rest)) < uint64(n) {
			return nil, fmt.Errorf("rafttest: truncated image entry %d", e.Index)
		}
		e.Cmd, rest = slices.Clone(rest[:n]), rest[n:]
		out = append(out, e)
	}
	return out, nil
}
