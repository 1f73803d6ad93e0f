package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/model"
)

// forwardedHeader marks a request one node forwarded to another, so that
// a request reaching a node that cannot serve it either is answered
// instead of forwarded again (no loops during an election).
const forwardedHeader = "Indexgate-Forwarded-By"

// joinRetry is the pause between join attempts of a new member.
const joinRetry = 500 * time.Millisecond

// clusterHTTPTimeout bounds one request between members.
const clusterHTTPTimeout = 30 * time.Second

// role is what this controller does in its cluster.
type role int32

const (
	// roleLegacy: a legacy controller (also the former leader after a
	// rollback); it serves routers and takes writes itself.
	roleLegacy role = iota
	// roleHA: a raft member; it serves routers while its store is in HA
	// mode and takes writes while it leads (else forwards them).
	roleHA
	// roleRetired: a member whose cluster rolled back to legacy mode on
	// another node; it redirects routers and forwards writes there.
	roleRetired
)

func (r role) String() string {
	switch r {
	case roleLegacy:
		return "legacy"
	case roleHA:
		return "ha"
	case roleRetired:
		return "retired"
	}
	return fmt.Sprintf("role(%d)", int32(r))
}

// PeerStatus is one member of an HA cluster as GET /v1/status reports it.
type PeerStatus struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	// AdminAddr and RouterAddr come from the node directory (empty for a
	// member that has not registered yet).
	AdminAddr  string `json:"adminAddr,omitempty"`
	RouterAddr string `json:"routerAddr,omitempty"`
	// Suffrage is raft's: Voter, Nonvoter, Staging.
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// joinRequest is the body of POST /v1/cluster/join: a new member's
// addresses.
type joinRequest struct {
	NodeID     string `json:"nodeId"`
	RaftAddr   string `json:"raftAddr"`
	AdminAddr  string `json:"adminAddr"`
	ListenAddr string `json:"listenAddr"`
}

// serving reports whether this controller serves routers now.
func (c *Controller) serving() bool {
	switch role(c.role.Load()) {
	case roleLegacy:
		return true
	case roleHA:
		// A new member's store is not the cluster's until its first
		// snapshot arrives (then it is in HA mode).
		return abi.IndexType(c.mode.Load()) == abi.IndexHA
	}
	return false
}

// acceptsRouters reports whether a new router session may start here:
// serving, and for an HA member a known leader. A member that lost its
// leader (partitioned, or left over from a cluster that rolled back) may
// hold stale state, so it sends new routers elsewhere; its established
// sessions go on.
func (c *Controller) acceptsRouters() bool {
	if !c.serving() {
		return false
	}
	if role(c.role.Load()) != roleHA {
		return true
	}
	h := c.ha.Load()
	if h == nil {
		return false
	}
	id, _ := h.node.Leader()
	return id != ""
}

// nodes reads the node directory.
func (c *Controller) nodes(ctx context.Context) (map[string]nodeInfo, error) {
	var out map[string]nodeInfo
	err := c.st.view(ctx, func(tx *model.Tx) (err error) {
		out, err = readNodes(tx)
		return err
	})
	return out, err
}

// writer returns the directory entry of the node that takes writes when
// this one does not: the raft leader, or after a rollback the legacy
// controller.
func (c *Controller) writer(ctx context.Context) (nodeInfo, error) {
	nodes, err := c.nodes(ctx)
	if err != nil {
		return nodeInfo{}, err
	}
	id := ""
	switch role(c.role.Load()) {
	case roleRetired:
		m, err := c.readMeta(ctx)
		if err != nil {
			return nodeInfo{}, err
		}
		if m.migration != nil {
			id = m.migration.NodeID
		}
	case roleHA:
		if h := c.ha.Load(); h != nil {
			id, _ = h.node.Leader()
		}
	}
	n, ok := nodes[id]
	if id == "" || !ok || id == c.nodeID() {
		return nodeInfo{}, fmt.Errorf("%w (leader %q)", ErrNotLeader, id)
	}
	return n, nil
}

// redirects lists the router addresses a router should try instead of
// this node: the node that takes writes first, then the other members.
func (c *Controller) redirects(ctx context.Context) []string {
	nodes, err := c.nodes(ctx)
	if err != nil {
		return nil
	}
	var out []string
	if w, err := c.writer(ctx); err == nil && w.ListenAddr != "" {
		out = append(out, w.ListenAddr)
	}
	if role(c.role.Load()) == roleRetired {
		return out
	}
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if a := nodes[id].ListenAddr; id != c.nodeID() && a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// forward sends a request body to path on the node that takes writes and
// returns its answer.
func (c *Controller) forward(ctx context.Context, path string, body []byte) (int, []byte, error) {
	w, err := c.writer(ctx)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, clusterHTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+w.AdminAddr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, c.nodeID())
	c.authorize(req)
	resp, err := c.httpc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: forwarding to %s at %s: %w", ErrNotLeader, w.ID, w.AdminAddr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: reading the answer of %s: %w", ErrNotLeader, w.ID, err)
	}
	return resp.StatusCode, b, nil
}

// forwardCommit sends a write to the node that takes writes (for
// Controller.Commit on a follower).
func (c *Controller) forwardCommit(ctx context.Context, changes []model.Change) (CommitResult, error) {
	body, err := json.Marshal(writeRequest{Changes: changes})
	if err != nil {
		return CommitResult{}, err
	}
	code, b, err := c.forward(ctx, "/v1/changes", body)
	if err != nil {
		return CommitResult{}, err
	}
	if code != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		base := ErrNotServing
		if code == http.StatusBadRequest {
			base = ErrInvalidRequest
		}
		return CommitResult{}, fmt.Errorf("%w: the leader answered %d: %s", base, code, e.Error)
	}
	var res CommitResult
	if err := json.Unmarshal(b, &res); err != nil {
		return CommitResult{}, fmt.Errorf("controller: the leader's answer: %w", err)
	}
	return res, nil
}

// fetchStatus reads GET /v1/status of another node.
func fetchStatus(ctx context.Context, admin string) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterHTTPTimeout)
	defer cancel()
	var st Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/status of %s: HTTP %d", admin, resp.StatusCode)
	}
	return st, json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&st)
}

// joinLoop asks the cluster at c.joinURL to add this node, until it has
// (or ctx ends). Any member forwards the request to the leader.
func (c *Controller) joinLoop(ctx context.Context) {
	h := c.ha.Load()
	if h == nil {
		return
	}
	body, _ := json.Marshal(c.selfInfo(h.id, h.node.Addr()))
	for attempt := 1; ; attempt++ {
		err := c.postJoin(ctx, body)
		if err == nil {
			c.log.Info("joined the HA cluster", "via", c.joinURL, "node", h.id)
			return
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("joining the HA cluster failed; retrying", "via", c.joinURL, "attempt", attempt, "err", err)
		t := time.NewTimer(joinRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

func (c *Controller) postJoin(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, clusterHTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.joinURL+"/v1/cluster/join", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c.authorize(req)
	resp, err := c.httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// join adds a member to this HA cluster: the node directory entry first
// (through raft, so every member can redirect and forward to it), then the
// raft voter. Leader only: elsewhere it fails with errFollower.
func (c *Controller) join(ctx context.Context, req joinRequest) error {
	h := c.ha.Load()
	if h == nil || role(c.role.Load()) != roleHA {
		return fmt.Errorf("%w: this controller is not a member of an HA cluster", ErrMigration)
	}
	if !h.isReady() {
		return errFollower
	}
	cmd, err := encodeJSONCmd(cmdJoin, nodeInfo{ID: req.NodeID, RaftAddr: req.RaftAddr, AdminAddr: req.AdminAddr, ListenAddr: req.ListenAddr})
	if err != nil {
		return err
	}
	res, err := h.apply(ctx, cmd)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return fmt.Errorf("controller: join %s: %w", req.NodeID, err)
	}
	if err := h.node.AddVoter(ctx, req.NodeID, req.RaftAddr); err != nil {
		return fmt.Errorf("controller: join %s: %w", req.NodeID, err)
	}
	c.log.Info("member joined", "node", req.NodeID, "raftAddr", req.RaftAddr, "admin", req.AdminAddr, "routers", req.ListenAddr)
	return nil
}

func (c *Controller) handleJoin(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var req joinRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: %w", ErrInvalidRequest, err))
		return
	}
	for _, a := range []string{req.RaftAddr, req.AdminAddr, req.ListenAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil || req.NodeID == "" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("%w: nodeId, raftAddr, adminAddr and listenAddr are required host:port addresses", ErrInvalidRequest))
			return
		}
	}
	err = c.join(r.Context(), req)
	if errors.Is(err, errFollower) && r.Header.Get(forwardedHeader) == "" {
		c.relay(w, r, "/v1/cluster/join", body)
		return
	}
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]string{"joined": req.NodeID})
	case errors.Is(err, ErrMigration):
		writeError(w, http.StatusConflict, err)
	default:
		writeError(w, http.StatusServiceUnavailable, err)
	}
}

// relay forwards the request to the node that takes writes and copies its
// answer.
func (c *Controller) relay(w http.ResponseWriter, r *http.Request, path string, body []byte) {
	code, b, err := c.forward(r.Context(), path, body)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (c *Controller) handleMigrate(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var req MigrateRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: %w", ErrMigration, err))
		return
	}
	err = c.beginMigration(req)
	if errors.Is(err, errFollower) && r.Header.Get(forwardedHeader) == "" {
		c.relay(w, r, "/v1/migrate", body)
		return
	}
	if err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	c.mu.Lock()
	ctx := c.runCtx
	c.mu.Unlock()
	c.bg.Go(func() { _ = c.runMigration(ctx, req) })
	writeJSON(w, http.StatusAccepted, map[string]any{"to": req.To, "node": c.nodeID()})
}

// peers lists the raft configuration with the directory's addresses.
func (c *Controller) peers(ctx context.Context, h *haNode) []PeerStatus {
	ps, err := h.node.Peers(ctx)
	if err != nil {
		return nil
	}
	nodes, _ := c.nodes(ctx)
	out := make([]PeerStatus, 0, len(ps))
	for _, p := range ps {
		n := nodes[p.ID]
		out = append(out, PeerStatus{ID: p.ID, RaftAddr: p.Address, AdminAddr: n.AdminAddr, RouterAddr: n.ListenAddr,
			Suffrage: p.Suffrage, Leader: p.Leader})
	}
	return out
}
