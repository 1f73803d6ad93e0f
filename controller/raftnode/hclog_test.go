package raftnode

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogAdapter(t *testing.T) {
	tests := []struct {
		name     string
		minLevel slog.Level
		log      func(l hclog.Logger)
		want     []string // substrings of the output; nil means no output
	}{
		{"info demoted to debug", slog.LevelDebug,
			func(l hclog.Logger) { l.Info("entering leader state", "term", 3) },
			[]string{"level=DEBUG", `msg="entering leader state"`, "term=3", "logger=raft"}},
		{"info hidden at info level", slog.LevelInfo,
			func(l hclog.Logger) { l.Info("entering leader state") }, nil},
		{"error as warn", slog.LevelInfo,
			func(l hclog.Logger) {
				l.Error("failed to get log", "index", 1001, "error", errors.New("log not found"))
			},
			[]string{"level=WARN", "index=1001", `error="log not found"`}},
		{"warn as warn", slog.LevelWarn,
			func(l hclog.Logger) { l.Warn("heartbeat timeout reached") }, []string{"level=WARN"}},
		{"fmt values rendered", slog.LevelDebug,
			func(l hclog.Logger) { l.Debug("config", "servers", hclog.Fmt("%+v", []int{1, 2})) },
			[]string{`servers="[1 2]"`}},
		{"with and named", slog.LevelDebug,
			func(l hclog.Logger) { l.With("peer", "n2").Named("repl").Debug("x") },
			[]string{"logger=raft.repl", "peer=n2"}},
		{"reset named keeps implied args", slog.LevelDebug,
			func(l hclog.Logger) { l.With("peer", "n2").ResetNamed("other").Debug("x") },
			[]string{"logger=other", "peer=n2"}},
		{"standard logger infers levels", slog.LevelInfo,
			func(l hclog.Logger) {
				l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERR] raft: boom")
			},
			[]string{"level=WARN", "boom"}},
		{"off logs nothing", slog.LevelDebug,
			func(l hclog.Logger) { l.Log(hclog.Off, "x") }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.minLevel})), "raft")
			tt.log(l)
			out := buf.String()
			if tt.want == nil {
				if out != "" {
					t.Fatalf("want no output, got %q", out)
				}
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
		})
	}
}

func TestHclogLevels(t *testing.T) {
	l := newHclog(slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
	if l.IsDebug() || l.IsInfo() || l.IsTrace() {
		t.Error("debug-level raft output reported enabled at slog info")
	}
	if !l.IsWarn() || !l.IsError() {
		t.Error("raft warnings and errors reported disabled at slog info")
	}
}
