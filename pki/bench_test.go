package pki_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/indexgate/indexgate/pki"
)

// BenchmarkHandshake measures one full mutual TLS 1.3 handshake between a
// router's ClientTLS and a controller's ServerTLS over net.Pipe, including
// both sides' certificate freshness checks (two stats each).
func BenchmarkHandshake(b *testing.B) {
	for _, alg := range []pki.Algorithm{pki.ECDSAP256, pki.Ed25519} {
		b.Run(alg.String(), func(b *testing.B) {
			dir := b.TempDir()
			if err := pki.Init(dir, pki.InitOptions{Algorithm: alg}); err != nil {
				b.Fatal(err)
			}
			if _, _, err := pki.Issue(dir, pki.Router, "r1", pki.IssueOptions{}); err != nil {
				b.Fatal(err)
			}
			srvCfg, err := pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName).ServerTLS(pki.PeerPolicy{Kind: pki.Router})
			if err != nil {
				b.Fatal(err)
			}
			srvCfg.SessionTicketsDisabled = true
			cliCfg, err := pki.IdentityFor(dir, pki.Router, "r1").ClientTLS("localhost", pki.PeerPolicy{Kind: pki.Controller})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				a, c := net.Pipe()
				done := make(chan error, 1)
				go func() {
					done <- tls.Server(a, srvCfg).HandshakeContext(b.Context())
				}()
				if err := tls.Client(c, cliCfg).HandshakeContext(b.Context()); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				a.Close()
				c.Close()
			}
		})
	}
}
