package controller

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/indexgate/indexgate/model"
)

// adminHandler is the admin HTTP API (docs/controller.md, "Admin API").
func (c *Controller) adminHandler() http.Handler {
	mux := http.NewServeMux()
	// Writes, migrations, joins and backups (which hold every entity)
	// need the admin token; status, entities, validation, health and
	// metrics stay open to monitoring.
	mux.HandleFunc("POST /v1/changes", c.requireToken(c.handleChanges))
	mux.HandleFunc("GET /v1/status", c.handleStatus)
	mux.HandleFunc("GET /v1/entities", c.handleEntities)
	mux.HandleFunc("GET /v1/validate", c.handleValidate)
	mux.HandleFunc("GET /v1/backup", c.requireToken(c.handleBackup))
	mux.HandleFunc("POST /v1/migrate", c.requireToken(c.handleMigrate))
	mux.HandleFunc("POST /v1/cluster/join", c.requireToken(c.handleJoin))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{
		ErrorLog: slogPrinter{c}, Registry: c.reg,
	}))
	return mux
}

// slogPrinter adapts the logger to promhttp's ErrorLog.
type slogPrinter struct{ c *Controller }

func (p slogPrinter) Println(v ...any) { p.c.log.Warn("metrics: " + fmt.Sprint(v...)) }

// writeRequest is the body of POST /v1/changes.
type writeRequest struct {
	Changes []model.Change `json:"changes"`
}

// parseWriteRequest decodes a POST /v1/changes body strictly: one JSON
// object, no unknown fields, no trailing data, at least one change, every
// change valid. Errors wrap ErrInvalidRequest.
func parseWriteRequest(r io.Reader) ([]model.Change, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var req writeRequest
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: request body exceeds %d bytes", ErrInvalidRequest, mbe.Limit)
		}
		return nil, fmt.Errorf("%w: body is not a valid change request: %w", ErrInvalidRequest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: request body exceeds %d bytes", ErrInvalidRequest, mbe.Limit)
		}
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidRequest)
	}
	if len(req.Changes) == 0 {
		return nil, fmt.Errorf("%w: \"changes\" is empty", ErrInvalidRequest)
	}
	if err := model.ValidateChanges(req.Changes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return req.Changes, nil
}

func (c *Controller) handleChanges(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.cfg.MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = fmt.Errorf("%w: request body exceeds %d bytes", ErrInvalidRequest, mbe.Limit)
		}
		writeError(w, http.StatusBadRequest, err)
		return
	}
	// Validated here even on a follower, so a bad request is refused
	// without a round trip to the leader.
	changes, err := parseWriteRequest(bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	res, err := c.commit(r.Context(), changes)
	if errors.Is(err, errFollower) {
		if r.Header.Get(forwardedHeader) != "" {
			// A forwarded write landing on a node that does not lead
			// either (an election): the client retries.
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%w: %w", ErrNotLeader, err))
			return
		}
		c.relay(w, r, "/v1/changes", body)
		return
	}
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrChangeSetTooLarge):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, ErrNotServing), errors.Is(err, ErrWrongMode), errors.Is(err, ErrPaused), errors.Is(err, ErrNotLeader),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err)
	default:
		c.log.Error("write failed", "err", err)
		writeError(w, http.StatusInternalServerError, err)
	}
}

func (c *Controller) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := c.Status(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// handleEntities streams the entities as a JSON array from one read
// transaction, optionally only those of ?kind=.
func (c *Controller) handleEntities(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	first := true
	err := c.st.view(r.Context(), func(tx *model.Tx) error {
		if _, err := bw.WriteString("["); err != nil {
			return err
		}
		return tx.ForEach(func(e model.Entity) error {
			if kind != "" && e.Kind != kind {
				return nil
			}
			if !first {
				if err := bw.WriteByte(','); err != nil {
					return err
				}
			}
			first = false
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			_, err = bw.Write(b)
			return err
		})
	})
	if err != nil {
		// The status line is gone; a truncated array is what the client
		// sees, and the log says why.
		c.log.Warn("GET /v1/entities failed", "err", err)
		return
	}
	_, _ = bw.WriteString("]\n")
	_ = bw.Flush()
}

func (c *Controller) handleBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+StoreFile+`"`)
	n, err := c.Backup(r.Context(), w)
	if err != nil {
		c.log.Warn("GET /v1/backup failed", "bytes", n, "err", err)
		if n == 0 {
			writeError(w, http.StatusInternalServerError, err)
		}
		return
	}
	c.log.Info("backup served", "bytes", n)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": "..."}.
func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
