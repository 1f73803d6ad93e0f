package controller

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/indexgate/indexgate/wire"
)

// Validation tuning.
const (
	// DefaultValidateTimeout bounds GET /v1/validate when the request sets
	// no ?timeout=: long enough for routers to catch up with a quiet
	// controller and answer.
	DefaultValidateTimeout = 10 * time.Second
	// validateRetry is the pause before asking a router again whose
	// position differs from the controller's (it is still catching up).
	validateRetry = 100 * time.Millisecond
)

// RouterValidation is one connected router's answer to a digest check.
type RouterValidation struct {
	// ID is the router's id.
	ID string `json:"id"`
	// Position is the router's position on its current type when it
	// answered.
	Position wire.Position `json:"position"`
	// Entities and Digest are the router's model at Position.
	Entities uint64 `json:"entities"`
	Digest   string `json:"digest"`
	// ControllerDigest is the controller's digest at Position, when the
	// controller was at the same position; "" when it never was before
	// the deadline.
	ControllerDigest string `json:"controllerDigest"`
	// Match reports Digest == ControllerDigest at the same position.
	Match bool `json:"match"`
	// Error says why there is no verdict: no answer, or positions that
	// never met before the deadline.
	Error string `json:"error,omitempty"`
}

// Validation is the result of Validate.
type Validation struct {
	// Position, Entities and Digest are the controller's model when the
	// check ended.
	Position wire.Position `json:"position"`
	Entities uint64        `json:"entities"`
	Digest   string        `json:"digest"`
	// Routers are the connected routers, by id.
	Routers []RouterValidation `json:"routers"`
	// OK reports that every router matched.
	OK bool `json:"ok"`
}

// Validate asks every connected router for its model digest
// (wire.DigestRequest) and compares it with the controller's at the same
// position: a router whose digest differs has a model that the change
// sets it was sent do not explain (tampered with, or a bug). A router
// still catching up is asked again until its position meets the
// controller's or ctx ends; it then has Error set and Match false.
func (c *Controller) Validate(ctx context.Context) (Validation, error) {
	sessions := c.routers.sessions()
	out := Validation{Routers: make([]RouterValidation, len(sessions))}
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() { out.Routers[i] = c.validateRouter(ctx, s) })
	}
	wg.Wait()
	st, err := c.Status(context.WithoutCancel(ctx))
	if err != nil {
		return Validation{}, err
	}
	out.Position = wire.Position{Type: st.Mode, Index: st.Index, Timeline: st.Timeline}
	out.Entities, out.Digest = st.Entities, st.Digest
	sort.Slice(out.Routers, func(i, j int) bool { return out.Routers[i].ID < out.Routers[j].ID })
	out.OK = true
	for _, r := range out.Routers {
		out.OK = out.OK && r.Match
	}
	return out, nil
}

// validateRouter checks one session until a verdict or ctx's end.
func (c *Controller) validateRouter(ctx context.Context, s *session) RouterValidation {
	v := RouterValidation{ID: s.id}
	for {
		reply, err := s.askDigest(ctx)
		if err != nil {
			v.Error = fmt.Sprintf("no digest reply: %v", err)
			return v
		}
		v.Position, v.Entities, v.Digest = reply.Position, reply.Entities, reply.Digest
		st, err := c.Status(ctx)
		if err != nil {
			v.Error = err.Error()
			return v
		}
		mine := wire.Position{Type: st.Mode, Index: st.Index, Timeline: st.Timeline}
		if mine == reply.Position {
			v.ControllerDigest, v.Match, v.Error = st.Digest, st.Digest == reply.Digest, ""
			return v
		}
		v.Error = fmt.Sprintf("router at %s, controller at %s: still catching up", reply.Position, mine)
		select {
		case <-ctx.Done():
			return v
		case <-time.After(validateRetry):
		}
	}
}

// askDigest sends a DigestRequest on s and waits for the DigestReply the
// read loop hands over.
func (s *session) askDigest(ctx context.Context) (*wire.DigestReply, error) {
	ch := make(chan *wire.DigestReply, 1)
	s.digestMu.Lock()
	s.digestWaiters = append(s.digestWaiters, ch)
	s.digestMu.Unlock()
	drop := func() {
		s.digestMu.Lock()
		defer s.digestMu.Unlock()
		for i, w := range s.digestWaiters {
			if w == ch {
				s.digestWaiters = append(s.digestWaiters[:i], s.digestWaiters[i+1:]...)
				return
			}
		}
	}
	if err := s.conn.Write(ctx, &wire.DigestRequest{}); err != nil {
		drop()
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
}

// gotDigest hands a DigestReply to the oldest waiter: replies come in the
// order of the requests.
func (s *session) gotDigest(r *wire.DigestReply) {
	s.digestMu.Lock()
	defer s.digestMu.Unlock()
	if len(s.digestWaiters) == 0 {
		return // unasked for, or its asker gave up
	}
	ch := s.digestWaiters[0]
	s.digestWaiters = s.digestWaiters[1:]
	ch <- r
}

// sessions returns the current sessions.
func (r *registry) sessions() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*session
	for _, ri := range r.byID {
		if ri.sess != nil {
			out = append(out, ri.sess)
		}
	}
	return out
}

// handleValidate serves GET /v1/validate[?timeout=DURATION]: 200 with the
// Validation whether or not every router matched (the "ok" field says).
func (c *Controller) handleValidate(w http.ResponseWriter, r *http.Request) {
	d := DefaultValidateTimeout
	if s := r.URL.Query().Get("timeout"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("%w: timeout %q is not a positive duration", ErrInvalidRequest, s))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	v, err := c.Validate(ctx)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if !v.OK {
		c.log.Warn("validation found routers whose model differs or that did not answer", "routers", len(v.Routers))
	}
	writeJSON(w, http.StatusOK, v)
}
