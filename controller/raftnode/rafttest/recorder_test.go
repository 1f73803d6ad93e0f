package rafttest

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestRecorderImage(t *testing.T) {
	entries := []Entry{{Index: 7, Term: 2, Cmd: []byte("a")}, {Index: 9, Term: 3, Cmd: nil}, {Index: 12, Term: 3, Cmd: bytes.Repeat([]byte{0}, 300)}}
	img := EncodeEntries(entries)
	tests := []struct {
		name    string
		img     []byte
		want    []Entry
		wantErr string
	}{
		{"round trip", img, entries, ""},
		{"empty", EncodeEntries(nil), nil, ""},
		{"foreign image", []byte("abc"), nil, "not a Recorder image"},
		{"truncated header", img[:len(imageMagic)+5], nil, "truncated image entry header"},
		{"truncated command", img[:len(img)-1], nil, "truncated image entry 12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeEntries(tt.img)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeEntries error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tt.want, func(a, b Entry) bool {
				return a.Index == b.Index && a.Term == b.Term && bytes.Equal(a.Cmd, b.Cmd)
			}) {
				t.Fatalf("DecodeEntries = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRecorderSkipsReplays(t *testing.T) {
	r := &Recorder{}
	for _, idx := range []uint64{3, 4, 4, 2, 5} {
		r.Apply(idx, 1, []byte{byte(idx)})
	}
	if got := len(r.Entries()); got != 3 || r.Skipped() != 2 || r.LastIndex() != 5 {
		t.Fatalf("entries %d, skipped %d, last %d; want 3, 2, 5", got, r.Skipped(), r.LastIndex())
	}
	w, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := w.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	w.Release()
	r2 := &Recorder{}
	if err := r2.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if r2.LastIndex() != 5 || len(r2.Entries()) != 3 || len(r2.Restored()) != 1 {
		t.Fatalf("restored recorder: last %d, %d entries, %d images", r2.LastIndex(), len(r2.Entries()), len(r2.Restored()))
	}
	r2.Apply(5, 1, nil) // replay after restore
	if r2.Skipped() != 1 {
		t.Fatal("replay after restore was applied")
	}
}
