package controller

import (
	"sort"
	"sync"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/wire"
)

// maxRemembered bounds how many disconnected routers the status keeps, so
// that router ids that come and go cannot grow the registry forever.
const maxRemembered = 1024

// RouterStatus is what the controller knows about one router.
type RouterStatus struct {
	// ID is the router's id from its Hello.
	ID string `json:"id"`
	// Connected reports an established session.
	Connected bool `json:"connected"`
	// AckedIndex and AckedType are the router's position on its current
	// type from its last Ack (from its Hello before the first Ack).
	AckedIndex uint64        `json:"ackedIndex"`
	AckedType  abi.IndexType `json:"ackedType"`
	// Lag is how far AckedIndex trails the controller's index.
	Lag uint64 `json:"lag"`
	// SentIndex is the index of the last change set sent to the router.
	SentIndex uint64 `json:"sentIndex"`
	// Applied is the router's count of change sets applied on this
	// connection, from its last Ack.
	Applied uint64 `json:"applied"`
	// Resume is how the current (or last) session started.
	Resume string `json:"resume"`
	// Remote is the router's address.
	Remote string `json:"remote"`
	// ConnectedAt is when the current (or last) session was established.
	ConnectedAt time.Time `json:"connectedAt"`
	// DisconnectedAt is when the last session ended; zero while connected.
	DisconnectedAt time.Time `json:"disconnectedAt,omitzero"`
}

// routerInfo is the registry's record of one router. Its fields are
// guarded by the registry's mutex.
type routerInfo struct {
	status RouterStatus
	// sess is the current session; a newer one from the same id replaces
	// it.
	sess *session
}

// registry tracks the routers seen since start.
type registry struct {
	mu   sync.Mutex
	byID map[string]*routerInfo
}

func newRegistry() *registry { return &registry{byID: make(map[string]*routerInfo)} }

// attach records s as id's current session and returns the session it
// replaces, if any (a router that reconnected before its old connection
// died): the caller closes that one.
func (r *registry) attach(s *session, p wire.Position, resume wire.ResumeKind) (old *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ri := r.byID[s.id]
	if ri == nil {
		r.evictLocked()
		ri = &routerInfo{}
		r.byID[s.id] = ri
	}
	old = ri.sess
	ri.sess = s
	ri.status = RouterStatus{
		ID: s.id, Connected: true, Remote: s.remote, ConnectedAt: time.Now(),
		Resume: resume.String(), AckedType: p.Type, AckedIndex: p.Index,
	}
	return old
}

// evictLocked drops the longest-disconnected router once the registry is
// at its bound.
func (r *registry) evictLocked() {
	if len(r.byID) < maxRemembered {
		return
	}
	var oldest *routerInfo
	for _, ri := range r.byID {
		if ri.sess == nil && (oldest == nil || ri.status.DisconnectedAt.Before(oldest.status.DisconnectedAt)) {
			oldest = ri
		}
	}
	if oldest != nil {
		delete(r.byID, oldest.status.ID)
	}
}

// detach marks s's router disconnected, unless a newer session took over.
func (r *registry) detach(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ri := r.byID[s.id]; ri != nil && ri.sess == s {
		ri.sess = nil
		ri.status.Connected = false
		ri.status.DisconnectedAt = time.Now()
	}
}

// acked records an Ack of s.
func (r *registry) acked(s *session, a *wire.Ack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ri := r.byID[s.id]
	if ri == nil || ri.sess != s {
		return
	}
	ri.status.Applied = a.Applied
	ri.status.AckedType = a.Current
	if p, ok := routerPosition(a.Positions, a.Current); ok {
		ri.status.AckedIndex = p.Index
	}
}

// sent records the index of the last change set sent on s.
func (r *registry) sent(s *session, index uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ri := r.byID[s.id]; ri != nil && ri.sess == s {
		ri.status.SentIndex = index
	}
}

// connected counts routers with a session.
func (r *registry) connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ri := range r.byID {
		if ri.sess != nil {
			n++
		}
	}
	return n
}

// snapshot returns every router's status, by id, with the lag against
// index.
func (r *registry) snapshot(index uint64) []RouterStatus {
	r.mu.Lock()
	out := make([]RouterStatus, 0, len(r.byID))
	for _, ri := range r.byID {
		st := ri.status
		st.Lag = lag(index, st.AckedIndex)
		out = append(out, st)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ackedAt counts the connected routers whose last ack (or Hello) puts them
// at or past index of type t, and names the others.
func (r *registry) ackedAt(t abi.IndexType, index uint64) (acked, total int, stragglers []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ri := range r.byID {
		if ri.sess == nil {
			continue
		}
		total++
		if ri.status.AckedType == t && ri.status.AckedIndex >= index {
			acked++
		} else {
			stragglers = append(stragglers, id)
		}
	}
	sort.Strings(stragglers)
	return acked, total, stragglers
}
