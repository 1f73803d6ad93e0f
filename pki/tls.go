package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Identity names the files one side of a mutual TLS link needs: its own
// certificate and key, and the CA certificate its peers must chain to.
// IdentityFor builds one for the layout Init and Issue write.
type Identity struct {
	// CertFile is this side's certificate, PEM.
	CertFile string
	// KeyFile is the certificate's private key, PEM (PKCS#8, or what
	// crypto/tls reads).
	KeyFile string
	// CAFile holds the CA certificate(s), PEM, that peer certificates must
	// chain to.
	CAFile string
	// Logger receives certificate reloads and reloads that failed (the
	// previous certificate keeps serving). Default: discard.
	Logger *slog.Logger
}

// Validate reports the first empty file name.
func (id Identity) Validate() error {
	switch {
	case id.CertFile == "":
		return fmt.Errorf("%w: no certificate file", ErrInvalid)
	case id.KeyFile == "":
		return fmt.Errorf("%w: no key file", ErrInvalid)
	case id.CAFile == "":
		return fmt.Errorf("%w: no CA file", ErrInvalid)
	}
	return nil
}

// ServerTLS returns the configuration of the accepting side of a link (a
// controller serving routers, or a raft peer accepting another): TLS 1.3
// only, the client must present a certificate that chains to CAFile, and
// allow must accept that certificate's kind and name.
//
// The certificate and key are read now, and checked (they match, chain to
// CAFile, are valid now, are usable by a server: only controller
// certificates are), so a misconfiguration fails at start with a clear
// error. After that they are re-read at the first handshake after either
// file changes, so renewing a certificate (Issue with Force) needs no
// restart; a replacement that does not load or check is logged and the
// previous certificate keeps serving. CAFile is read once: a new CA needs
// a restart.
func (id Identity) ServerTLS(allow PeerPolicy) (*tls.Config, error) {
	pair, roots, err := id.load(x509.ExtKeyUsageServerAuth, allow)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  roots,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return pair.get()
		},
		VerifyConnection: allow.Check,
	}, nil
}

// ClientTLS returns the configuration of the dialling side of a link (a
// router dialling its controller, or a raft peer dialling another): TLS
// 1.3 only, the server's certificate must chain to CAFile, carry
// serverName among its DNS or IP SANs, and be accepted by expect; this
// side presents its own certificate. serverName may be "" when the
// connection is made with tls.Dial or tls.Dialer, which take it from the
// address (tls.Client needs it). The certificate is loaded, checked and
// reloaded as in ServerTLS.
func (id Identity) ClientTLS(serverName string, expect PeerPolicy) (*tls.Config, error) {
	pair, roots, err := id.load(x509.ExtKeyUsageClientAuth, expect)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pair.get()
		},
		VerifyConnection: expect.Check,
	}, nil
}

func (id Identity) load(role x509.ExtKeyUsage, p PeerPolicy) (*keyPair, *x509.CertPool, error) {
	if err := id.Validate(); err != nil {
		return nil, nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	cas, err := readCerts(id.CAFile)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	log := id.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pair := &keyPair{id: id, role: role, roots: roots, log: log}
	if _, err := pair.get(); err != nil {
		return nil, nil, err
	}
	return pair, roots, nil
}

// keyPair is this side's certificate, cached and reloaded when its files
// change. Checking two file stats per handshake is cheap next to the
// handshake itself and needs no watcher goroutine.
type keyPair struct {
	id    Identity
	role  x509.ExtKeyUsage
	roots *x509.CertPool
	log   *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	loaded  stamp // files cert was read from
	failed  stamp // files that failed to load last, so each is logged once
	failErr error
	statErr bool // a stat failure was logged
}

// stamp identifies the versions of the certificate and key files. Issue
// replaces files by rename, so the file identity changes even when the
// modification time (coarse on some file systems) does not.
type stamp struct{ cert, key os.FileInfo }

func (s stamp) same(o stamp) bool {
	eq := func(a, b os.FileInfo) bool {
		return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
	}
	return eq(s.cert, o.cert) && eq(s.key, o.key)
}

func (p *keyPair) get() (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs, err1 := os.Stat(p.id.CertFile)
	ks, err2 := os.Stat(p.id.KeyFile)
	if err := errors.Join(err1, err2); err != nil {
		if p.cert == nil {
			return nil, fmt.Errorf("pki: %w", err)
		}
		// Mid-rotation by hand (rm then cp), or a mistake: either way the
		// current certificate is better than failing every handshake.
		if !p.statErr {
			p.statErr = true
			p.log.Warn("keeping the current TLS certificate: its files are unreadable", "cert", p.id.CertFile, "err", err)
		}
		return p.cert, nil
	}
	p.statErr = false
	st := stamp{cs, ks}
	if p.cert != nil && st.same(p.loaded) {
		return p.cert, nil
	}
	if st.same(p.failed) {
		if p.cert == nil {
			return nil, p.failErr
		}
		return p.cert, nil
	}
	c, err := p.read()
	if err != nil {
		p.failed, p.failErr = st, err
		if p.cert == nil {
			return nil, err
		}
		// A key written before its certificate (as Issue does) looks like
		// a mismatch for a moment; the next handshake sees both.
		p.log.Warn("keeping the current TLS certificate: the new one does not load", "cert", p.id.CertFile, "err", err)
		return p.cert, nil
	}
	if p.cert != nil {
		p.log.Info("TLS certificate reloaded", "cert", p.id.CertFile,
			"serial", c.Leaf.SerialNumber.Text(16), "notAfter", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	p.cert, p.loaded, p.failed, p.failErr = c, st, stamp{}, nil
	return c, nil
}

// read loads and checks the pair: it must chain to the CA for this side's
// role, be valid now and carry an indexgate identity.
func (p *keyPair) read() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(p.id.CertFile, p.id.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load %s and %s: %w", p.id.CertFile, p.id.KeyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("pki: %s: %w", p.id.CertFile, err)
		}
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	use := "client"
	if p.role == x509.ExtKeyUsageServerAuth {
		use = "server"
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{
		Roots: p.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{p.role},
	}); err != nil {
		return nil, fmt.Errorf("%w: %s cannot serve as a TLS %s certificate with CA %s: %w",
			ErrInvalid, p.id.CertFile, use, p.id.CAFile, err)
	}
	if _, _, err := identityOf(c.Leaf); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, p.id.CertFile, err)
	}
	return &c, nil
}

// PeerPolicy says which peer certificates a side accepts, beyond chaining
// to the CA: the kind, and optionally the name.
type PeerPolicy struct {
	// Kind the peer certificate must be issued for. Required.
	Kind Kind
	// Name, if set, is the only name accepted.
	Name string
	// Allow, if set, is called with the peer's name and refuses the peer
	// by returning an error (an allow-list of router ids, say).
	Allow func(name string) error
}

// Validate reports an unset or unknown Kind or an invalid Name.
func (p PeerPolicy) Validate() error {
	if !p.Kind.valid() {
		return fmt.Errorf("%w: peer policy: kind %v: want Router or Controller", ErrInvalid, p.Kind)
	}
	if p.Name != "" {
		if err := ValidateName(p.Name); err != nil {
			return fmt.Errorf("peer policy: %w", err)
		}
	}
	return nil
}

// Check accepts or refuses the peer of a completed handshake; the
// configurations of ServerTLS and ClientTLS run it as VerifyConnection.
// A controller also calls it after reading a router's Hello, with Name set
// to Hello.RouterID, so a router cannot claim another router's id:
//
//	err := pki.PeerPolicy{Kind: pki.Router, Name: hello.RouterID}.Check(tc.ConnectionState())
//
// Errors wrap ErrPeerRejected.
func (p PeerPolicy) Check(cs tls.ConnectionState) error {
	k, name, err := PeerName(cs)
	if err != nil {
		return err
	}
	if k != p.Kind {
		return fmt.Errorf("%w: %s certificate %q where a %s certificate is required", ErrPeerRejected, k, name, p.Kind)
	}
	if p.Name != "" && name != p.Name {
		return fmt.Errorf("%w: %s certificate %q where %q is required", ErrPeerRejected, k, name, p.Name)
	}
	if p.Allow != nil {
		if err := p.Allow(name); err != nil {
			return fmt.Errorf("%w: %s %q: %w", ErrPeerRejected, k, name, err)
		}
	}
	return nil
}

// PeerName returns the kind and name of the certificate the peer of a
// completed handshake presented. It only believes certificates that TLS
// verified against the CA: a connection state without verified chains is
// an error wrapping ErrPeerRejected.
func PeerName(cs tls.ConnectionState) (Kind, string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return 0, "", fmt.Errorf("%w: no verified peer certificate", ErrPeerRejected)
	}
	k, name, err := identityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return 0, "", fmt.Errorf("%w: %w", ErrPeerRejected, err)
	}
	return k, name, nil
}

// Handshake runs c's handshake now (crypto/tls would run it lazily at the
// first read or write) bounded by ctx, and says plainly what went wrong:
// errors wrap ErrNotTLS for a peer that spoke plaintext, ErrPeerRejected
// for a peer certificate this side refused, and name the remote address.
// On the server it catches every refusal of the client. A TLS 1.3 client,
// though, completes its handshake before the server has checked the
// client's certificate: a client refused by its server sees the server's
// alert (a tls.AlertError) at its first read.
func Handshake(ctx context.Context, c *tls.Conn) error {
	err := c.HandshakeContext(ctx)
	if err == nil {
		return nil
	}
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &rh):
		return fmt.Errorf("%w: %s (is it configured without TLS?): %w", ErrNotTLS, c.RemoteAddr(), err)
	case errors.As(err, &cv):
		return fmt.Errorf("%w: %s: %w", ErrPeerRejected, c.RemoteAddr(), err)
	}
	return fmt.Errorf("pki: TLS handshake with %s: %w", c.RemoteAddr(), err)
}
