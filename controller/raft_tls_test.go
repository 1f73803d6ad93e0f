package controller

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/pki"
)

// TestHAClusterOverTLS runs a three-node cluster whose raft traffic is
// mutual TLS over real TCP on 127.0.0.1, with an admin token: the joins
// and a write sent to a follower (forwarded to the leader) only work if
// the members pass the token along and accept each other's certificates.
func TestHAClusterOverTLS(t *testing.T) {
	p := newTestPKI(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		if _, _, err := pki.Issue(p.dir, pki.Controller, n, pki.IssueOptions{Hosts: []string{"127.0.0.1"}}); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("cluster-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFor := func(id string) Config {
		cfg := tlsTestConfig(t, p)
		cfg.TLS = pki.IdentityFor(p.dir, pki.Controller, id)
		cfg.AdminTokenFile = tokenFile
		cfg.HA, cfg.NodeID, cfg.RaftAddr = true, id, "127.0.0.1:0"
		cfg.AckTimeout = guard
		return cfg
	}
	c1cfg := cfgFor("n1")
	c1cfg.Bootstrap = true
	c1 := startController(t, c1cfg)
	commit(t, c1, put("svc", "before-join", "1"))
	var cs = []*running{c1}
	for _, id := range []string{"n2", "n3"} {
		cfg := cfgFor(id)
		cfg.Join = c1.AdminAddr().String()
		c := startController(t, cfg)
		waitFor(t, id+" to serve", func() bool { return c.serving() })
		cs = append(cs, c)
	}
	leader := leaderOf(t, cs...)
	var follower *running
	for _, c := range cs {
		if c != leader {
			follower = c
		}
	}
	code, body := httpDoAuth(t, follower, http.MethodPost, "/v1/changes", "Bearer cluster-token-0123456789",
		`{"changes":[{"op":"put","kind":"svc","id":"via-follower","value":"2"}]}`)
	if code != http.StatusOK {
		t.Fatalf("write through a follower: HTTP %d: %s", code, body)
	}
	code, body = httpDoAuth(t, follower, http.MethodPost, "/v1/changes", "",
		`{"changes":[{"op":"put","kind":"svc","id":"no-token","value":"3"}]}`)
	if code != http.StatusUnauthorized {
		t.Fatalf("write through a follower without a token: HTTP %d: %s", code, body)
	}
	st := waitConverged(t, cs...)
	if len(st.Peers) != 3 {
		t.Errorf("peers %+v, want 3", st.Peers)
	}
	for _, c := range cs {
		if got := entitiesOf(t, c, "?kind=svc"); got["svc/via-follower"] != "2" || got["svc/before-join"] != "1" {
			t.Errorf("%s: entities %v", c.nodeID(), got)
		}
		for _, peer := range status(t, c).Peers {
			if strings.HasSuffix(peer.RaftAddr, ":0") {
				t.Errorf("peer %s advertises an unbound raft address %s", peer.ID, peer.RaftAddr)
			}
		}
	}
}
