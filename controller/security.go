package controller

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/indexgate/indexgate/pki"
)

// loadSecrets builds the raft TLS configurations and reads the admin
// token, so that a bad certificate or token file fails New with a clear
// error instead of the first join or write.
func (c *Controller) loadSecrets() error {
	if !c.cfg.Insecure {
		id := c.cfg.TLS
		if id.Logger == nil {
			id.Logger = c.log
		}
		var err error
		if c.raftServerTLS, err = id.ServerTLS(pki.PeerPolicy{Kind: pki.Controller}); err != nil {
			return fmt.Errorf("%w: TLS certificate: %w", ErrInvalidConfig, err)
		}
		if c.raftClientTLS, err = id.ClientTLS("", pki.PeerPolicy{Kind: pki.Controller}); err != nil {
			return fmt.Errorf("%w: raft TLS: %w", ErrInvalidConfig, err)
		}
	}
	if c.cfg.AdminTokenFile == "" {
		return nil
	}
	tok, stamp, err := readToken(c.cfg.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c.tokMu.Lock()
	c.adminToken, c.tokenStamp = tok, stamp
	c.tokMu.Unlock()
	return nil
}

// MinAdminTokenBytes is the shortest admin token accepted: shorter ones
// are guessable.
const MinAdminTokenBytes = 16

// fileStamp identifies a version of the token file.
type fileStamp struct {
	mod  time.Time
	size int64
}

// readToken reads and checks a token file.
func readToken(path string) ([]byte, fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("admin token file: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("admin token file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	switch {
	case bytes.ContainsAny(tok, " \t\r\n"):
		return nil, fileStamp{}, fmt.Errorf("admin token file %s holds more than one word", path)
	case len(tok) < MinAdminTokenBytes:
		return nil, fileStamp{}, fmt.Errorf("admin token file %s: the token is shorter than %d bytes (make one with: openssl rand -hex 32)", path, MinAdminTokenBytes)
	}
	return tok, fileStamp{fi.ModTime(), fi.Size()}, nil
}

// token returns the admin token, re-reading the file when it changed so
// that a rotation needs no restart. A replacement that does not read or
// check is logged and the previous token stays valid.
func (c *Controller) token() []byte {
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	if c.adminToken == nil {
		return nil
	}
	fi, err := os.Stat(c.cfg.AdminTokenFile)
	if err != nil || (fileStamp{fi.ModTime(), fi.Size()}) == c.tokenStamp {
		return c.adminToken
	}
	tok, stamp, err := readToken(c.cfg.AdminTokenFile)
	if err != nil {
		c.log.Error("admin token file changed but cannot be used; the previous token stays valid", "err", err)
		c.tokenStamp = fileStamp{fi.ModTime(), fi.Size()} // log once per change
		return c.adminToken
	}
	c.adminToken, c.tokenStamp = tok, stamp
	c.log.Info("admin token reloaded", "file", c.cfg.AdminTokenFile)
	return c.adminToken
}

// warnInsecure says, at every start, what runs without protection: an
// operator must not find out from an incident.
func (c *Controller) warnInsecure() {
	if c.cfg.Insecure {
		c.log.Warn("INSECURE: routers and raft peers are served in plaintext without authentication (--insecure); anyone who reaches the router port can read every change set")
		if c.token() == nil {
			c.log.Warn("INSECURE: the admin API's mutating endpoints are open to anyone who reaches the admin address (--insecure without --admin-token-file)")
		}
	}
}

// errUnauthorized explains a refused admin request.
var errUnauthorized = errors.New("controller: unauthorized")

// requireToken guards a mutating admin endpoint with the bearer token.
func (c *Controller) requireToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := c.checkToken(r); err != nil {
			c.met.adminUnauthorized.Inc()
			c.log.Warn("admin request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="indexgate"`)
			writeError(w, http.StatusUnauthorized, err)
			return
		}
		h(w, r)
	}
}

// checkToken accepts r if it carries the configured token, or if no token
// is configured and the controller runs Insecure.
func (c *Controller) checkToken(r *http.Request) error {
	want := c.token()
	if want == nil {
		if c.cfg.Insecure {
			return nil
		}
		return fmt.Errorf("%w: this endpoint needs an admin token, and none is configured: start the controller with --admin-token-file FILE and send \"Authorization: Bearer <token>\"", errUnauthorized)
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return fmt.Errorf("%w: missing \"Authorization: Bearer <token>\" header (the token is in the controller's --admin-token-file)", errUnauthorized)
	}
	// Constant time, so the comparison leaks nothing about the token
	// through its duration.
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
		return fmt.Errorf("%w: wrong admin token", errUnauthorized)
	}
	return nil
}

// authorize adds this node's admin token to a request it sends to another
// member (a forwarded write, a join).
func (c *Controller) authorize(r *http.Request) {
	if tok := c.token(); tok != nil {
		r.Header.Set("Authorization", "Bearer "+string(tok))
	}
}

// checkRouterCert refuses a router whose certificate does not name the
// RouterID of its Hello: without it a router could claim another's id.
// Plaintext connections (Insecure) have nothing to check.
func checkRouterCert(tc *tls.Conn, routerID string) error {
	if tc == nil {
		return nil
	}
	return pki.PeerPolicy{Kind: pki.Router, Name: routerID}.Check(tc.ConnectionState())
}
