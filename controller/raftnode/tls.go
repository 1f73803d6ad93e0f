package raftnode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// TLSStreamLayer is a raft.StreamLayer that carries raft's network
// transport over mutual TLS: it accepts connections with a server
// configuration and dials with a client configuration, both of which must
// verify the peer (package pki builds them with PeerPolicy{Kind:
// pki.Controller}). Pass it as Config.StreamLayer; Shutdown closes it.
//
// Handshakes run lazily, at the first read or write, in the goroutine raft
// gives each connection, so a peer that stalls its handshake never blocks
// Accept for the others. A peer whose certificate is refused fails there,
// and raft logs and retries as for any broken connection.
type TLSStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
}

// NewTLSStreamLayer listens on bind (host:port; port 0 picks a free port)
// and returns the stream layer. advertise is the address other servers
// dial and must be covered by this node's certificate; "" means the bound
// address, which must then not be an unspecified one (0.0.0.0, [::]).
// server and client must both be non-nil and require and verify the
// peer's certificate: this function cannot check that, and a
// configuration that does not is a hole in the cluster.
func NewTLSStreamLayer(bind, advertise string, server, client *tls.Config) (*TLSStreamLayer, error) {
	if server == nil || client == nil {
		return nil, fmt.Errorf("%w: TLS stream layer needs a server and a client configuration", ErrInvalidConfig)
	}
	if server.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("%w: TLS stream layer: the server configuration must require and verify client certificates", ErrInvalidConfig)
	}
	var adv net.Addr
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			return nil, fmt.Errorf("%w: advertise address %q: %v", ErrInvalidConfig, advertise, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			return nil, fmt.Errorf("%w: advertise address %q is not dialable", ErrInvalidConfig, advertise)
		}
		adv = a
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raftnode: listen on %s: %w", bind, err)
	}
	if adv == nil {
		a, ok := ln.Addr().(*net.TCPAddr)
		if !ok || a.IP.IsUnspecified() {
			_ = ln.Close()
			return nil, fmt.Errorf("%w: raft address %q binds every interface: set an advertise address", ErrInvalidConfig, bind)
		}
		adv = a
	}
	return &TLSStreamLayer{ln: ln, advertise: adv, server: server, client: client}, nil
}

// Accept waits for the next connection and returns it wrapped in TLS; the
// handshake runs at its first read or write.
func (l *TLSStreamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, l.server), nil
}

// Close stops listening. Established connections are raft's to close.
func (l *TLSStreamLayer) Close() error { return l.ln.Close() }

// Addr is the advertised address: raft stores it in its configuration and
// hands it to peers.
func (l *TLSStreamLayer) Addr() net.Addr { return l.advertise }

// Dial connects to a peer and completes the TLS handshake within timeout,
// so a refused certificate surfaces here as an error, not as a raft RPC
// that fails later for no visible reason.
func (l *TLSStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: l.client}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		var ae tls.AlertError
		if errors.As(err, &ae) {
			return nil, fmt.Errorf("raftnode: TLS handshake with %s refused: %w", address, err)
		}
		return nil, fmt.Errorf("raftnode: dial %s: %w", address, err)
	}
	return c, nil
}
