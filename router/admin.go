package router

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/model"
	"github.com/indexgate/indexgate/trust"
	"github.com/indexgate/indexgate/wire"
)

// SignatureHeader carries a module's detached signature (the bytes of its
// FILE.wasm.sig, see package trust) on the admin API's module uploads, in
// standard base64: the signature file has several lines, which a header
// value cannot.
const SignatureHeader = "X-Indexgate-Signature"

// Status is the router's state as GET /v1/status reports it. Positions,
// counters, entities and digest come from one store snapshot, so they
// always describe the same committed state.
type Status struct {
	ID string `json:"id"`
	// Connected reports an established session with Controller.
	Connected  bool   `json:"connected"`
	Controller string `json:"controller"`
	// ConnectedSince is when the current (or last) session started.
	ConnectedSince time.Time `json:"connectedSince,omitzero"`
	// ControllerNode is the NodeID of the controller's Welcome.
	ControllerNode string `json:"controllerNode,omitempty"`
	// ControllerIndex is the controller's last index the router heard of.
	ControllerIndex uint64 `json:"controllerIndex"`
	// Mode is the index type of the last applied change set or mode
	// change ("none" before the first).
	Mode abi.IndexType `json:"mode"`
	// Timeline is the timeline of the position on Mode ("" without one).
	Timeline string `json:"timeline"`
	// LastIndex is the committed position per index type (0: none).
	LastIndex map[string]uint64 `json:"lastIndex"`
	Positions []wire.Position   `json:"positions"`
	Entities  uint64            `json:"entities"`
	Digest    string            `json:"digest"`
	Counters  Counters          `json:"counters"`
	// Filters describes the module serving each index type.
	Filters map[string]FilterStatus `json:"filters"`
	// Shadow describes the shadow candidate of each index type that has
	// one.
	Shadow map[string]ShadowStatus `json:"shadow"`
	// FullState is the transfer in progress, if any.
	FullState *FullStateProgress `json:"fullState,omitempty"`
	// WantFullState: the next session asks for a full state.
	WantFullState bool `json:"wantFullState"`
	// LastError is why the last session or connection attempt failed;
	// it stays after a reconnect.
	LastError string `json:"lastError,omitempty"`
}

// FilterStatus describes one loaded filter module.
type FilterStatus struct {
	SHA256  string `json:"sha256"`
	ABI     uint32 `json:"abi"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Trusted: the module runs without per-call deadlines (a built-in,
	// or pinned or signed).
	Trusted bool `json:"trusted"`
	// Trust is why the module may serve: "builtin", "pinned", "signed" or
	// "allowed-unsigned".
	Trust string `json:"trust,omitempty"`
	// Source is where the module came from: "builtin:TYPE", a file path.
	Source   string    `json:"source"`
	LoadedAt time.Time `json:"loadedAt"`
	// PreviousSHA256 is the module a rollback returns to, if any.
	PreviousSHA256 string `json:"previousSha256,omitempty"`
}

// FullStateProgress is a full state being received.
type FullStateProgress struct {
	Mode     abi.IndexType `json:"mode"`
	Index    uint64        `json:"index"`
	Timeline string        `json:"timeline"`
	Received uint64        `json:"received"`
	Total    uint64        `json:"total"`
}

// Status returns the router's state.
func (r *Router) Status(ctx context.Context) (Status, error) {
	s := Status{ID: r.cfg.ID, LastIndex: map[string]uint64{}, Filters: map[string]FilterStatus{}}
	err := r.store.View(ctx, func(tx *model.Tx) error {
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		s.Mode = st.current
		if p, ok := st.position(st.current); ok {
			s.Timeline = p.Timeline.String()
		}
		s.Positions = st.positionList()
		for _, t := range abi.IndexTypes {
			p, _ := st.position(t)
			s.LastIndex[t.String()] = p.Index
		}
		s.Counters = st.counters
		s.WantFullState = st.wantFull
		s.Entities = tx.Count()
		s.Digest, err = tx.Digest()
		return err
	})
	if err != nil {
		return Status{}, fmt.Errorf("router: status: %w", err)
	}
	if s.Positions == nil {
		s.Positions = []wire.Position{}
	}
	cs := r.cl.status()
	s.Connected, s.Controller, s.ControllerNode, s.ConnectedSince = cs.connected, cs.addr, cs.nodeID, cs.since
	s.ControllerIndex, s.LastError = cs.controllerIndex, cs.lastErr
	for _, m := range r.host.Modules() {
		fs := FilterStatus{
			SHA256: m.SHA256, ABI: m.ABI, Name: m.Name, Version: m.Version,
			Trusted: m.Trusted, Source: m.Source, LoadedAt: m.LoadedAt,
		}
		if cur, prev := r.fstore.records(m.Type); cur != nil && cur.sha == m.SHA256 {
			fs.Trust = cur.reason
			if prev != nil {
				fs.PreviousSHA256 = prev.sha
			}
		}
		s.Filters[m.Type.String()] = fs
	}
	s.Shadow = r.shadowStatuses()
	if _, fs := r.app.snapshot(); fs != nil {
		s.FullState = &FullStateProgress{
			Mode: fs.begin.Mode, Index: fs.begin.Index, Timeline: fs.begin.Timeline.String(),
			Received: fs.received, Total: fs.begin.Entities,
		}
	}
	return s, nil
}

func (r *Router) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /v1/status", r.handleStatus)
	mux.HandleFunc("GET /v1/entities", r.handleEntities)
	mux.HandleFunc("PUT /v1/filters/{type}", r.mutating(r.handleSwap))
	mux.HandleFunc("PUT /v1/filters/{type}/shadow", r.mutating(r.handleShadow))
	mux.HandleFunc("DELETE /v1/filters/{type}/shadow", r.mutating(r.handleStopShadow))
	mux.HandleFunc("POST /v1/filters/{type}/promote", r.mutating(r.handlePromote))
	mux.HandleFunc("POST /v1/filters/{type}/rollback", r.mutating(r.handleRollback))
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	return mux
}

func (r *Router) handleStatus(w http.ResponseWriter, req *http.Request) {
	s, err := r.Status(req.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// handleEntities streams the entities as a JSON array from one snapshot,
// so a large model is never held in memory twice.
func (r *Router) handleEntities(w http.ResponseWriter, req *http.Request) {
	kind := req.URL.Query().Get("kind")
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	wrote := false
	err := r.store.View(req.Context(), func(tx *model.Tx) error {
		_ = bw.WriteByte('[')
		err := tx.ForEach(func(e model.Entity) error {
			if kind != "" && e.Kind != kind {
				return nil
			}
			if wrote {
				_ = bw.WriteByte(',')
			}
			wrote = true
			return enc.Encode(e)
		})
		_, _ = bw.WriteString("]\n")
		return err
	})
	if err != nil {
		// The status line is gone with the first flushed byte; a client
		// sees a truncated array, and the log says why.
		r.log.Warn("GET /v1/entities failed", "err", err)
	}
	_ = bw.Flush()
}

// swapResponse is the body of a successful PUT /v1/filters/{type}.
type swapResponse struct {
	Type           abi.IndexType `json:"type"`
	SHA256         string        `json:"sha256"`
	PreviousSHA256 string        `json:"previousSha256"`
	PauseMicros    int64         `json:"pauseMicros"`
	Name           string        `json:"name"`
	Version        string        `json:"version"`
	Trusted        bool          `json:"trusted"`
	Trust          string        `json:"trust,omitempty"`
	// LastIndex is the position the new module took over.
	LastIndex uint64 `json:"lastIndex"`
	Note      string `json:"note,omitempty"`
}

func (r *Router) handleSwap(w http.ResponseWriter, req *http.Request) {
	t, up, ok := r.readUpload(w, req)
	if !ok {
		return
	}
	info, rep, note, err := r.fstore.swap(req.Context(), t, r.fstore.wasmPath(t), up.bin, up.sig, up.options)
	if err != nil && !errors.Is(err, errNotPersisted) {
		r.log.Warn("filter hot swap refused; the old module keeps serving", "type", t.String(),
			"sha256", hexSHA256(up.bin), "err", err)
		writeError(w, moduleErrorStatus(err), err.Error()+"; the old module keeps serving")
		return
	}
	r.writeSwapped(w, t, info, rep, note, err)
}

// writeSwapped answers a request that swapped a module in: 200, or 500
// when the module serves but was not persisted (a restart would bring the
// old one back).
func (r *Router) writeSwapped(w http.ResponseWriter, t abi.IndexType, info host.ModuleInfo, rep host.SwapReport, note string, err error) {
	resp := swapResponse{
		Type: t, SHA256: info.SHA256, PreviousSHA256: rep.OldSHA256, PauseMicros: rep.Pause.Microseconds(),
		Name: info.Name, Version: info.Version, Trusted: info.Trusted, LastIndex: rep.State.LastIndex, Note: note,
	}
	if cur, _ := r.fstore.records(t); cur != nil && cur.sha == info.SHA256 {
		resp.Trust = cur.reason
	}
	if err != nil {
		r.log.Error("filter module swapped in but not persisted", "type", t.String(), "err", err)
		writeJSON(w, http.StatusInternalServerError, struct {
			swapResponse
			Error string `json:"error"`
		}{resp, err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// upload is a module sent to the admin API.
type upload struct {
	bin, sig, options []byte
}

// readUpload reads the index type from the path and the module, its
// signature (SignatureHeader) and options (?options=) from the request.
// On failure it has answered and returns false.
func (r *Router) readUpload(w http.ResponseWriter, req *http.Request) (abi.IndexType, upload, bool) {
	var up upload
	t, ok := pathType(w, req)
	if !ok {
		return t, up, false
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/wasm" && mt != "application/octet-stream") {
			writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send the module as application/wasm", ct))
			return t, up, false
		}
	}
	if h := req.Header.Get(SignatureHeader); h != "" {
		sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h))
		if err != nil || len(sig) == 0 {
			writeError(w, http.StatusBadRequest, SignatureHeader+": want the standard base64 of the module's .sig file")
			return t, up, false
		}
		up.sig = sig
	}
	bin, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxModuleBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("module larger than %d bytes", r.cfg.MaxModuleBytes))
		return t, up, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading the module: "+err.Error())
		return t, up, false
	case len(bin) == 0:
		writeError(w, http.StatusBadRequest, "empty body: send the module's bytes")
		return t, up, false
	case !isWasm(bin):
		writeError(w, http.StatusUnsupportedMediaType, "not a WebAssembly module (no \\0asm header); the old module keeps serving")
		return t, up, false
	}
	up.bin = bin
	if o := req.URL.Query().Get("options"); o != "" {
		up.options = []byte(o)
	}
	return t, up, true
}

// pathType parses the {type} path value; on failure it answers 404.
func pathType(w http.ResponseWriter, req *http.Request) (abi.IndexType, bool) {
	t, err := abi.ParseIndexType(req.PathValue("type"))
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown index type %q (want legacy or ha)", req.PathValue("type")))
		return t, false
	}
	return t, true
}

// moduleErrorStatus maps why a module was refused to an HTTP status.
func moduleErrorStatus(err error) int {
	switch {
	case errors.Is(err, trust.ErrUntrusted):
		return http.StatusForbidden
	case errors.Is(err, host.ErrNotWasm):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, host.ErrCompile), errors.Is(err, host.ErrMissingExport),
		errors.Is(err, host.ErrUnknownImport), errors.Is(err, host.ErrABIVersion),
		errors.Is(err, host.ErrSelfTest), errors.Is(err, host.ErrModuleFailed):
		return http.StatusUnprocessableEntity
	case errors.Is(err, host.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}
