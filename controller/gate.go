package controller

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// gate is the way every write takes to the current engine. A migration
// pauses it: writes already inside finish, new ones wait (up to a bound)
// and, once the migration resumes the gate with the new engine, go to that
// one. So no write is lost or served by an engine that has stopped, and a
// migration knows when the old engine has nothing in flight.
type gate struct {
	mu      sync.Mutex
	eng     engine
	paused  bool
	resumed chan struct{} // closed when the current pause ends
	active  int           // writes between enter and leave
	drained chan struct{} // closed when active drops to 0 during a pause
	timeout time.Duration // how long enter waits for a pause to end
}

func newGate(e engine, timeout time.Duration) *gate {
	return &gate{eng: e, timeout: timeout}
}

// engine returns the current engine.
func (g *gate) engine() engine {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng
}

// enter waits while the gate is paused (at most the gate's timeout, then
// ErrPaused) and returns the current engine; the caller calls leave when
// its write has been answered.
func (g *gate) enter(ctx context.Context) (engine, func(), error) {
	g.mu.Lock()
	var timer *time.Timer
	for g.paused {
		ch := g.resumed
		g.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(g.timeout)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("controller: waiting for a migration's pause to end: %w", ctx.Err())
		case <-timer.C:
			return nil, nil, fmt.Errorf("%w: still paused after %v", ErrPaused, g.timeout)
		}
		g.mu.Lock()
	}
	g.active++
	e := g.eng
	g.mu.Unlock()
	return e, g.leave, nil
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active == 0 && g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
}

// pause stops new writes and waits until the writes already inside have
// been answered. If ctx ends first the gate is resumed and ctx's error
// returned.
func (g *gate) pause(ctx context.Context) error {
	g.mu.Lock()
	if g.paused {
		g.mu.Unlock()
		return fmt.Errorf("%w: writes are already paused", ErrMigration)
	}
	g.paused = true
	g.resumed = make(chan struct{})
	if g.active == 0 {
		g.mu.Unlock()
		return nil
	}
	if g.drained == nil {
		g.drained = make(chan struct{})
	}
	ch := g.drained
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		g.resume(nil)
		return fmt.Errorf("controller: waiting for in-flight writes: %w", ctx.Err())
	}
}

// resume ends a pause; a non-nil e becomes the current engine first, so
// the writes that waited go to it.
func (g *gate) resume(e engine) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e != nil {
		g.eng = e
	}
	if g.paused {
		g.paused = false
		close(g.resumed)
	}
}

// setEngine replaces the current engine outside a pause (start-up).
func (g *gate) setEngine(e engine) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.eng = e
}
