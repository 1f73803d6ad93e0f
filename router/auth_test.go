package router

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// mutatingEndpoints are every admin endpoint that changes the router.
var mutatingEndpoints = []struct{ method, path string }{
	{http.MethodPut, "/v1/filters/legacy"},
	{http.MethodPut, "/v1/filters/ha/shadow"},
	{http.MethodDelete, "/v1/filters/ha/shadow"},
	{http.MethodPost, "/v1/filters/ha/promote"},
	{http.MethodPost, "/v1/filters/ha/rollback"},
}

const testToken = "s3cr3t-t0ken-0123456789abcdef"

func writeToken(t testing.TB, dir, token string) string {
	t.Helper()
	p := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func authDo(t testing.TB, method, url, auth string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(""))
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
	var e struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error, resp.Header
}

func TestAdminAuth(t *testing.T) {
	fc := newFakeController(t)
	dir := t.TempDir()
	cfg := testConfig(dir, fc.listen())
	cfg.AdminTokenFile = writeToken(t, t.TempDir(), testToken)
	tr := startRouter(t, cfg, nil)
	base := "http://" + tr.AdminAddr()

	refusals := []struct {
		name, auth, want string
	}{
		{"no token", "", "missing bearer token"},
		{"wrong token", "Bearer not-the-token-0123456789", "invalid bearer token"},
		{"token prefix", "Bearer " + testToken[:len(testToken)-1], "invalid bearer token"},
		{"wrong scheme", "Basic " + testToken, `must be "Bearer TOKEN"`},
	}
	for _, ep := range mutatingEndpoints {
		for _, tc := range refusals {
			t.Run(ep.method+" "+ep.path+" "+tc.name, func(t *testing.T) {
				code, msg, h := authDo(t, ep.method, base+ep.path, tc.auth)
				if code != http.StatusUnauthorized || !strings.Contains(msg, tc.want) {
					t.Errorf("%d %q, want 401 with %q", code, msg, tc.want)
				}
				if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", h.Get("WWW-Authenticate"))
				}
			})
		}
		// With the token the request reaches its handler, which finds
		// something else wrong with it (an empty body, no candidate...).
		if code, msg, _ := authDo(t, ep.method, base+ep.path, "Bearer "+testToken); code == http.StatusUnauthorized {
			t.Errorf("%s %s with the token: 401 %q", ep.method, ep.path, msg)
		}
	}
	want := float64(len(mutatingEndpoints) * len(refusals))
	if got := metricValue(t, tr.reg, "indexgate_router_admin_unauthorized_total"); got != want {
		t.Errorf("admin_unauthorized_total %v, want %v", got, want)
	}
	for _, path := range []string{"/healthz", "/v1/status", "/v1/entities", "/metrics"} {
		if code, msg, _ := authDo(t, http.MethodGet, base+path, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s", path, code, msg)
		}
	}

	// A new token takes over without a restart; a too short one does not.
	const rotated = "r0tated-t0ken-0123456789abcdef"
	writeToken(t, filepath.Dir(cfg.AdminTokenFile), rotated)
	if code, _, _ := authDo(t, http.MethodPost, base+"/v1/filters/ha/promote", "Bearer "+testToken); code != http.StatusUnauthorized {
		t.Errorf("the old token still works after a rotation: %d", code)
	}
	if code, _, _ := authDo(t, http.MethodPost, base+"/v1/filters/ha/promote", "Bearer "+rotated); code == http.StatusUnauthorized {
		t.Error("the rotated token is refused")
	}
	writeToken(t, filepath.Dir(cfg.AdminTokenFile), "short")
	if code, _, _ := authDo(t, http.MethodPost, base+"/v1/filters/ha/promote", "Bearer "+rotated); code == http.StatusUnauthorized {
		t.Error("a too short replacement token locked the previous one out")
	}
}

// TestAdminAuthModes checks the two other configurations: no token file
// (mutating endpoints disabled, and the answer says how to enable them),
// and --insecure without one (open).
func TestAdminAuthModes(t *testing.T) {
	tests := []struct {
		name     string
		insecure bool
		token    string
		wantCode int
		want     string
	}{
		{"no token file", false, "", http.StatusUnauthorized, "--admin-token-file"},
		{"insecure without a token file", true, "", http.StatusTeapot, ""},
		{"insecure with a token file still needs the token", true, testToken, http.StatusUnauthorized, "missing bearer token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var path string
			if tc.token != "" {
				path = writeToken(t, t.TempDir(), tc.token)
			}
			auth, err := newAdminAuth(path, tc.insecure, testLogger())
			if err != nil {
				t.Fatal(err)
			}
			met, err := newMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			r := &Router{auth: auth, met: met, log: testLogger()}
			h := r.mutating(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
			rec := httptest.NewRecorder()
			h(rec, httptest.NewRequest(http.MethodPost, "/v1/filters/ha/promote", nil))
			if rec.Code != tc.wantCode || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%d %s, want %d with %q", rec.Code, rec.Body, tc.wantCode, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "short", "   padded-short   "} {
		path := writeToken(t, t.TempDir(), bad)
		if _, err := newAdminAuth(path, false, testLogger()); err == nil || !strings.Contains(err.Error(), "at least 16") {
			t.Errorf("token %q: %v, want a refusal asking for 16 bytes", bad, err)
		}
	}
	if _, err := newAdminAuth(filepath.Join(t.TempDir(), "missing"), false, testLogger()); err == nil {
		t.Error("a missing token file was accepted")
	}
}
