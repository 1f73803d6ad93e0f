package router

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// testPKI is a CA with a controller certificate for 127.0.0.1 and a
// router certificate named r1, as "controller pki init" and "controller
// pki issue router r1" write them.
func testPKI(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.Init(dir, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	issue(t, dir, pki.Router, "r1", pki.IssueOptions{})
	return dir
}

func issue(t testing.TB, dir string, k pki.Kind, name string, o pki.IssueOptions) pki.Identity {
	t.Helper()
	if _, _, err := pki.Issue(dir, k, name, o); err != nil {
		t.Fatal(err)
	}
	return pki.IdentityFor(dir, k, name)
}

// tlsConfig is a router Config using the router certificate r1 of dir.
func tlsConfig(t testing.TB, pkiDir string, controllers ...string) Config {
	cfg := testConfig(t.TempDir(), controllers...)
	cfg.Insecure = false
	cfg.TLS = pki.IdentityFor(pkiDir, pki.Router, "r1")
	return cfg
}

func controllerTLS(t testing.TB, id pki.Identity) *tls.Config {
	t.Helper()
	cfg, err := id.ServerTLS(pki.PeerPolicy{Kind: pki.Router})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// rawServerTLS is a server configuration without pki's checks, for
// certificates that pki rightly refuses to serve with (expired, or of
// the router kind).
func rawServerTLS(t testing.TB, id pki.Identity) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(id.CertFile, id.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
}

// tlsServer accepts TLS connections on 127.0.0.1, runs the handshake and
// closes: the router's dialer then reads EOF, or the alert of a refusal.
func tlsServer(t testing.TB, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				tc := tls.Server(nc, cfg)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				_ = tc.Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// plaintextServer answers whatever it is sent with a plaintext wire Error
// frame: a controller still running with --insecure.
func plaintextServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	frame, err := wire.EncodeFrame(nil, &wire.Error{Code: wire.ErrCodeMalformed, Message: "not a frame"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_, _ = nc.Read(make([]byte, 512))
				_, _ = nc.Write(frame)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestTLSDial checks the router's dialer against controllers it must
// accept and ones it must refuse.
func TestTLSDial(t *testing.T) {
	dir := testPKI(t)
	ctl := pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)
	other := filepath.Join(t.TempDir(), "other-pki")
	if err := pki.Init(other, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	wrongHost := issue(t, dir, pki.Controller, "elsewhere", pki.IssueOptions{Hosts: []string{"ctl.example.com"}})
	expired := issue(t, dir, pki.Controller, "expired", pki.IssueOptions{
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
	})
	// A router certificate from another CA: the controller refuses it. The
	// router trusts both CAs, so that only the controller's check fails.
	stranger := issue(t, other, pki.Router, "r1", pki.IssueOptions{})
	stranger.CAFile = filepath.Join(t.TempDir(), "both-cas.crt")
	var bundle []byte
	for _, d := range []string{dir, other} {
		b, err := os.ReadFile(filepath.Join(d, pki.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, b...)
	}
	if err := os.WriteFile(stranger.CAFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	strangerCfg := tlsConfig(t, dir)
	strangerCfg.TLS = stranger

	tests := []struct {
		name   string
		server string
		cfg    Config
		// dialErr is what the dial must fail with; nil: the dial works.
		dialErr error
		// readRefused: the dial works but the controller refuses the
		// router at the first read (TLS 1.3 client authentication).
		readRefused bool
	}{
		{"accepted", tlsServer(t, controllerTLS(t, ctl)), tlsConfig(t, dir), nil, false},
		{"controller from another CA", tlsServer(t, controllerTLS(t, pki.IdentityFor(other, pki.Controller, pki.DefaultControllerName))), tlsConfig(t, dir), pki.ErrPeerRejected, false},
		{"controller certificate for another host", tlsServer(t, controllerTLS(t, wrongHost)), tlsConfig(t, dir), pki.ErrPeerRejected, false},
		{"expired controller certificate", tlsServer(t, rawServerTLS(t, expired)), tlsConfig(t, dir), pki.ErrPeerRejected, false},
		{"router certificate posing as a controller", tlsServer(t, rawServerTLS(t, pki.IdentityFor(dir, pki.Router, "r1"))), tlsConfig(t, dir), pki.ErrPeerRejected, false},
		{"plaintext controller", plaintextServer(t), tlsConfig(t, dir), pki.ErrNotTLS, false},
		{"router certificate from another CA", tlsServer(t, controllerTLS(t, ctl)), strangerCfg, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg.withDefaults()
			conn, err := newConnector(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := conn.dial(context.Background(), tc.server)
			if tc.dialErr != nil {
				if !errors.Is(err, tc.dialErr) || !tlsRefusal(err) {
					t.Fatalf("dial: %v, want %v", err, tc.dialErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = nc.Read(make([]byte, 1))
			if tc.readRefused && !tlsRefusal(err) {
				t.Fatalf("read after the handshake: %v, want the controller's TLS alert", err)
			}
			if !tc.readRefused && tlsRefusal(err) {
				t.Fatalf("read after the handshake: %v", err)
			}
		})
	}
}

// TestTLSRouterIdentity checks that New refuses an identity that cannot
// work, before it opens anything.
func TestTLSRouterIdentity(t *testing.T) {
	dir := testPKI(t)
	issue(t, dir, pki.Router, "r2", pki.IssueOptions{})
	expired := issue(t, dir, pki.Router, "old", pki.IssueOptions{
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
	})
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"certificate of another router", func(c *Config) { c.TLS = pki.IdentityFor(dir, pki.Router, "r2") }, `names router "r2" but the router's id is "r1"`},
		{"controller certificate", func(c *Config) {
			c.TLS = pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)
		}, "is a controller certificate"},
		{"expired certificate", func(c *Config) { c.ID, c.TLS = "old", expired }, "cannot serve as a TLS client certificate"},
		{"missing key", func(c *Config) { c.TLS.KeyFile = filepath.Join(dir, "nothing.key") }, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsConfig(t, dir, "127.0.0.1:1")
			tc.mod(&cfg)
			_, err := New(context.Background(), cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want ErrInvalidConfig with %q", err, tc.want)
			}
		})
	}
}

// TestTLSSession runs a router against a controller over mutual TLS, and
// checks that one with the wrong CA never gets a session.
func TestTLSSession(t *testing.T) {
	dir := testPKI(t)
	fc := newFakeController(t)
	fc.appendN(3)
	addr := fc.listenTLS(controllerTLS(t, pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)))
	tr := startRouter(t, tlsConfig(t, dir, addr), nil)
	waitConverged(t, tr, fc)
	fc.mu.Lock()
	peer := fc.peers[0]
	fc.mu.Unlock()
	if peer != "r1" {
		t.Errorf("the controller saw router certificate %q, want r1", peer)
	}
	tr.stop(t)

	// A controller whose certificate the router does not trust.
	other := filepath.Join(t.TempDir(), "other-pki")
	if err := pki.Init(other, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := fc.listenTLS(controllerTLS(t, pki.IdentityFor(other, pki.Controller, pki.DefaultControllerName)))
	tr = startRouter(t, tlsConfig(t, dir, bad), nil)
	waitFor(t, "a refused TLS connection attempt", func() bool {
		return metricValue(t, tr.reg, "indexgate_router_connection_attempts_total", "result", "tls_error") > 0
	})
	s := tr.status(t)
	if s.Connected || !strings.Contains(s.LastError, "certificate") {
		t.Errorf("status after a refused controller: connected %v, lastError %q", s.Connected, s.LastError)
	}
	if n := len(fc.helloList()); n != 1 {
		t.Errorf("%d Hellos reached controllers, want only the first router's", n)
	}
}
