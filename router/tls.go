package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/indexgate/indexgate/pki"
)

// errTLS marks a connection attempt that failed in the TLS handshake,
// rather than in the dial or the protocol handshake: the connection
// attempts metric counts it as tls_error, and it is a deployment problem
// (certificates) that a quick retry does not fix.
var errTLS = errors.New("router: TLS")

// connector opens connections to controllers: mutual TLS 1.3 with the
// router's certificate, or plaintext TCP under Config.Insecure.
type connector struct {
	timeout time.Duration
	// tls is nil for plaintext. Its ServerName is empty: each dial sets
	// the host of the address it dials, which the controller's
	// certificate must name.
	tls *tls.Config
}

// newConnector builds the connector of c, checking the router's own
// certificate: it must load, chain to the CA, be a router certificate,
// and name c.ID.
func newConnector(c *Config) (*connector, error) {
	if c.Insecure {
		return &connector{timeout: c.DialTimeout}, nil
	}
	cfg, err := c.TLS.ClientTLS("", pki.PeerPolicy{Kind: pki.Controller})
	if err != nil {
		return nil, fmt.Errorf("%w: TLS identity: %w", ErrInvalidConfig, err)
	}
	if err := checkOwnCertificate(c.TLS, c.ID); err != nil {
		return nil, err
	}
	return &connector{timeout: c.DialTimeout, tls: cfg}, nil
}

// checkOwnCertificate makes sure the certificate in id names a router
// called name. A controller refuses a router whose Hello claims another
// id than its certificate, so catching the mismatch at start saves an
// operator from a router that connects and is turned away forever.
func checkOwnCertificate(id pki.Identity, name string) error {
	pair, err := tls.LoadX509KeyPair(id.CertFile, id.KeyFile)
	if err != nil {
		return fmt.Errorf("%w: TLS identity: %w", ErrInvalidConfig, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("%w: TLS certificate %s: %w", ErrInvalidConfig, id.CertFile, err)
		}
	}
	// ClientTLS verified the chain already; PeerName only reads the
	// identity, with the same rules the controller applies.
	kind, cn, err := pki.PeerName(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}})
	if err != nil {
		return fmt.Errorf("%w: TLS certificate %s: %w", ErrInvalidConfig, id.CertFile, err)
	}
	if kind != pki.Router {
		return fmt.Errorf("%w: TLS certificate %s is a %s certificate; a router needs a router certificate (controller pki issue --router %s)",
			ErrInvalidConfig, id.CertFile, kind, name)
	}
	if cn != name {
		return fmt.Errorf("%w: TLS certificate %s names router %q but the router's id is %q: use the certificate issued for %q or set --id %s",
			ErrInvalidConfig, id.CertFile, cn, name, name, cn)
	}
	return nil
}

// dial connects to addr and, with TLS, completes the handshake before
// returning, so certificate problems surface here with a clear error
// (wrapping errTLS and pki.ErrPeerRejected or pki.ErrNotTLS) rather than
// as a failed first read.
func (c *connector) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: c.timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil || c.tls == nil {
		return nc, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cfg := c.tls.Clone()
	cfg.ServerName = host
	tc := tls.Client(nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := pki.Handshake(hctx, tc); err != nil {
		tc.Close()
		return nil, fmt.Errorf("%w: %w", errTLS, err)
	}
	return tc, nil
}

// tlsRefusal reports a session that ended because of TLS: a failed
// handshake on this side, or (TLS 1.3 clients learn of it only at their
// first read) the controller refusing the router's certificate.
func tlsRefusal(err error) bool {
	// crypto/tls reports a peer's alert as a net.OpError "remote error"
	// around an unexported type.
	var op *net.OpError
	return errors.Is(err, errTLS) || (errors.As(err, &op) && op.Op == "remote error")
}
