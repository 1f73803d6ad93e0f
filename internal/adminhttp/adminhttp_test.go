package adminhttp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Content-Type") != "application/wasm" {
				w.WriteHeader(http.StatusUnauthorized)
				w.Write([]byte(`{"error":"bad token"}`))
				return
			}
			w.Write([]byte(`{"n":7}`))
		case "/json-error":
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"change 2: kind: empty"}`))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("paused\n"))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	tests := []struct {
		name       string
		req        Request
		wantN      int
		wantStatus int
		wantMsg    string
	}{
		{"ok", Request{Method: "PUT", URL: srv.URL + "/ok", Token: "tok", ContentType: "application/wasm", Body: []byte{0}}, 7, 0, ""},
		{"no token", Request{Method: "PUT", URL: srv.URL + "/ok", Body: []byte{0}}, 0, 401, "bad token"},
		{"json error", Request{Method: "POST", URL: srv.URL + "/json-error", Body: []byte("{}")}, 0, 400, "change 2: kind: empty"},
		{"plain error", Request{Method: "GET", URL: srv.URL + "/other"}, 0, 503, "paused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out struct{ N int }
			err := Do(ctx, nil, tc.req, &out)
			var he *Error
			switch {
			case tc.wantStatus == 0 && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantStatus != 0 && (!errors.As(err, &he) || he.Status != tc.wantStatus || he.Message != tc.wantMsg):
				t.Fatalf("error %v, want HTTP %d %q", err, tc.wantStatus, tc.wantMsg)
			}
			if out.N != tc.wantN {
				t.Fatalf("decoded %d, want %d", out.N, tc.wantN)
			}
		})
	}
}
