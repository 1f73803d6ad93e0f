package controller

import (
	"sort"
	"sync"
)

// hub is where engines publish committed log entries and sessions look for
// new ones. It keeps the most recent entries in a ring so that sessions near
// the head never read bbolt, and wakes every waiting session with one
// closed channel per publish: a session that is behind simply finds more
// entries when it next looks, so nothing is queued per session and a slow
// router costs the writers nothing.
type hub struct {
	mu   sync.Mutex
	ring []*logEntry // circular, oldest at head
	head int
	n    int
	// floor: every log entry after floor, up to last, is in the ring.
	floor logKey
	last  logKey
	// index is the controller's last committed index of its mode.
	index uint64
	wake  chan struct{}
	// gen counts resets: a session that sees it change re-checks its
	// cursor against the (replaced) store before it reads on.
	gen uint64
}

// newHub returns a hub holding up to size entries whose log currently ends
// at last, with index the controller's last committed index.
func newHub(size int, last logKey, index uint64) *hub {
	return &hub{ring: make([]*logEntry, max(size, 0)), floor: last, last: last, index: index, wake: make(chan struct{})}
}

// publish appends committed entries, in log order, and wakes every waiter.
// index is the controller's last committed index after them.
func (h *hub) publish(es []*logEntry, index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range es {
		if len(h.ring) == 0 {
			h.floor = e.key
		} else {
			if h.n == len(h.ring) {
				h.floor = h.ring[h.head].key
				h.ring[h.head] = nil
				h.head = (h.head + 1) % len(h.ring)
				h.n--
			}
			h.ring[(h.head+h.n)%len(h.ring)] = e
			h.n++
		}
		h.last = e.key
	}
	h.index = index
	close(h.wake)
	h.wake = make(chan struct{})
}

// wait returns a channel closed by the next publish. Take it before
// looking for entries, so that a publish in between is not missed.
func (h *hub) wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.wake
}

// lastIndex is the controller's last committed index of its mode.
func (h *hub) lastIndex() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.index
}

// since returns up to max entries after `after`. ok is false when the ring
// does not reach back to `after`: the caller reads the log instead.
func (h *hub) since(after logKey, max int) (es []*logEntry, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if after.cmp(h.floor) < 0 {
		return nil, false
	}
	if after.cmp(h.last) >= 0 {
		return nil, true
	}
	at := func(i int) *logEntry { return h.ring[(h.head+i)%len(h.ring)] }
	i := sort.Search(h.n, func(i int) bool { return at(i).key.cmp(after) > 0 })
	end := min(h.n, i+max)
	es = make([]*logEntry, 0, end-i)
	for ; i < end; i++ {
		es = append(es, at(i))
	}
	return es, true
}

// reset empties the ring after the store was replaced (an HA snapshot
// restore): the log now ends at last and the controller's index is index.
// Sessions are woken and, seeing a new generation, re-check their cursor.
func (h *hub) reset(last logKey, index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.ring)
	h.head, h.n = 0, 0
	h.floor, h.last, h.index = last, last, index
	h.gen++
	close(h.wake)
	h.wake = make(chan struct{})
}

// nudge wakes every waiting session without publishing anything, so that
// sessions look at the controller's role again (it stopped serving).
func (h *hub) nudge() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.wake)
	h.wake = make(chan struct{})
}

// generation is the number of resets so far.
func (h *hub) generation() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}
