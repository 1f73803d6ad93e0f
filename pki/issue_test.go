package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indexgate/indexgate/pki"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.Init(dir, pki.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ctl := pki.IdentityFor(dir, pki.Controller, pki.DefaultControllerName)
	for path, want := range map[string]fs.FileMode{
		dir:                                0o700,
		filepath.Join(dir, pki.CAKeyFile):  0o600,
		filepath.Join(dir, pki.CACertFile): 0o644,
		ctl.KeyFile:                        0o600,
		ctl.CertFile:                       0o644,
	} {
		if got := mode(t, path); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
	ca := readCert(t, ctl.CAFile)
	if !ca.IsCA || !ca.MaxPathLenZero || ca.Subject.CommonName != pki.DefaultCACommonName {
		t.Errorf("CA: IsCA %v MaxPathLenZero %v CN %q", ca.IsCA, ca.MaxPathLenZero, ca.Subject.CommonName)
	}
	if d := ca.NotAfter.Sub(ca.NotBefore); d < pki.DefaultCAValidity || d > pki.DefaultCAValidity+time.Hour {
		t.Errorf("CA validity %v, want about %v", d, pki.DefaultCAValidity)
	}
	if _, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("default CA key %T, want ECDSA", ca.PublicKey)
	}
	leaf := readCert(t, ctl.CertFile)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool(t, dir), DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("controller certificate does not verify for localhost: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool(t, dir), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("controller certificate cannot dial raft peers: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("controller certificate lacks 127.0.0.1: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "indexgate://controller/controller" {
		t.Errorf("controller URIs %v", leaf.URIs)
	}

	// A second Init refuses, and leaves the CA alone.
	before, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	err := pki.Init(dir, pki.InitOptions{})
	if !errors.Is(err, pki.ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second Init: %v, want ErrExists mentioning --force", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	if !bytes.Equal(before, after) {
		t.Fatal("refused Init changed the CA key")
	}
	// Force replaces it, with the options given.
	if err := pki.Init(dir, pki.InitOptions{Force: true, Algorithm: pki.Ed25519, ControllerName: "c1", Hosts: []string{"ctl.example.com", "::1"}}); err != nil {
		t.Fatal(err)
	}
	after, _ = os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	if bytes.Equal(before, after) {
		t.Fatal("forced Init kept the CA key")
	}
	c1 := readCert(t, pki.IdentityFor(dir, pki.Controller, "c1").CertFile)
	if _, ok := c1.PublicKey.(ed25519.PublicKey); !ok {
		t.Errorf("controller key %T, want Ed25519", c1.PublicKey)
	}
	for _, h := range []string{"ctl.example.com", "::1"} {
		if err := c1.VerifyHostname(h); err != nil {
			t.Errorf("controller certificate: %v", err)
		}
	}
	if err := c1.VerifyHostname("localhost"); err == nil {
		t.Error("explicit hosts still include the default localhost")
	}
}

func TestInitOptions(t *testing.T) {
	tests := []struct {
		name   string
		opts   pki.InitOptions
		substr string
	}{
		{"bad controller name", pki.InitOptions{ControllerName: "../x"}, "../x"},
		{"bad host", pki.InitOptions{Hosts: []string{"a b"}}, `host "a b"`},
		{"empty host", pki.InitOptions{Hosts: []string{""}}, `host ""`},
		{"negative validity", pki.InitOptions{Validity: -time.Hour}, "negative"},
		{"controller outlives CA", pki.InitOptions{CAValidity: time.Hour, Validity: 2 * time.Hour}, "outlives"},
		{"unknown algorithm", pki.InitOptions{Algorithm: 9}, "algorithm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki")
			err := pki.Init(dir, tc.opts)
			if !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("%v, want ErrInvalid saying %q", err, tc.substr)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("invalid options still created %s", dir)
			}
		})
	}
	// A CA shorter than the default leaf validity makes the controller
	// certificate outlive it: refused rather than silently clamped.
	if err := pki.Init(t.TempDir(), pki.InitOptions{CAValidity: time.Hour}); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("controller certificate outliving the CA: %v", err)
	}
}

func TestIssue(t *testing.T) {
	dir := pkiDir(t, pki.AlgorithmDefault)
	r1 := pki.IdentityFor(dir, pki.Router, "r1")
	leaf := readCert(t, r1.CertFile)
	if leaf.Subject.CommonName != "r1" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "indexgate://router/r1" {
		t.Errorf("router identity: CN %q URIs %v", leaf.Subject.CommonName, leaf.URIs)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("router key usages %v, want client auth only", leaf.ExtKeyUsage)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses) != 0 {
		t.Errorf("router certificate has host SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < pki.DefaultValidity || d > pki.DefaultValidity+time.Hour {
		t.Errorf("validity %v, want about %v", d, pki.DefaultValidity)
	}
	if mode(t, r1.KeyFile) != 0o600 || mode(t, r1.CertFile) != 0o644 {
		t.Errorf("modes key %o cert %o", mode(t, r1.KeyFile), mode(t, r1.CertFile))
	}

	// Renewal needs Force and gives a new certificate.
	_, _, err := pki.Issue(dir, pki.Router, "r1", pki.IssueOptions{})
	if !errors.Is(err, pki.ErrExists) {
		t.Fatalf("re-issue without Force: %v, want ErrExists", err)
	}
	certPath, keyPath, err := pki.Issue(dir, pki.Router, "r1", pki.IssueOptions{Force: true, Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if certPath != r1.CertFile || keyPath != r1.KeyFile {
		t.Errorf("paths %s %s, want %s %s", certPath, keyPath, r1.CertFile, r1.KeyFile)
	}
	renewed := readCert(t, certPath)
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("renewal kept the serial number")
	}
	if d := renewed.NotAfter.Sub(renewed.NotBefore); d > 25*time.Hour {
		t.Errorf("validity %v, want about a day", d)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	now := time.Now()
	tests := []struct {
		name   string
		kind   pki.Kind
		cn     string
		opts   pki.IssueOptions
		substr string
	}{
		{"no kind", 0, "x", pki.IssueOptions{}, "unknown kind"},
		{"empty name", pki.Router, "", pki.IssueOptions{}, "empty name"},
		{"path in name", pki.Router, "../r", pki.IssueOptions{}, `"../r"`},
		{"slash in name", pki.Router, "a/b", pki.IssueOptions{}, `"a/b"`},
		{"leading dot", pki.Router, ".r", pki.IssueOptions{}, `".r"`},
		{"non-ASCII name", pki.Router, "rö", pki.IssueOptions{}, `"rö"`},
		{"long name", pki.Router, strings.Repeat("r", 65), pki.IssueOptions{}, "longer than 64"},
		{"router with hosts", pki.Router, "r3", pki.IssueOptions{Hosts: []string{"localhost"}}, "take no hosts"},
		{"outlives the CA", pki.Router, "r3", pki.IssueOptions{Validity: 20 * 365 * 24 * time.Hour}, "after its CA"},
		{"half a window", pki.Router, "r3", pki.IssueOptions{NotBefore: now}, "both"},
		{"inverted window", pki.Router, "r3", pki.IssueOptions{NotBefore: now, NotAfter: now.Add(-time.Second)}, "not after"},
		{"bad host", pki.Controller, "c2", pki.IssueOptions{Hosts: []string{"http://x"}}, "neither an IP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := pki.Issue(dir, tc.kind, tc.cn, tc.opts)
			if !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("%v, want ErrInvalid saying %q", err, tc.substr)
			}
		})
	}
}

func TestIssueWithoutCA(t *testing.T) {
	_, _, err := pki.Issue(t.TempDir(), pki.Router, "r1", pki.IssueOptions{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v, want fs.ErrNotExist", err)
	}
}

func TestIssueFollowsCAAlgorithm(t *testing.T) {
	dir := pkiDir(t, pki.Ed25519)
	if _, ok := readCert(t, pki.IdentityFor(dir, pki.Router, "r1").CertFile).PublicKey.(ed25519.PublicKey); !ok {
		t.Error("router key under an Ed25519 CA is not Ed25519")
	}
	c, _, err := pki.Issue(dir, pki.Router, "r3", pki.IssueOptions{Algorithm: pki.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := readCert(t, c).PublicKey.(*ecdsa.PublicKey); !ok {
		t.Error("explicit ECDSA ignored")
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pki.Kind
		ok   bool
	}{{"router", pki.Router, true}, {"controller", pki.Controller, true}, {"Router", 0, false}, {"", 0, false}} {
		k, err := pki.ParseKind(tc.in)
		if (err == nil) != tc.ok || k != tc.want {
			t.Errorf("ParseKind(%q) = %v, %v", tc.in, k, err)
		}
		if tc.ok && k.String() != tc.in {
			t.Errorf("%v.String() = %q", k, k.String())
		}
	}
	for _, tc := range []struct {
		in   string
		want pki.Algorithm
		ok   bool
	}{{"", pki.AlgorithmDefault, true}, {"ecdsa-p256", pki.ECDSAP256, true}, {"ed25519", pki.Ed25519, true}, {"rsa", 0, false}} {
		a, err := pki.ParseAlgorithm(tc.in)
		if (err == nil) != tc.ok || a != tc.want {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", tc.in, a, err)
		}
	}
}
