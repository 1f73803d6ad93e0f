package pki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indexgate/indexgate/pki"
)

// TestHandshake runs real mutual TLS handshakes over 127.0.0.1 between a
// controller's ServerTLS and a variety of clients, and between a router's
// ClientTLS and a variety of servers, with both key algorithms.
func TestHandshake(t *testing.T) {
	for _, alg := range []pki.Algorithm{pki.ECDSAP256, pki.Ed25519} {
		t.Run(alg.String(), func(t *testing.T) { testHandshake(t, alg) })
	}
}

func testHandshake(t *testing.T, alg pki.Algorithm) {
	dir := pkiDir(t, alg)
	other := pkiDir(t, alg) // another deployment's CA
	ctl := pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)
	r1 := pki.IdentityFor(dir, pki.Router, "r1")
	r2 := pki.IdentityFor(dir, pki.Router, "r2")
	expired := pki.IdentityFor(dir, pki.Router, "old")
	now := time.Now()
	must[string](t)(func() (string, error) {
		c, _, err := pki.Issue(dir, pki.Router, "old", pki.IssueOptions{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})
		return c, err
	}())

	serverTLS := func(p pki.PeerPolicy) func() *tls.Config {
		return func() *tls.Config { return must[*tls.Config](t)(ctl.ServerTLS(p)) }
	}
	clientTLS := func(id pki.Identity, serverName string) func() *tls.Config {
		return func() *tls.Config {
			return must[*tls.Config](t)(id.ClientTLS(serverName, pki.PeerPolicy{Kind: pki.Controller}))
		}
	}
	// raw configurations stand for peers that do not use this package.
	rawClient := func(certs ...tls.Certificate) func() *tls.Config {
		return func() *tls.Config {
			return &tls.Config{Certificates: certs, RootCAs: caPool(t, dir), ServerName: "localhost", MinVersion: tls.VersionTLS13}
		}
	}
	rawServer := func(cert tls.Certificate) func() *tls.Config {
		return func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: caPool(t, dir)}
		}
	}
	routerURI := &url.URL{Scheme: "indexgate", Host: "router", Path: "/r1"}

	tests := []struct {
		name   string
		server func() *tls.Config
		client func() *tls.Config
		// plaintext replaces client with a client that speaks no TLS.
		plaintext bool
		// wantServer and wantClient are the sentinel (or nil) and a
		// substring of the error each side must see; "" with a nil
		// sentinel means success.
		wantServer, wantClient     error
		serverSubstr, clientSubstr string
		wantPeerOfServer           string // name the server sees, on success
	}{
		{name: "accepted", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: clientTLS(r1, "localhost"), wantPeerOfServer: "r1"},
		{name: "accepted by IP SAN", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: clientTLS(r2, "127.0.0.1"), wantPeerOfServer: "r2"},
		{name: "accepted by name and allow-list", server: serverTLS(pki.PeerPolicy{Kind: pki.Router, Name: "r1", Allow: func(string) error { return nil }}),
			client: clientTLS(r1, "localhost"), wantPeerOfServer: "r1"},
		{name: "wrong router name", server: serverTLS(pki.PeerPolicy{Kind: pki.Router, Name: "r1"}), client: clientTLS(r2, "localhost"),
			wantServer: pki.ErrPeerRejected, serverSubstr: `router certificate "r2" where "r1" is required`, clientSubstr: "bad certificate"},
		{name: "refused by allow-list", server: serverTLS(pki.PeerPolicy{Kind: pki.Router, Allow: func(string) error { return errors.New("not on the list") }}),
			client: clientTLS(r1, "localhost"), wantServer: pki.ErrPeerRejected, serverSubstr: "not on the list", clientSubstr: "bad certificate"},
		{name: "controller certificate posing as a router", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: clientTLS(ctl, "localhost"),
			wantServer: pki.ErrPeerRejected, serverSubstr: `controller certificate "controller" where a router certificate is required`, clientSubstr: "bad certificate"},
		{name: "router certificate as a server", server: rawServer(keyPair(t, r1)), client: clientTLS(r2, "localhost"),
			wantClient: pki.ErrPeerRejected, clientSubstr: "not valid for any names", serverSubstr: "bad certificate"},
		{name: "router certificate with a host name as a server", server: rawServer(forge(t, dir, &x509.Certificate{
			Subject: name("r1"), URIs: []*url.URL{routerURI}, DNSNames: []string{"localhost"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		})), client: clientTLS(r2, "localhost"),
			wantClient: pki.ErrPeerRejected, clientSubstr: "incompatible key usage", serverSubstr: "bad certificate"},
		{name: "router identity with server usage as a server", server: rawServer(forge(t, dir, &x509.Certificate{
			Subject: name("r1"), URIs: []*url.URL{routerURI}, DNSNames: []string{"localhost"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		})), client: clientTLS(r2, "localhost"),
			wantClient: pki.ErrPeerRejected, clientSubstr: `router certificate "r1" where a controller certificate is required`, serverSubstr: "bad certificate"},
		{name: "client certificate from another CA", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: rawClient(keyPair(t, pki.IdentityFor(other, pki.Router, "r1"))),
			wantServer: pki.ErrPeerRejected, serverSubstr: "unknown authority", clientSubstr: "unknown certificate authority"},
		{name: "server certificate from another CA", server: rawServer(keyPair(t, pki.IdentityFor(other, pki.Controller, pki.DefaultControllerName))), client: clientTLS(r1, "localhost"),
			wantClient: pki.ErrPeerRejected, clientSubstr: "unknown authority", serverSubstr: "bad certificate"},
		{name: "expired client certificate", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: rawClient(keyPair(t, expired)),
			wantServer: pki.ErrPeerRejected, serverSubstr: "expired", clientSubstr: "expired certificate"},
		{name: "client without certificate", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: rawClient(),
			serverSubstr: "didn't provide a certificate", clientSubstr: "certificate required"},
		{name: "certificate without indexgate identity", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: rawClient(forge(t, dir, &x509.Certificate{
			Subject: name("r1"), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		})), wantServer: pki.ErrPeerRejected, serverSubstr: "no indexgate:// URI SAN", clientSubstr: "bad certificate"},
		{name: "wrong controller address", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: clientTLS(r1, "ctl.example.com"),
			wantClient: pki.ErrPeerRejected, clientSubstr: "ctl.example.com", serverSubstr: "bad certificate"},
		{name: "TLS 1.2 client", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), client: func() *tls.Config {
			c := rawClient(keyPair(t, r1))()
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return c
		}, serverSubstr: "unsupported versions", clientSubstr: "protocol version"},
		{name: "plaintext client", server: serverTLS(pki.PeerPolicy{Kind: pki.Router}), plaintext: true,
			wantServer: pki.ErrNotTLS, serverSubstr: "configured without TLS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := plaintextClient
			if !tc.plaintext {
				client = tlsClient(tc.client())
			}
			srv, cli := dial(t, tc.server(), client)
			check := func(side string, got error, want error, substr string) {
				t.Helper()
				if want == nil && substr == "" {
					if got != nil {
						t.Fatalf("%s: %v", side, got)
					}
					return
				}
				if got == nil {
					t.Fatalf("%s: no error, want %v %q", side, want, substr)
				}
				if want != nil && !errors.Is(got, want) {
					t.Errorf("%s: %v, want %v", side, got, want)
				}
				if !strings.Contains(got.Error(), substr) {
					t.Errorf("%s: %q does not say %q", side, got, substr)
				}
				if strings.Contains(got.Error(), "\n") {
					t.Errorf("%s: error is not one line: %q", side, got)
				}
			}
			check("server", srv.err, tc.wantServer, tc.serverSubstr)
			if !tc.plaintext {
				check("client", cli.err, tc.wantClient, tc.clientSubstr)
			}
			if tc.wantPeerOfServer == "" {
				return
			}
			if v := srv.state.Version; v != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", v)
			}
			k, n, err := pki.PeerName(srv.state)
			if err != nil || k != pki.Router || n != tc.wantPeerOfServer {
				t.Errorf("server sees %v %q %v, want router %q", k, n, err, tc.wantPeerOfServer)
			}
			k, n, err = pki.PeerName(cli.state)
			if err != nil || k != pki.Controller || n != pki.DefaultControllerName {
				t.Errorf("client sees %v %q %v, want the controller", k, n, err)
			}
			// The Hello check: the controller compares the id a router
			// sends with its certificate.
			if err := (pki.PeerPolicy{Kind: pki.Router, Name: tc.wantPeerOfServer}).Check(srv.state); err != nil {
				t.Errorf("Hello with its own id refused: %v", err)
			}
			if err := (pki.PeerPolicy{Kind: pki.Router, Name: "someone-else"}).Check(srv.state); !errors.Is(err, pki.ErrPeerRejected) {
				t.Errorf("Hello with another router's id: %v, want ErrPeerRejected", err)
			}
		})
	}
}

// TestControllerToController is the raft link: both ends controllers.
func TestControllerToController(t *testing.T) {
	dir := pkiDir(t, pki.AlgorithmDefault)
	if _, _, err := pki.Issue(dir, pki.Controller, "c2", pki.IssueOptions{Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	srvCfg := must[*tls.Config](t)(pki.IdentityFor(dir, pki.Controller, "c2").ServerTLS(pki.PeerPolicy{Kind: pki.Controller}))
	cliCfg := must[*tls.Config](t)(pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName).ClientTLS("127.0.0.1", pki.PeerPolicy{Kind: pki.Controller, Name: "c2"}))
	srv, cli := dial(t, srvCfg, tlsClient(cliCfg))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("server %v, client %v", srv.err, cli.err)
	}
	// A router dialling the raft port is refused.
	rCfg := must[*tls.Config](t)(pki.IdentityFor(dir, pki.Router, "r1").ClientTLS("127.0.0.1", pki.PeerPolicy{Kind: pki.Controller}))
	srv, _ = dial(t, srvCfg, tlsClient(rCfg))
	if !errors.Is(srv.err, pki.ErrPeerRejected) {
		t.Fatalf("router on the raft link: %v, want ErrPeerRejected", srv.err)
	}
}

// TestReload renews certificates on disk between two connections and
// checks that each side presents the new one without being rebuilt, and
// keeps the old one when the replacement is broken.
func TestReload(t *testing.T) {
	dir := pkiDir(t, pki.AlgorithmDefault)
	var logs logBuffer
	ctl := pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)
	ctl.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r1 := pki.IdentityFor(dir, pki.Router, "r1")
	srvCfg := must[*tls.Config](t)(ctl.ServerTLS(pki.PeerPolicy{Kind: pki.Router}))
	cliCfg := must[*tls.Config](t)(r1.ClientTLS("localhost", pki.PeerPolicy{Kind: pki.Controller}))

	serials := func() (router, controller string) {
		t.Helper()
		srv, cli := dial(t, srvCfg, tlsClient(cliCfg))
		if srv.err != nil || cli.err != nil {
			t.Fatalf("server %v, client %v", srv.err, cli.err)
		}
		return srv.state.PeerCertificates[0].SerialNumber.String(), cli.state.PeerCertificates[0].SerialNumber.String()
	}
	onDisk := func(id pki.Identity) string { return readCert(t, id.CertFile).SerialNumber.String() }

	r, c := serials()
	if r != onDisk(r1) || c != onDisk(ctl) {
		t.Fatal("handshake does not present the certificates on disk")
	}
	for _, k := range []pki.Kind{pki.Router, pki.Controller} {
		name := "r1"
		if k == pki.Controller {
			name = pki.DefaultControllerName
		}
		if _, _, err := pki.Issue(dir, k, name, pki.IssueOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	r2, c2 := serials()
	if r2 == r || c2 == c {
		t.Fatalf("certificates not reloaded: router %s→%s controller %s→%s", r, r2, c, c2)
	}
	if r2 != onDisk(r1) || c2 != onDisk(ctl) {
		t.Fatal("reloaded certificates are not the ones on disk")
	}

	// A broken replacement: the controller keeps its current certificate
	// and says so.
	if err := os.WriteFile(ctl.CertFile+".new", []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ctl.CertFile+".new", ctl.CertFile); err != nil {
		t.Fatal(err)
	}
	if _, c3 := serials(); c3 != c2 {
		t.Fatalf("serving %s after a broken replacement, want %s", c3, c2)
	}
	if !strings.Contains(logs.String(), "keeping the current TLS certificate") {
		t.Errorf("broken replacement not logged: %q", logs.String())
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("reload not logged: %q", logs.String())
	}
}

// TestConfigErrors checks that ServerTLS and ClientTLS refuse, at
// construction, what would only fail later at a handshake.
func TestConfigErrors(t *testing.T) {
	dir := pkiDir(t, pki.AlgorithmDefault)
	other := pkiDir(t, pki.AlgorithmDefault)
	now := time.Now()
	if _, _, err := pki.Issue(dir, pki.Router, "old", pki.IssueOptions{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r1 := pki.IdentityFor(dir, pki.Router, "r1")
	ctl := pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)
	foreign := pki.IdentityFor(other, pki.Router, "r1")
	foreign.CAFile = r1.CAFile
	routers := pki.PeerPolicy{Kind: pki.Router}
	tests := []struct {
		name   string
		build  func() (*tls.Config, error)
		want   error
		substr string
	}{
		{"router certificate cannot serve", func() (*tls.Config, error) { return r1.ServerTLS(routers) }, pki.ErrInvalid, "cannot serve as a TLS server certificate"},
		{"expired own certificate", func() (*tls.Config, error) {
			return pki.IdentityFor(dir, pki.Router, "old").ClientTLS("", pki.PeerPolicy{Kind: pki.Controller})
		}, pki.ErrInvalid, "expired"},
		{"certificate of another CA", func() (*tls.Config, error) { return foreign.ClientTLS("", pki.PeerPolicy{Kind: pki.Controller}) }, pki.ErrInvalid, "unknown authority"},
		{"missing key", func() (*tls.Config, error) {
			id := ctl
			id.KeyFile = filepath.Join(dir, "nope.key")
			return id.ServerTLS(routers)
		}, os.ErrNotExist, "nope.key"},
		{"key of another certificate", func() (*tls.Config, error) {
			id := ctl
			id.KeyFile = r1.KeyFile
			return id.ServerTLS(routers)
		}, nil, "private key does not match"},
		{"empty identity", func() (*tls.Config, error) { return pki.Identity{}.ServerTLS(routers) }, pki.ErrInvalid, "no certificate file"},
		{"policy without kind", func() (*tls.Config, error) { return ctl.ServerTLS(pki.PeerPolicy{}) }, pki.ErrInvalid, "kind"},
		{"policy with invalid name", func() (*tls.Config, error) { return ctl.ServerTLS(pki.PeerPolicy{Kind: pki.Router, Name: "a/b"}) }, pki.ErrInvalid, "a/b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.build()
			if err == nil {
				t.Fatalf("built %v, want an error", cfg)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("%q does not say %q", err, tc.substr)
			}
		})
	}
}

// TestPeerNameUnverified checks that PeerName trusts only verified chains.
func TestPeerNameUnverified(t *testing.T) {
	dir := pkiDir(t, pki.AlgorithmDefault)
	leaf := readCert(t, pki.IdentityFor(dir, pki.Router, "r1").CertFile)
	if _, _, err := pki.PeerName(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); !errors.Is(err, pki.ErrPeerRejected) {
		t.Fatalf("unverified peer certificate: %v, want ErrPeerRejected", err)
	}
	k, n, err := pki.PeerName(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}})
	if err != nil || k != pki.Router || n != "r1" {
		t.Fatalf("verified: %v %q %v", k, n, err)
	}
}

// TestIdentityParsing feeds PeerName certificates Issue would never make.
func TestIdentityParsing(t *testing.T) {
	u := func(s string) *url.URL {
		x, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	tests := []struct {
		name     string
		cn       string
		uris     []*url.URL
		wantKind pki.Kind
		substr   string
	}{
		{"router", "r1", []*url.URL{u("indexgate://router/r1")}, pki.Router, ""},
		{"controller", "c.1", []*url.URL{u("indexgate://controller/c.1")}, pki.Controller, ""},
		{"other schemes ignored", "r1", []*url.URL{u("spiffe://x/y"), u("indexgate://router/r1")}, pki.Router, ""},
		{"no URI", "r1", nil, 0, "no indexgate:// URI SAN"},
		{"two identities", "r1", []*url.URL{u("indexgate://router/r1"), u("indexgate://controller/r1")}, 0, "more than one"},
		{"unknown kind", "r1", []*url.URL{u("indexgate://admin/r1")}, 0, "unknown kind"},
		{"CommonName differs", "r2", []*url.URL{u("indexgate://router/r1")}, 0, "does not match its CommonName"},
		{"invalid name", "a/b", []*url.URL{u("indexgate://router/a/b")}, 0, "invalid name"},
		{"empty name", "", []*url.URL{u("indexgate://router/")}, 0, "invalid name"},
		{"query", "r1", []*url.URL{u("indexgate://router/r1?x=1")}, 0, "unexpected parts"},
		{"user", "r1", []*url.URL{u("indexgate://u@router/r1")}, 0, "unexpected parts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &x509.Certificate{Subject: name(tc.cn), URIs: tc.uris}
			k, n, err := pki.PeerName(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}})
			if tc.substr == "" {
				if err != nil || k != tc.wantKind || n != tc.cn {
					t.Fatalf("%v %q %v, want %v %q", k, n, err, tc.wantKind, tc.cn)
				}
				return
			}
			if !errors.Is(err, pki.ErrPeerRejected) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("%v, want ErrPeerRejected saying %q", err, tc.substr)
			}
		})
	}
}

// TestHandshakeContext checks that Handshake gives up when its context
// ends (a silent peer), rather than blocking.
func TestHandshakeContext(t *testing.T) {
	dir := pkiDir(t, pki.AlgorithmDefault)
	cfg := must[*tls.Config](t)(pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName).ServerTLS(pki.PeerPolicy{Kind: pki.Router}))
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := pki.Handshake(ctx, tls.Server(a, cfg))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
}
