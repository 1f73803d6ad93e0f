package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/indexgate/indexgate/pki"
)

// hangGuard bounds every connection so a broken test fails instead of
// hanging; no assertion depends on it.
const hangGuard = 30 * time.Second

// result is what one side of a test connection saw.
type result struct {
	err   error
	state tls.ConnectionState
}

// dial runs one connection over 127.0.0.1: the server side wraps the
// accepted connection with serverCfg and runs pki.Handshake, then writes
// "ok"; client runs on the dialled connection. It returns what each side
// saw.
func dial(t *testing.T, serverCfg *tls.Config, client func(ctx context.Context, c net.Conn) result) (srv, cli result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(hangGuard))
		tc := tls.Server(c, serverCfg)
		if err := pki.Handshake(ctx, tc); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte("ok"))
		done <- result{err: err, state: tc.ConnectionState()}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(hangGuard))
	cli = client(ctx, c)
	c.Close()
	srv = <-done
	return srv, cli
}

// tlsClient is a client that handshakes with cfg and reads the server's
// "ok": in TLS 1.3 a client learns that the server refused its
// certificate only when it reads.
func tlsClient(cfg *tls.Config) func(context.Context, net.Conn) result {
	return func(ctx context.Context, c net.Conn) result {
		tc := tls.Client(c, cfg)
		if err := pki.Handshake(ctx, tc); err != nil {
			return result{err: err}
		}
		buf := make([]byte, 2)
		_, err := io.ReadFull(tc, buf)
		return result{err: err, state: tc.ConnectionState()}
	}
}

// plaintextClient writes a wire Heartbeat frame, as a router without TLS
// would, and drains whatever comes back.
func plaintextClient(_ context.Context, c net.Conn) result {
	c.Write([]byte{0, 0, 0, 3, 0x0b, 0x92, 0x00})
	io.Copy(io.Discard, c)
	return result{}
}

// pkiDir is a PKI directory made by Init with routers r1 and r2.
func pkiDir(t *testing.T, alg pki.Algorithm) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.Init(dir, pki.InitOptions{Algorithm: alg}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"r1", "r2"} {
		if _, _, err := pki.Issue(dir, pki.Router, name, pki.IssueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func keyPair(t *testing.T, id pki.Identity) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(id.CertFile, id.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatal("no CA certificate")
	}
	return p
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// forge signs tmpl with the CA key of dir and a fresh key, the way an
// operator with the CA key but not this package might: it lets tests
// present certificates Issue would never make.
func forge(t *testing.T, dir string, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	ca := keyPair(t, pki.Identity{CertFile: filepath.Join(dir, pki.CACertFile), KeyFile: filepath.Join(dir, pki.CAKeyFile)})
	leafKey := keyPair(t, pki.IdentityFor(dir, pki.Router, "r1")).PrivateKey
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, leafKey.(crypto.Signer).Public(), ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: leafKey}
}

func name(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

// logBuffer is a bytes.Buffer safe for a logger writing from handshake
// goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
