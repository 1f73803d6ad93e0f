package raftnode

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter lets raft, its transport and its snapshot store log through
// the node's slog.Logger. raft is chatty at info (every election, every
// snapshot, every peer it contacts), so its trace, debug and info become
// slog debug; its warnings and errors become slog warn, because raft reports
// recoverable conditions as errors (a follower it cannot reach, the
// "failed to get log" after SeedFromSnapshot) and the node surfaces what
// the operator must act on through its own errors and metrics.
type hclogAdapter struct {
	// root is the node's logger; l is root with the name and implied args.
	root *slog.Logger
	l    *slog.Logger
	name string
	// implied are the With args, kept because hclog exposes them.
	implied []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclog(l *slog.Logger, name string) *hclogAdapter {
	return &hclogAdapter{root: l, l: l.With("logger", name), name: name}
}

// slogLevel maps an hclog level; ok is false for levels that log nothing.
func slogLevel(level hclog.Level) (slog.Level, bool) {
	switch level {
	case hclog.Off:
		return 0, false
	case hclog.Warn, hclog.Error:
		return slog.LevelWarn, true
	default: // NoLevel, Trace, Debug, Info
		return slog.LevelDebug, true
	}
}

// attrs converts hclog's key/value list: hclog.Fmt values are rendered
// here because slog would print them as a slice.
func attrs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if s, ok := f[0].(string); ok {
				a = fmt.Sprintf(s, f[1:]...)
			}
		}
		out[i] = a
	}
	return out
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lvl, ok := slogLevel(level)
	if !ok {
		return
	}
	ctx := context.Background()
	if !h.l.Enabled(ctx, lvl) {
		return
	}
	h.l.Log(ctx, lvl, msg, attrs(args)...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) enabled(level hclog.Level) bool {
	lvl, ok := slogLevel(level)
	return ok && h.l.Enabled(context.Background(), lvl)
}

func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.implied }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{
		root:    h.root,
		l:       h.l.With(attrs(args)...),
		name:    h.name,
		implied: append(append([]any(nil), h.implied...), args...),
	}
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{
		root:    h.root,
		l:       h.root.With("logger", name).With(attrs(h.implied)...),
		name:    name,
		implied: h.implied,
	}
}

// SetLevel is ignored: the slog handler decides what is logged.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

func (h *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Trace
	case h.IsWarn():
		return hclog.Warn
	default:
		return hclog.Off
	}
}

func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return &stdWriter{h: h, infer: opts != nil && (opts.InferLevels || opts.InferLevelsWithTimestamp)}
}

// stdWriter turns standard-library log lines into records, guessing the
// level from the "[ERR]"/"[WARN]" prefixes old hashicorp code writes.
type stdWriter struct {
	h     *hclogAdapter
	infer bool
}

func (w *stdWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimRight(p, "\r\n"))
	level := hclog.Info
	if w.infer {
		switch {
		case strings.Contains(msg, "[ERR"):
			level = hclog.Error
		case strings.Contains(msg, "[WARN"):
			level = hclog.Warn
		}
	}
	w.h.Log(level, msg)
	return len(p), nil
}
