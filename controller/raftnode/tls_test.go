package raftnode_test

import (
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/indexgate/indexgate/controller/raftnode"
	"github.com/indexgate/indexgate/pki"
)

// tlsLayer makes a stream layer on 127.0.0.1:0 for the controller
// certificate name in the PKI directory dir.
func tlsLayer(t *testing.T, dir, name string) *raftnode.TLSStreamLayer {
	t.Helper()
	id := pki.IdentityFor(dir, pki.Controller, name)
	srv, err := id.ServerTLS(pki.PeerPolicy{Kind: pki.Controller})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := id.ClientTLS("", pki.PeerPolicy{Kind: pki.Controller})
	if err != nil {
		t.Fatal(err)
	}
	l, err := raftnode.NewTLSStreamLayer("127.0.0.1:0", "", srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestTLSStreamLayer(t *testing.T) {
	ca, other := t.TempDir(), t.TempDir()
	for _, d := range []string{ca, other} {
		if err := pki.Init(d, pki.InitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := pki.Issue(ca, pki.Controller, "n2", pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	server := tlsLayer(t, ca, pki.DefaultControllerName)
	tests := []struct {
		name   string
		client *raftnode.TLSStreamLayer
		ok     bool
	}{
		{"same CA", tlsLayer(t, ca, "n2"), true},
		{"another CA", tlsLayer(t, other, pki.DefaultControllerName), false},
	}
	// The server echoes one byte per accepted connection that passes the
	// handshake.
	go func() {
		for {
			c, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err == nil {
					_, _ = c.Write(b[:])
				}
			}()
		}
	}()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.client.Dial(raft.ServerAddress(server.Addr().String()), 30*time.Second)
			if err != nil {
				if tt.ok {
					t.Fatalf("dial: %v", err)
				}
				return
			}
			defer c.Close()
			if _, ok := c.(*tls.Conn); !ok {
				t.Fatalf("dial returned %T, want *tls.Conn", c)
			}
			_, _ = c.Write([]byte{7})
			var b [1]byte
			_, err = io.ReadFull(c, b[:])
			if tt.ok && (err != nil || b[0] != 7) {
				t.Fatalf("echo: %v %v", b, err)
			}
			if !tt.ok && err == nil {
				t.Fatal("a peer from another CA got an answer")
			}
		})
	}
	if _, err := raftnode.NewTLSStreamLayer("127.0.0.1:0", "", nil, nil); err == nil {
		t.Error("NewTLSStreamLayer accepted nil configurations")
	}
	if _, err := raftnode.NewTLSStreamLayer("127.0.0.1:0", "", &tls.Config{}, &tls.Config{}); err == nil {
		t.Error("NewTLSStreamLayer accepted a server configuration that does not verify clients")
	}
}
