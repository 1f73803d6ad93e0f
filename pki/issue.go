package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a PKI directory. Leaf certificates are KIND-NAME.crt and
// KIND-NAME.key next to them (see IdentityFor).
const (
	// CACertFile is the CA certificate, PEM. Every router and controller
	// needs a copy.
	CACertFile = "ca.crt"
	// CAKeyFile is the CA private key, PEM PKCS#8, mode 0600. Only the
	// machine that issues certificates needs it.
	CAKeyFile = "ca.key"
)

// Defaults applied to zero option fields.
const (
	// DefaultCAValidity is the lifetime of a CA made by Init: long, because
	// replacing a CA means re-issuing every certificate.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultValidity is the lifetime of a leaf certificate: short enough
	// that a leaked key stops working on its own, long enough that renewal
	// is a yearly chore. Certificates are reloaded from disk, so renewal
	// needs no restart.
	DefaultValidity = 365 * 24 * time.Hour
	// DefaultControllerName names the controller certificate Init makes.
	DefaultControllerName = "controller"
	// DefaultCACommonName is the Subject CommonName of a CA made by Init.
	DefaultCACommonName = "indexgate CA"
)

// defaultHosts are the SANs of a controller certificate when none are
// given: enough for a controller and its routers on one machine.
func defaultHosts() []string { return []string{"localhost", "127.0.0.1"} }

// backdate moves NotBefore into the past so that a certificate issued on
// one machine is already valid on a peer whose clock is a little behind.
const backdate = 5 * time.Minute

// Algorithm is the key algorithm of a new key.
type Algorithm int

const (
	// AlgorithmDefault is ECDSA P-256 for Init, and the CA's algorithm for
	// Issue.
	AlgorithmDefault Algorithm = iota
	// ECDSAP256 is ECDSA on NIST P-256: understood by every TLS stack.
	ECDSAP256
	// Ed25519 is EdDSA on Curve25519: smaller and faster, TLS 1.3 only
	// (which is all this package speaks).
	Ed25519
)

// String returns "ecdsa-p256", "ed25519" or "default".
func (a Algorithm) String() string {
	switch a {
	case AlgorithmDefault:
		return "default"
	case ECDSAP256:
		return "ecdsa-p256"
	case Ed25519:
		return "ed25519"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// ParseAlgorithm parses "ecdsa-p256" or "ed25519" (a CLI flag); "" is
// AlgorithmDefault.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "", "default":
		return AlgorithmDefault, nil
	case "ecdsa-p256":
		return ECDSAP256, nil
	case "ed25519":
		return Ed25519, nil
	}
	return 0, fmt.Errorf("%w: algorithm %q: want ecdsa-p256 or ed25519", ErrInvalid, s)
}

func (a Algorithm) valid() bool { return a >= AlgorithmDefault && a <= Ed25519 }

// InitOptions configure Init. The zero value is valid.
type InitOptions struct {
	// ControllerName names the controller certificate made with the CA.
	// Default DefaultControllerName.
	ControllerName string
	// Hosts are the DNS names and IP addresses routers dial the
	// controller at; they become the controller certificate's SANs.
	// Default "localhost" and "127.0.0.1".
	Hosts []string
	// Algorithm of the CA key and the controller key. Default ECDSAP256.
	Algorithm Algorithm
	// CAValidity is the CA's lifetime. Default DefaultCAValidity.
	CAValidity time.Duration
	// Validity is the controller certificate's lifetime. Default
	// DefaultValidity.
	Validity time.Duration
	// CACommonName is the CA's Subject CommonName. Default
	// DefaultCACommonName.
	CACommonName string
	// Force replaces an existing CA. Every certificate the old CA issued
	// stops being accepted by peers that load the new CA file.
	Force bool
}

// Validate reports the first invalid field.
func (o InitOptions) Validate() error {
	if o.ControllerName != "" {
		if err := ValidateName(o.ControllerName); err != nil {
			return fmt.Errorf("controller name: %w", err)
		}
	}
	if err := validateHosts(o.Hosts); err != nil {
		return err
	}
	if !o.Algorithm.valid() {
		return fmt.Errorf("%w: unknown algorithm %v", ErrInvalid, o.Algorithm)
	}
	if o.CAValidity < 0 || o.Validity < 0 {
		return fmt.Errorf("%w: negative validity", ErrInvalid)
	}
	if o.CAValidity != 0 && o.Validity != 0 && o.Validity > o.CAValidity {
		return fmt.Errorf("%w: controller validity %v outlives the CA validity %v", ErrInvalid, o.Validity, o.CAValidity)
	}
	return nil
}

// IssueOptions configure Issue. The zero value is valid.
type IssueOptions struct {
	// Hosts are the DNS names and IP addresses of a controller
	// certificate (its SANs, which routers verify against the address they
	// dial). Default "localhost" and "127.0.0.1". Routers are never dialled
	// and take no Hosts.
	Hosts []string
	// Algorithm of the new key. Default: the CA key's algorithm.
	Algorithm Algorithm
	// Validity is the certificate's lifetime from now. Default
	// DefaultValidity. It may not outlive the CA.
	Validity time.Duration
	// NotBefore and NotAfter, when both set, replace Validity: they exist
	// so that tests and drills can make a certificate that is expired or
	// not yet valid.
	NotBefore, NotAfter time.Time
	// Force replaces an existing certificate of the same kind and name:
	// that is how a certificate is renewed. Running peers pick the new
	// files up at their next handshake.
	Force bool
}

// Validate reports the first invalid field.
func (o IssueOptions) Validate() error {
	if err := validateHosts(o.Hosts); err != nil {
		return err
	}
	if !o.Algorithm.valid() {
		return fmt.Errorf("%w: unknown algorithm %v", ErrInvalid, o.Algorithm)
	}
	if o.Validity < 0 {
		return fmt.Errorf("%w: negative validity", ErrInvalid)
	}
	if o.NotBefore.IsZero() != o.NotAfter.IsZero() {
		return fmt.Errorf("%w: set both NotBefore and NotAfter, or neither", ErrInvalid)
	}
	if !o.NotBefore.IsZero() && !o.NotAfter.After(o.NotBefore) {
		return fmt.Errorf("%w: NotAfter %v is not after NotBefore %v", ErrInvalid, o.NotAfter, o.NotBefore)
	}
	return nil
}

func validateHosts(hosts []string) error {
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			continue
		}
		if h == "" || strings.ContainsAny(h, " \t\r\n/:@") {
			return fmt.Errorf("%w: host %q is neither an IP address nor a DNS name", ErrInvalid, h)
		}
	}
	return nil
}

// Init creates a CA in dir (created with mode 0700 if missing) and, signed
// by it, the controller's certificate: CACertFile and CAKeyFile, then
// controller-NAME.crt and .key. Keys are written with mode 0600 and
// certificates with 0644. An existing CA is an error wrapping ErrExists
// unless opts.Force.
func Init(dir string, opts InitOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if opts.ControllerName == "" {
		opts.ControllerName = DefaultControllerName
	}
	if opts.Algorithm == AlgorithmDefault {
		opts.Algorithm = ECDSAP256
	}
	if opts.CAValidity == 0 {
		opts.CAValidity = DefaultCAValidity
	}
	if opts.CACommonName == "" {
		opts.CACommonName = DefaultCACommonName
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: create %s: %w", dir, err)
	}
	if !opts.Force {
		for _, f := range []string{CACertFile, CAKeyFile} {
			p := filepath.Join(dir, f)
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%w: a CA is already in %s (%s); replacing it (--force) makes every certificate it issued untrusted", ErrExists, dir, f)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("pki: %w", err)
			}
		}
	}
	key, err := newKey(opts.Algorithm)
	if err != nil {
		return err
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CACommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(opts.CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves only: an intermediate made with a stolen
		// leaf key would not verify.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("pki: create CA certificate: %w", err)
	}
	// Key before certificate: a reader that sees the new certificate then
	// also finds the key that goes with it.
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return err
	}
	if err := writeCert(filepath.Join(dir, CACertFile), der); err != nil {
		return err
	}
	_, _, err = Issue(dir, Controller, opts.ControllerName, IssueOptions{
		Hosts: opts.Hosts, Validity: opts.Validity, Force: true,
	})
	return err
}

// Issue makes a certificate of kind k named name, signed by the CA in dir,
// and writes it and its new key as KIND-NAME.crt (0644) and KIND-NAME.key
// (0600) in dir. The name goes in the Subject CommonName and in the URI
// SAN indexgate://KIND/NAME that PeerPolicy checks; a controller
// certificate also gets opts.Hosts as DNS and IP SANs. An existing
// certificate for the same kind and name is an error wrapping ErrExists
// unless opts.Force.
func Issue(dir string, k Kind, name string, opts IssueOptions) (certPath, keyPath string, err error) {
	if !k.valid() {
		return "", "", fmt.Errorf("%w: unknown kind %v", ErrInvalid, k)
	}
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	if err := opts.Validate(); err != nil {
		return "", "", err
	}
	if k == Router && len(opts.Hosts) > 0 {
		return "", "", fmt.Errorf("%w: router certificates take no hosts: routers are never dialled", ErrInvalid)
	}
	id := IdentityFor(dir, k, name)
	if !opts.Force {
		if _, err := os.Lstat(id.CertFile); err == nil {
			return "", "", fmt.Errorf("%w: %s; renew it with --force", ErrExists, id.CertFile)
		}
	}
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	notBefore, notAfter := opts.NotBefore, opts.NotAfter
	if notBefore.IsZero() {
		v := opts.Validity
		if v == 0 {
			v = DefaultValidity
		}
		notBefore, notAfter = now.Add(-backdate), now.Add(v)
	}
	if notAfter.After(caCert.NotAfter) {
		return "", "", fmt.Errorf("%w: the certificate would expire at %s, after its CA (%s); shorten the validity or renew the CA",
			ErrInvalid, notAfter.UTC().Format(time.RFC3339), caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	alg := opts.Algorithm
	if alg == AlgorithmDefault {
		alg = algorithmOf(caKey)
	}
	key, err := newKey(alg)
	if err != nil {
		return "", "", err
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{identityURI(k, name)},
	}
	switch k {
	case Router:
		// Client authentication only: even before PeerPolicy looks at the
		// URI, TLS itself refuses a router certificate from a server.
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case Controller:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		hosts := opts.Hosts
		if len(hosts) == 0 {
			hosts = defaultHosts()
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("pki: issue %s certificate %q: %w", k, name, err)
	}
	if err := writeKey(id.KeyFile, key); err != nil {
		return "", "", err
	}
	if err := writeCert(id.CertFile, der); err != nil {
		return "", "", err
	}
	return id.CertFile, id.KeyFile, nil
}

// IdentityFor returns the Identity of the certificate of kind k named name
// in the PKI directory dir, as Init and Issue lay it out. Certificates
// copied elsewhere are described with an Identity literal instead.
func IdentityFor(dir string, k Kind, name string) Identity {
	base := filepath.Join(dir, k.String()+"-"+name)
	return Identity{
		CertFile: base + ".crt",
		KeyFile:  base + ".key",
		CAFile:   filepath.Join(dir, CACertFile),
	}
}

func newKey(a Algorithm) (crypto.Signer, error) {
	switch a {
	case ECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("pki: generate key: %w", err)
		}
		return k, nil
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("pki: generate key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: unknown algorithm %v", ErrInvalid, a)
}

func algorithmOf(k crypto.Signer) Algorithm {
	if _, ok := k.(ed25519.PrivateKey); ok {
		return Ed25519
	}
	return ECDSAP256
}

// newSerial returns a random 128-bit serial number: unique without a
// counter to keep, as RFC 5280 asks.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n, nil
}

func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, nil, err
	}
	ca := certs[0]
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%w: %s is not a CA certificate", ErrInvalid, certPath)
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read CA key (only the machine that issues certificates has it): %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("%w: %s holds no PEM PRIVATE KEY block", ErrInvalid, keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrInvalid, keyPath, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s: unsupported key type %T", ErrInvalid, keyPath, k)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("%w: %s does not belong to %s", ErrInvalid, keyPath, certPath)
	}
	return ca, signer, nil
}

// readCerts reads every certificate of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s holds no PEM CERTIFICATE block", ErrInvalid, path)
	}
	return out, nil
}

func writeKey(path string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return fmt.Errorf("pki: encode key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFileAtomic replaces path with data by renaming a synced temporary
// file over it, so a peer reloading certificates never reads half a file,
// and a key is never readable by others even for a moment (CreateTemp
// makes the file 0600).
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}
