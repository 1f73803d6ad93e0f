package controller

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"

	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// BenchmarkRouterConnect measures a router's connection set-up up to the
// Welcome (empty store, no full state): TCP, the mutual TLS 1.3 handshake
// with the certificate checks, Hello and Welcome; plaintext for
// comparison.
func BenchmarkRouterConnect(b *testing.B) {
	p := newTestPKI(b)
	for _, bc := range []struct {
		name string
		tls  bool
	}{{"plaintext", false}, {"mtls", true}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig(b)
			var ccfg *tls.Config
			if bc.tls {
				cfg = tlsTestConfig(b, p)
				ccfg = rawClientTLS(b, filepath.Join(p.dir, "router-r1.crt"), filepath.Join(p.dir, "router-r1.key"), filepath.Join(p.dir, pki.CACertFile))
			}
			c := startController(b, cfg)
			addr := c.RouterAddr().String()
			ctx := ctxT(b)
			b.ResetTimer()
			for b.Loop() {
				var nc net.Conn
				var err error
				if ccfg != nil {
					nc, err = (&tls.Dialer{Config: ccfg}).DialContext(ctx, "tcp", addr)
				} else {
					nc, err = net.Dial("tcp", addr)
				}
				if err != nil {
					b.Fatal(err)
				}
				conn := wire.NewConn(nc, wire.ConnOptions{})
				if err := conn.Write(ctx, hello("r1")); err != nil {
					b.Fatal(err)
				}
				for {
					m, err := conn.Read(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if _, ok := m.(*wire.Welcome); ok {
						break
					}
				}
				_ = conn.Close()
			}
		})
	}
}
