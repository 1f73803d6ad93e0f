package router

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
)

// minTokenBytes is the shortest admin token accepted: 16 random bytes
// resist guessing over the network; shorter ones are typos or
// placeholders.
const minTokenBytes = 16

// tokenHint tells operators how to make a good token.
const tokenHint = "e.g. openssl rand -hex 32 > FILE"

// adminAuth guards the mutating admin endpoints with a bearer token read
// from a file. The file is stat'ed on every mutating request and read again
// when it changed, so a token rotates without a restart; a replacement
// that does not read or is too short is logged and the previous token stays.
type adminAuth struct {
	path string // "": no token configured
	open bool   // no token and Insecure: mutating endpoints need none
	log  *slog.Logger

	mu     sync.Mutex
	sum    [sha256.Size]byte // sha256 of the token; compared in constant time
	loaded os.FileInfo
	failed os.FileInfo // the version that failed last, logged once
}

// newAdminAuth reads the token file, if any; a missing, unreadable or
// short token is a configuration error.
func newAdminAuth(path string, insecure bool, log *slog.Logger) (*adminAuth, error) {
	a := &adminAuth{path: path, open: path == "" && insecure, log: log}
	if path == "" {
		return a, nil
	}
	fi, err := os.Stat(path)
	if err == nil {
		err = a.read(fi)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: admin token file: %w", ErrInvalidConfig, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the admin token file is readable by other users; chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
	}
	return a, nil
}

func (a *adminAuth) read(fi os.FileInfo) error {
	b, err := os.ReadFile(a.path)
	if err != nil {
		return err
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < minTokenBytes {
		return fmt.Errorf("%s holds a token of %d bytes; use at least %d (%s)", a.path, len(tok), minTokenBytes, tokenHint)
	}
	a.sum, a.loaded, a.failed = sha256.Sum256(tok), fi, nil
	return nil
}

// current returns the token's digest, reloading the file if it changed.
func (a *adminAuth) current() [sha256.Size]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	fi, err := os.Stat(a.path)
	if err != nil || sameFile(fi, a.loaded) || sameFile(fi, a.failed) {
		return a.sum
	}
	if err := a.read(fi); err != nil {
		a.failed = fi
		a.log.Warn("admin token file changed but is not usable; the previous token stays valid", "file", a.path, "err", err)
		return a.sum
	}
	a.log.Info("admin token reloaded", "file", a.path)
	return a.sum
}

func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// errUnauthorized is the reason a mutating request was refused.
var errUnauthorized = errors.New("unauthorized")

// check authorizes a mutating request, or says why not.
func (a *adminAuth) check(req *http.Request) error {
	if a.open {
		return nil
	}
	if a.path == "" {
		return fmt.Errorf("%w: mutating admin endpoints are disabled because the router has no admin token: "+
			"start it with --admin-token-file FILE (%s) and send \"Authorization: Bearer TOKEN\"", errUnauthorized, tokenHint)
	}
	h := req.Header.Get("Authorization")
	if h == "" {
		return fmt.Errorf("%w: missing bearer token: send \"Authorization: Bearer TOKEN\" with the token in the router's --admin-token-file", errUnauthorized)
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return fmt.Errorf("%w: the Authorization header must be \"Bearer TOKEN\"", errUnauthorized)
	}
	// Comparing digests keeps the comparison constant-time whatever the
	// length of the token sent.
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	want := a.current()
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return fmt.Errorf("%w: invalid bearer token", errUnauthorized)
	}
	return nil
}

// mutating wraps a handler that changes the router: it runs only for an
// authorized request; others get 401 and are logged and counted.
func (r *Router) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if err := r.auth.check(req); err != nil {
			r.met.adminUnauthorized.Inc()
			r.log.Warn("admin request refused", "method", req.Method, "path", req.URL.Path, "remote", req.RemoteAddr, "err", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="indexgate-router"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		h(w, req)
	}
}
