package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/trust"
)

// module is a stand-in for a wasm binary: the policy never looks inside.
var module = []byte("\x00asm\x01\x00\x00\x00 a filter module")

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// keys is a generated key pair on disk.
type keys struct {
	files trust.KeyFiles
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
}

func newKeys(t *testing.T) keys {
	t.Helper()
	kf, err := trust.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	priv, err := trust.LoadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := trust.LoadPublicKeys([]string{kf.Public})
	if err != nil {
		t.Fatal(err)
	}
	return keys{files: kf, priv: priv, pub: pubs[0]}
}

func sign(t *testing.T, m []byte, priv ed25519.PrivateKey) []byte {
	t.Helper()
	s, err := trust.Sign(m, priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// replaceLine swaps line n (1-based) of a signature file.
func replaceLine(sig []byte, n int, line string) []byte {
	lines := strings.Split(string(sig), "\n")
	lines[n-1] = line
	return []byte(strings.Join(lines, "\n"))
}

func lineOf(sig []byte, n int) string { return strings.Split(string(sig), "\n")[n-1] }

func TestVerify(t *testing.T) {
	trusted, other := newKeys(t), newKeys(t)
	tampered := append(bytes.Clone(module), 0)
	good := sign(t, module, trusted.priv)
	byOther := sign(t, module, other.priv)
	// otherClaimingTrusted is signed by other but names the trusted key.
	otherClaimingTrusted := replaceLine(byOther, 2, lineOf(good, 2))
	// trustedSigOfOther is a signature by the trusted key of another module.
	sigOfOther := sign(t, []byte("another module"), trusted.priv)
	// digestSwapped claims module's digest, with the signature of another.
	digestSwapped := replaceLine(sigOfOther, 3, lineOf(good, 3))

	base := trust.Config{KeyFiles: []string{trusted.files.Public}}
	pinned := trust.Config{Pins: []string{strings.ToUpper(digest(module))}}
	open := trust.Config{KeyFiles: []string{trusted.files.Public}, AllowUnsigned: true}
	inline := trust.Config{Keys: []string{base64.StdEncoding.EncodeToString(trusted.pub)}}

	tests := []struct {
		name      string
		cfg       trust.Config
		module    []byte
		sig       []byte
		want      trust.Reason // 0: refused
		wantKey   string
		malformed bool
		substr    string // in the error
	}{
		{name: "pinned", cfg: pinned, module: module, want: trust.Pinned},
		{name: "pinned with signature by unknown key", cfg: pinned, module: module, sig: byOther, want: trust.Pinned, wantKey: trust.KeyID(other.pub)},
		{name: "signed by trusted key", cfg: base, module: module, sig: good, want: trust.Signed, wantKey: trust.KeyID(trusted.pub)},
		{name: "signed by inline key", cfg: inline, module: module, sig: good, want: trust.Signed, wantKey: trust.KeyID(trusted.pub)},
		{name: "signed by unlisted key", cfg: base, module: module, sig: byOther,
			substr: "signed by key " + trust.KeyID(other.pub) + ", which is not a trusted key"},
		{name: "tampered module", cfg: base, module: tampered, sig: good, substr: "does not match the sha256"},
		{name: "tampered pinned module", cfg: trust.Config{Pins: []string{digest(tampered)}}, module: tampered, sig: good, substr: "does not match the sha256"},
		{name: "signature of another module", cfg: base, module: module, sig: sigOfOther, substr: "does not match the sha256"},
		{name: "digest line swapped", cfg: base, module: module, sig: digestSwapped, substr: "does not verify with trusted key"},
		{name: "key id mismatch", cfg: base, module: module, sig: otherClaimingTrusted, substr: "does not verify with trusted key " + trust.KeyID(trusted.pub)},
		{name: "key id mismatch with unsigned allowed", cfg: open, module: module, sig: otherClaimingTrusted, substr: "does not verify"},
		{name: "malformed signature", cfg: base, module: module, sig: []byte("hello\n"), malformed: true, substr: "not an indexgate signature file"},
		{name: "malformed signature of a pinned module", cfg: pinned, module: module, sig: good[:len(good)-1], malformed: true, substr: "newline"},
		{name: "malformed signature with unsigned allowed", cfg: open, module: module, sig: replaceLine(good, 4, "sig: !!"), malformed: true, substr: "base64"},
		{name: "unsigned", cfg: base, module: module,
			substr: "module sha256 " + digest(module) + " is not pinned and carries no signature; pin it, sign it, or run with --allow-unsigned"},
		{name: "unsigned, empty signature", cfg: base, module: module, sig: []byte{}, substr: "carries no signature"},
		{name: "unsigned allowed", cfg: open, module: module, want: trust.AllowedUnsigned},
		{name: "unknown key, unsigned allowed", cfg: open, module: module, sig: byOther, want: trust.AllowedUnsigned, wantKey: trust.KeyID(other.pub)},
		{name: "signed, unsigned allowed", cfg: open, module: module, sig: good, want: trust.Signed, wantKey: trust.KeyID(trusted.pub)},
		{name: "empty policy", module: module, sig: good, substr: "not a trusted key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := trust.NewPolicy(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			d, err := p.Verify(tc.module, tc.sig)
			if d.SHA256 != digest(tc.module) {
				t.Errorf("decision digest %s, want %s", d.SHA256, digest(tc.module))
			}
			if d.Reason != tc.want || tc.want != 0 && d.KeyID != tc.wantKey {
				t.Errorf("decision %v (key %q), want %v (key %q)", d.Reason, d.KeyID, tc.want, tc.wantKey)
			}
			if tc.want != 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if d.Vouched() != (tc.want != trust.AllowedUnsigned) {
					t.Errorf("Vouched %v for %v", d.Vouched(), tc.want)
				}
				return
			}
			if !errors.Is(err, trust.ErrUntrusted) {
				t.Fatalf("%v, want ErrUntrusted", err)
			}
			if errors.Is(err, trust.ErrMalformed) != tc.malformed {
				t.Errorf("%v: ErrMalformed %v, want %v", err, !tc.malformed, tc.malformed)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("%q does not say %q", err, tc.substr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestZeroPolicy(t *testing.T) {
	for name, p := range map[string]*trust.Policy{"nil": nil, "zero": {}} {
		if _, err := p.Verify(module, nil); !errors.Is(err, trust.ErrUntrusted) {
			t.Errorf("%s policy: %v, want ErrUntrusted", name, err)
		}
	}
}

// TestSignatureFormat pins the format: what Sign writes, and what the
// parser refuses.
func TestSignatureFormat(t *testing.T) {
	k := newKeys(t)
	good := sign(t, module, k.priv)
	lines := strings.Split(strings.TrimSuffix(string(good), "\n"), "\n")
	want := []string{"indexgate-signature-v1", "key-id: " + k.files.KeyID, "sha256: " + digest(module)}
	if len(lines) != 4 || !slicesEqual(lines[:3], want) || !strings.HasPrefix(lines[3], "sig: ") {
		t.Fatalf("signature file:\n%s", good)
	}
	// The signature is over the documented message, checkable without this package.
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[3], "sig: "))
	sum := sha256.Sum256(module)
	if !ed25519.Verify(k.pub, append([]byte(trust.SignedMessagePrefix), sum[:]...), raw) {
		t.Fatal("signature is not over SignedMessagePrefix + sha256")
	}

	p, err := trust.NewPolicy(trust.Config{Keys: []string{base64.StdEncoding.EncodeToString(k.pub)}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		sig    []byte
		substr string
	}{
		{"CRLF", bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")), "CRLF"},
		{"no final newline", bytes.TrimSuffix(good, []byte("\n")), "newline"},
		{"blank line after", append(bytes.Clone(good), '\n'), "5 lines"},
		{"missing line", []byte(strings.Join(lines[:3], "\n") + "\n"), "3 lines"},
		{"future version", replaceLine(good, 1, "indexgate-signature-v2"), "unsupported version"},
		{"not a signature", []byte("-----BEGIN PGP SIGNATURE-----\n"), "not an indexgate signature"},
		{"uppercase key id", replaceLine(good, 2, strings.ToUpper(lines[1])), "line 2"},
		{"short key id", replaceLine(good, 2, "key-id: abcd"), "line 2"},
		{"fields swapped", replaceLine(replaceLine(good, 2, lines[2]), 3, lines[1]), "line 2"},
		{"extra space", replaceLine(good, 3, "sha256:  "+digest(module)), "line 3"},
		{"uppercase digest", replaceLine(good, 3, "sha256: "+strings.ToUpper(digest(module))), "line 3"},
		{"no sig field", replaceLine(good, 4, "signature: x"), "line 4"},
		{"unpadded base64", replaceLine(good, 4, strings.TrimRight(lines[3], "=")), "base64"},
		{"short signature", replaceLine(good, 4, "sig: "+base64.StdEncoding.EncodeToString(raw[:32])), "32 bytes"},
		{"huge", append(bytes.Clone(good), bytes.Repeat([]byte("x"), 2000)...), "under 1024"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Verify(module, tc.sig)
			if !errors.Is(err, trust.ErrMalformed) || !errors.Is(err, trust.ErrUntrusted) {
				t.Fatalf("%v, want ErrMalformed and ErrUntrusted", err)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("%q does not say %q", err, tc.substr)
			}
		})
	}
	if d, err := p.Verify(module, good); err != nil || d.Reason != trust.Signed {
		t.Fatalf("the unmodified signature: %v %v", d, err)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGenerateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	kf, err := trust.GenerateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{dir: 0o700, kf.Private: 0o600, kf.Public: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	priv, err := trust.LoadPrivateKey(kf.Private)
	if err != nil {
		t.Fatal(err)
	}
	if got := trust.KeyID(priv.Public().(ed25519.PublicKey)); got != kf.KeyID || len(got) != 16 {
		t.Errorf("KeyID %q, files say %q", got, kf.KeyID)
	}
	before, _ := os.ReadFile(kf.Private)
	if _, err := trust.GenerateKey(dir); !errors.Is(err, trust.ErrExists) {
		t.Fatalf("second GenerateKey: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(kf.Private)
	if !bytes.Equal(before, after) {
		t.Fatal("refused GenerateKey changed the key")
	}
}

func TestKeyFiles(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemKey, _ := os.ReadFile(k.files.Public)
	privPEM, _ := os.ReadFile(k.files.Private)
	b64 := base64.StdEncoding.EncodeToString(k.pub)
	tests := []struct {
		name    string
		content string
		ok      bool
		substr  string
	}{
		{"PEM", string(pemKey), true, ""},
		{"base64 with newline", b64 + "\n", true, ""},
		{"private key given as public", string(privPEM), false, "no PEM PUBLIC KEY"},
		{"two PEM blocks", string(pemKey) + string(pemKey), false, "more than one"},
		{"short base64", base64.StdEncoding.EncodeToString(k.pub[:16]), false, "16 bytes"},
		{"garbage", "not a key", false, "neither PEM nor base64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := write(strings.ReplaceAll(tc.name, " ", "_"), tc.content)
			pubs, err := trust.LoadPublicKeys([]string{path})
			if tc.ok {
				if err != nil || len(pubs) != 1 || !pubs[0].Equal(k.pub) {
					t.Fatalf("%v %v", pubs, err)
				}
				return
			}
			if !errors.Is(err, trust.ErrMalformed) || !strings.Contains(err.Error(), tc.substr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("%v, want ErrMalformed naming %s and saying %q", err, path, tc.substr)
			}
			if _, err := trust.NewPolicy(trust.Config{KeyFiles: []string{path}}); !errors.Is(err, trust.ErrMalformed) {
				t.Errorf("NewPolicy: %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := trust.LoadPrivateKey(k.files.Public); !errors.Is(err, trust.ErrMalformed) {
		t.Errorf("public key as private: %v", err)
	}
	if _, err := trust.LoadPublicKeys([]string{filepath.Join(dir, "missing")}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key file: %v", err)
	}
	if _, err := trust.Sign(module, ed25519.PrivateKey{1, 2, 3}); !errors.Is(err, trust.ErrMalformed) {
		t.Errorf("Sign with a short key: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	k := newKeys(t)
	tests := []struct {
		name   string
		cfg    trust.Config
		substr string
	}{
		{"short pin", trust.Config{Pins: []string{"abc"}}, `pin "abc"`},
		{"non-hex pin", trust.Config{Pins: []string{strings.Repeat("g", 64)}}, "sha256 digest"},
		{"sha256: prefix", trust.Config{Pins: []string{"sha256:" + digest(module)}}, "sha256 digest"},
		{"bad inline key", trust.Config{Keys: []string{"nope"}}, "key 1"},
		{"empty key file", trust.Config{KeyFiles: []string{""}}, "empty key file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if !errors.Is(err, trust.ErrMalformed) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("%v, want ErrMalformed saying %q", err, tc.substr)
			}
			if _, err := trust.NewPolicy(tc.cfg); err == nil {
				t.Error("NewPolicy accepted it")
			}
		})
	}
	// The same key twice (file and inline) is fine.
	p, err := trust.NewPolicy(trust.Config{KeyFiles: []string{k.files.Public}, Keys: []string{base64.StdEncoding.EncodeToString(k.pub)}, Pins: []string{digest(module)}})
	if err != nil {
		t.Fatal(err)
	}
	if s := p.String(); !strings.Contains(s, "1 pinned modules") || !strings.Contains(s, "["+k.files.KeyID+"]") || !strings.Contains(s, "unsigned modules refused") {
		t.Errorf("String: %q", s)
	}
}

func TestLoadModule(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "f.wasm")
	if err := os.WriteFile(path, module, 0o644); err != nil {
		t.Fatal(err)
	}
	m, sig, err := trust.LoadModule(path)
	if err != nil || !bytes.Equal(m, module) || sig != nil {
		t.Fatalf("unsigned: %q %q %v", m, sig, err)
	}
	s := sign(t, module, k.priv)
	if err := os.WriteFile(trust.SignaturePath(path), s, 0o644); err != nil {
		t.Fatal(err)
	}
	if trust.SignaturePath(path) != path+".sig" {
		t.Errorf("SignaturePath %s", trust.SignaturePath(path))
	}
	_, sig, err = trust.LoadModule(path)
	if err != nil || !bytes.Equal(sig, s) {
		t.Fatalf("signed: %q %v", sig, err)
	}
	if err := os.WriteFile(trust.SignaturePath(path), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := trust.LoadModule(path); !errors.Is(err, trust.ErrMalformed) {
		t.Fatalf("huge signature: %v, want ErrMalformed", err)
	}
	if _, _, err := trust.LoadModule(filepath.Join(dir, "missing.wasm")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing module: %v", err)
	}
}

func TestDecisionString(t *testing.T) {
	for _, tc := range []struct {
		d    trust.Decision
		want string
	}{
		{trust.Decision{Reason: trust.Pinned, SHA256: "ab"}, "module sha256 ab is pinned"},
		{trust.Decision{Reason: trust.Signed, SHA256: "ab", KeyID: "k"}, "module sha256 ab is signed by trusted key k"},
		{trust.Decision{Reason: trust.AllowedUnsigned, SHA256: "ab"}, "module sha256 ab is unsigned, allowed as unsigned"},
		{trust.Decision{Reason: trust.AllowedUnsigned, SHA256: "ab", KeyID: "k"}, "module sha256 ab is signed by unknown key k, allowed as unsigned"},
		{trust.Decision{SHA256: "ab"}, "module sha256 ab is refused"},
	} {
		if got := tc.d.String(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}
