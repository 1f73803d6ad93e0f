package controller

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/wire"
)

// testPKI is a CA with the controller certificate and router certificates
// r1, r2 and an expired r3, plus a second CA that also issued an r1.
type testPKI struct {
	dir, other string
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	p := testPKI{dir: t.TempDir(), other: t.TempDir()}
	for _, d := range []string{p.dir, p.other} {
		if err := pki.Init(d, pki.InitOptions{}); err != nil {
			t.Fatalf("pki.Init: %v", err)
		}
		if _, _, err := pki.Issue(d, pki.Router, "r1", pki.IssueOptions{}); err != nil {
			t.Fatalf("pki.Issue: %v", err)
		}
	}
	if _, _, err := pki.Issue(p.dir, pki.Router, "r2", pki.IssueOptions{}); err != nil {
		t.Fatalf("pki.Issue: %v", err)
	}
	past := time.Now().Add(-48 * time.Hour)
	if _, _, err := pki.Issue(p.dir, pki.Router, "r3", pki.IssueOptions{NotBefore: past, NotAfter: past.Add(time.Hour)}); err != nil {
		t.Fatalf("pki.Issue expired: %v", err)
	}
	return p
}

// tlsTestConfig is testConfig with TLS from p instead of Insecure.
func tlsTestConfig(t testing.TB, p testPKI) Config {
	cfg := testConfig(t)
	cfg.Insecure = false
	cfg.TLS = pki.IdentityFor(p.dir, pki.Controller, pki.DefaultControllerName)
	return cfg
}

// rawClientTLS is a router's TLS configuration built by hand, without
// pki's own checks, so that the test can present certificates pki would
// refuse to load (expired, from another CA).
func rawClientTLS(t testing.TB, certFile, keyFile, caFile string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, RootCAs: roots}
}

func counterValue(t testing.TB, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRouterMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	c := startController(t, tlsTestConfig(t, p))
	commit(t, c, put("svc", "a", "1"))
	ca := filepath.Join(p.dir, pki.CACertFile)
	leaf := func(dir, name string) (string, string) {
		id := pki.IdentityFor(dir, pki.Router, name)
		return id.CertFile, id.KeyFile
	}
	tests := []struct {
		name string
		// tls is the client configuration; nil dials plaintext.
		tls   func() *tls.Config
		hello string
		// want: "welcome", "unauthorized" (an Error frame), or "tls"
		// (the handshake is refused, the connection dies).
		want string
	}{
		{"accepted", func() *tls.Config { c, k := leaf(p.dir, "r1"); return rawClientTLS(t, c, k, ca) }, "r1", "welcome"},
		{"certificate of another router", func() *tls.Config { c, k := leaf(p.dir, "r2"); return rawClientTLS(t, c, k, ca) }, "r1", "unauthorized"},
		{"certificate from another CA", func() *tls.Config { c, k := leaf(p.other, "r1"); return rawClientTLS(t, c, k, ca) }, "r1", "tls"},
		{"expired certificate", func() *tls.Config { c, k := leaf(p.dir, "r3"); return rawClientTLS(t, c, k, ca) }, "r3", "tls"},
		{"controller certificate posing as a router", func() *tls.Config {
			id := pki.IdentityFor(p.dir, pki.Controller, pki.DefaultControllerName)
			return rawClientTLS(t, id.CertFile, id.KeyFile, ca)
		}, "controller", "tls"},
		{"no client certificate", func() *tls.Config {
			cfg := rawClientTLS(t, filepath.Join(p.dir, "router-r1.crt"), filepath.Join(p.dir, "router-r1.key"), ca)
			cfg.Certificates = nil
			return cfg
		}, "r1", "tls"},
		{"plaintext client", nil, "r1", "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := map[string]float64{
				rejectTLS:          counterValue(t, c.met.rejected.WithLabelValues(rejectTLS)),
				rejectUnauthorized: counterValue(t, c.met.rejected.WithLabelValues(rejectUnauthorized)),
			}
			var nc net.Conn
			var err error
			if tt.tls == nil {
				nc, err = net.Dial("tcp", c.RouterAddr().String())
			} else {
				nc, err = (&tls.Dialer{Config: tt.tls()}).DialContext(ctxT(t), "tcp", c.RouterAddr().String())
			}
			if err != nil {
				if tt.want == "tls" {
					// Refused during the client's own handshake: fine.
					waitFor(t, "the refusal to be counted", func() bool {
						return counterValue(t, c.met.rejected.WithLabelValues(rejectTLS)) > before[rejectTLS]
					})
					return
				}
				t.Fatalf("dial: %v", err)
			}
			conn := wire.NewConn(nc, wire.ConnOptions{})
			defer conn.Close()
			// A TLS 1.3 client finishes its handshake before the server
			// has judged its certificate: a refusal shows at the first
			// read, so the Hello may well be written.
			_ = conn.Write(ctxT(t), hello(tt.hello))
			m, rerr := conn.Read(ctxT(t))
			switch tt.want {
			case "welcome":
				if _, ok := m.(*wire.Welcome); !ok {
					t.Fatalf("want welcome, got %T %+v (err %v)", m, m, rerr)
				}
			case "unauthorized":
				e, ok := m.(*wire.Error)
				if !ok || e.Code != wire.ErrCodeUnauthorized {
					t.Fatalf("want unauthorized error, got %T %+v (err %v)", m, m, rerr)
				}
				if !strings.Contains(e.Message, `"r1"`) {
					t.Errorf("error message %q does not name the claimed id", e.Message)
				}
				expectClosed(t, conn)
			case "tls":
				if rerr == nil {
					t.Fatalf("want the connection refused, got %T %+v", m, m)
				}
			}
			if tt.want != "welcome" {
				label := map[string]string{"unauthorized": rejectUnauthorized, "tls": rejectTLS}[tt.want]
				waitFor(t, "the refusal to be counted", func() bool {
					return counterValue(t, c.met.rejected.WithLabelValues(label)) > before[label]
				})
			}
		})
	}
	// The accepted router stays registered under its certificate's name.
	var found bool
	for _, r := range status(t, c).Routers {
		found = found || r.ID == "r1"
	}
	if !found {
		t.Errorf("router r1 not in status")
	}
}

func TestTLSConfigValidation(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name string
		cfg  func(Config) Config
		want error
	}{
		{"neither TLS nor insecure", func(c Config) Config { c.TLS = pki.Identity{}; return c }, ErrTLSNotConfigured},
		{"both TLS and insecure", func(c Config) Config { c.Insecure = true; return c }, ErrInvalidConfig},
		{"missing key file", func(c Config) Config { c.TLS.KeyFile = filepath.Join(p.dir, "nope.key"); return c }, ErrInvalidConfig},
		{"router certificate as the controller's", func(c Config) Config {
			c.TLS = pki.IdentityFor(p.dir, pki.Router, "r1")
			return c
		}, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg(tlsTestConfig(t, p)))
			if err == nil {
				_ = c.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// httpDoAuth is httpDo with an Authorization header ("" for none).
func httpDoAuth(t testing.TB, c *running, method, path, auth string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, "http://"+c.AdminAddr().String()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestAdminToken(t *testing.T) {
	p := newTestPKI(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-s3cret-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withToken := tlsTestConfig(t, p)
	withToken.AdminTokenFile = tokenFile
	noToken := tlsTestConfig(t, p)
	insecure := testConfig(t)
	ctrls := map[string]*running{
		"token":    startController(t, withToken),
		"none":     startController(t, noToken),
		"insecure": startController(t, insecure),
	}
	const write = `{"changes":[{"op":"put","kind":"svc","id":"a","value":"1"}]}`
	tests := []struct {
		ctrl, method, path, auth string
		code                     int
		msg                      string
	}{
		{"token", "POST", "/v1/changes", "Bearer s3cret-s3cret-s3cret", http.StatusOK, ""},
		{"token", "POST", "/v1/changes", "", http.StatusUnauthorized, "missing"},
		{"token", "POST", "/v1/changes", "Bearer wrong", http.StatusUnauthorized, "wrong admin token"},
		{"token", "POST", "/v1/changes", "Basic czNjcmV0", http.StatusUnauthorized, "missing"},
		{"token", "POST", "/v1/migrate", "", http.StatusUnauthorized, "missing"},
		{"token", "POST", "/v1/cluster/join", "Bearer nope", http.StatusUnauthorized, "wrong"},
		{"token", "GET", "/v1/backup", "", http.StatusUnauthorized, "missing"},
		{"token", "GET", "/v1/backup", "Bearer s3cret-s3cret-s3cret", http.StatusOK, ""},
		{"token", "GET", "/v1/status", "", http.StatusOK, ""},
		{"token", "GET", "/v1/entities", "", http.StatusOK, ""},
		{"token", "GET", "/healthz", "", http.StatusOK, ""},
		{"token", "GET", "/metrics", "", http.StatusOK, ""},
		{"none", "POST", "/v1/changes", "Bearer s3cret-s3cret-s3cret", http.StatusUnauthorized, "--admin-token-file"},
		{"none", "GET", "/v1/status", "", http.StatusOK, ""},
		{"insecure", "POST", "/v1/changes", "", http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.ctrl+" "+tt.method+" "+tt.path+" "+tt.auth, func(t *testing.T) {
			body := ""
			if tt.method == "POST" && tt.path == "/v1/changes" {
				body = write
			}
			code, got := httpDoAuth(t, ctrls[tt.ctrl], tt.method, tt.path, tt.auth, body)
			if code != tt.code {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.code, got)
			}
			if tt.msg != "" && !strings.Contains(got, tt.msg) {
				t.Errorf("body %q does not contain %q", got, tt.msg)
			}
		})
	}
	if n := counterValue(t, ctrls["token"].met.adminUnauthorized); n == 0 {
		t.Errorf("admin_unauthorized_total not counted")
	}
}

func TestSecurityMetrics(t *testing.T) {
	p := newTestPKI(t)
	c := startController(t, tlsTestConfig(t, p))
	code, body := httpDo(t, c, http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, want := range []string{
		"indexgate_controller_tls 1",
		"indexgate_controller_serving 1",
		`indexgate_controller_frames_rejected_total{reason="tls"} 0`,
		`indexgate_controller_frames_rejected_total{reason="unauthorized"} 0`,
		"indexgate_controller_admin_unauthorized_total 0",
		"indexgate_controller_migration_snapshot_bytes 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestAdminTokenRotationAndChecks(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	for _, tt := range []struct{ name, body string }{
		{"short", "abc\n"},
		{"two words", "0123456789abcdef 0123456789abcdef\n"},
		{"empty", "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := tlsTestConfig(t, p)
			cfg.AdminTokenFile = file
			if c, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				if c != nil {
					_ = c.Close()
				}
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
	const oldTok, newTok = "old-token-0123456789", "new-token-0123456789"
	if err := os.WriteFile(file, []byte(oldTok), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := tlsTestConfig(t, p)
	cfg.AdminTokenFile = file
	c := startController(t, cfg)
	post := func(tok string) int {
		code, _ := httpDoAuth(t, c, http.MethodGet, "/v1/backup", "Bearer "+tok, "")
		return code
	}
	if post(oldTok) != http.StatusOK {
		t.Fatal("old token refused")
	}
	// Rotation: a new file (renamed into place, as an operator would)
	// takes effect at the next request, without a restart.
	tmp := filepath.Join(dir, "token.new")
	if err := os.WriteFile(tmp, []byte(newTok+"-longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	if post(newTok+"-longer") != http.StatusOK || post(oldTok) != http.StatusUnauthorized {
		t.Fatal("rotation not picked up")
	}
	// A broken replacement keeps the previous token.
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if post(newTok+"-longer") != http.StatusOK || post("x") != http.StatusUnauthorized {
		t.Fatal("a too-short replacement token replaced the previous one")
	}
}
