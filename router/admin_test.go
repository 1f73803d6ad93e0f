package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/model"
)

func httpDo(t testing.TB, method, url, ctype string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
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
	return resp.StatusCode, b
}

func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	code, b := httpDo(t, http.MethodGet, url, "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
}

// withCustomSection appends a custom section to a module: the same code,
// another sha256, so it swaps in as an untrusted module of its own.
func withCustomSection(mod []byte, name string) []byte {
	payload := append([]byte{byte(len(name))}, name...)
	payload = append(payload, "indexgate router test"...)
	out := append(slices.Clone(mod), 0x00, byte(len(payload)))
	return append(out, payload...)
}

func TestAdminStatusEntitiesMetrics(t *testing.T) {
	fc := newFakeController(t)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	waitFirstFullState(t, tr)
	fc.appendN(4)
	waitConverged(t, tr, fc)
	base := "http://" + tr.AdminAddr()

	if code, b := httpDo(t, http.MethodGet, base+"/healthz", "", nil); code != http.StatusOK {
		t.Errorf("healthz: %d %s", code, b)
	}

	var st map[string]any
	getJSON(t, base+"/v1/status", &st)
	for _, k := range []string{"id", "connected", "controller", "mode", "timeline", "lastIndex", "entities", "digest", "counters", "filters", "positions", "wantFullState"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q: %v", k, st)
		}
	}
	d, n := fc.digest()
	if st["id"] != "r1" || st["connected"] != true || st["mode"] != "legacy" || st["digest"] != d ||
		st["entities"] != float64(n) || st["timeline"] != fc.tl.String() {
		t.Errorf("status %v", st)
	}
	if li, _ := st["lastIndex"].(map[string]any); li["legacy"] != float64(4) || li["ha"] != float64(0) {
		t.Errorf("lastIndex %v", st["lastIndex"])
	}
	if c, _ := st["counters"].(map[string]any); c["applied"] != float64(4) || c["skipped"] != float64(0) ||
		c["fullResyncs"] != float64(0) || c["initialSyncs"] != float64(1) || c["gaps"] != float64(0) {
		t.Errorf("counters %v", st["counters"])
	}
	filters, _ := st["filters"].(map[string]any)
	for _, typ := range abi.IndexTypes {
		f, _ := filters[typ.String()].(map[string]any)
		sum, _ := builtin.SHA256Hex(typ)
		if f["sha256"] != sum || f["abi"] != float64(abi.Version) || f["trusted"] != true || f["name"] == "" || f["version"] == "" {
			t.Errorf("filters[%s] = %v", typ, f)
		}
	}

	var all []model.Entity
	getJSON(t, base+"/v1/entities", &all)
	if uint64(len(all)) != n || all[0].Kind != "cnt" || all[0].Value != "k4" {
		t.Errorf("entities %v", all)
	}
	var svc []model.Entity
	getJSON(t, base+"/v1/entities?kind=svc", &svc)
	if len(svc) != 4 || svc[3] != (model.Entity{Kind: "svc", ID: "k4", Value: "vk4"}) {
		t.Errorf("entities of kind svc %v", svc)
	}
	var none []model.Entity
	getJSON(t, base+"/v1/entities?kind=nothing", &none)
	if none == nil || len(none) != 0 {
		t.Errorf("entities of a missing kind: %v, want []", none)
	}

	code, b := httpDo(t, http.MethodGet, base+"/metrics", "", nil)
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`indexgate_router_changesets_applied_total{type="legacy"} 4`,
		`indexgate_router_connected 1`,
		`indexgate_router_last_applied_index{type="legacy"} 4`,
		`indexgate_router_full_resyncs_total 0`,
		`indexgate_router_initial_syncs_total 1`,
		`indexgate_filter_`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestAdminStatusShowsFullStateProgress(t *testing.T) {
	fc := newFakeController(t)
	fc.appendN(5)
	fc.stallFull.Store(true)
	tr := startRouter(t, testConfig(t.TempDir(), fc.listen()), nil)
	var s Status
	waitFor(t, "a full state in progress", func() bool {
		s = tr.status(t)
		return s.FullState != nil && s.FullState.Received > 0
	})
	if p := s.FullState; p.Mode != abi.IndexLegacy || p.Index != 5 || p.Total != 6 || p.Received != 3 || p.Timeline != fc.tl.String() {
		t.Errorf("progress %+v", p)
	}
	if s.Entities != 0 || s.Digest != model.EmptyDigest {
		t.Errorf("staged entities leaked into the live model: %+v", s)
	}
}

func TestAdminHotSwap(t *testing.T) {
	fc := newFakeController(t)
	addr := fc.listen()
	dir := t.TempDir()
	cfg := testConfig(dir, addr)
	cfg.MaxModuleBytes = 8 << 20
	cfg.Trust.AllowUnsigned = true
	tr := startRouter(t, cfg, nil)
	waitFirstFullState(t, tr)
	base := "http://" + tr.AdminAddr()
	legacySum, _ := builtin.SHA256Hex(abi.IndexLegacy)
	custom := withCustomSection(builtin.Legacy(), "swap")
	customSum := hexSHA256(custom)
	persisted := filepath.Join(dir, "filters", "legacy.wasm")

	// Refused uploads leave the built-in serving.
	refused := []struct {
		name, path, ctype string
		body              []byte
		code              int
	}{
		{"not wasm", "/v1/filters/legacy", "application/wasm", []byte("#!/bin/sh\necho hi\n"), http.StatusUnsupportedMediaType},
		{"wrong content type", "/v1/filters/legacy", "text/plain", custom, http.StatusUnsupportedMediaType},
		{"empty body", "/v1/filters/legacy", "application/wasm", nil, http.StatusBadRequest},
		{"module for the other type", "/v1/filters/legacy", "application/wasm", builtin.HA(), http.StatusUnprocessableEntity},
		{"valid wasm without the ABI", "/v1/filters/legacy", "application/wasm", []byte("\x00asm\x01\x00\x00\x00"), http.StatusUnprocessableEntity},
		{"truncated module", "/v1/filters/legacy", "", custom[:len(custom)/2], http.StatusUnprocessableEntity},
		{"too large", "/v1/filters/legacy", "application/wasm", append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, 9<<20)...), http.StatusRequestEntityTooLarge},
		{"unknown type", "/v1/filters/raft", "application/wasm", custom, http.StatusNotFound},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			code, b := httpDo(t, http.MethodPut, base+tc.path, tc.ctype, tc.body)
			if code != tc.code {
				t.Errorf("status %d, want %d: %s", code, tc.code, b)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Errorf("no error message in %s", b)
			}
			if got := tr.status(t).Filters["legacy"]; got.SHA256 != legacySum || !got.Trusted {
				t.Errorf("after a refused swap the legacy filter is %+v", got)
			}
		})
	}
	if _, err := os.Stat(persisted); !os.IsNotExist(err) {
		t.Errorf("a refused module was persisted: %v", err)
	}
	fc.appendN(3)
	waitConverged(t, tr, fc) // the old module still decides

	code, b := httpDo(t, http.MethodPut, base+"/v1/filters/legacy", "application/wasm", custom)
	if code != http.StatusOK {
		t.Fatalf("swap: %d %s", code, b)
	}
	var resp map[string]any
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	if resp["sha256"] != customSum || resp["previousSha256"] != legacySum || resp["trusted"] != false ||
		resp["trust"] != "allowed-unsigned" || resp["lastIndex"] != float64(3) {
		t.Errorf("swap response %v", resp)
	}
	if _, ok := resp["pauseMicros"].(float64); !ok {
		t.Errorf("swap response lacks pauseMicros: %v", resp)
	}
	if got, _ := os.ReadFile(persisted); !bytes.Equal(got, custom) {
		t.Error("the swapped module was not persisted")
	}
	fc.appendN(3)
	s := waitConverged(t, tr, fc)
	if f := s.Filters["legacy"]; f.SHA256 != customSum || f.Trusted {
		t.Errorf("legacy filter after the swap %+v", f)
	}
	if s.Counters.Applied != 6 {
		t.Errorf("counters %+v: the swapped module must continue where the old one stopped", s.Counters)
	}

	// A restart serves the persisted module, untrusted.
	tr.stop(t)
	tr = startRouter(t, cfg, nil)
	s = waitConverged(t, tr, fc)
	if f := s.Filters["legacy"]; f.SHA256 != customSum || f.Trusted || f.Source != persisted {
		t.Errorf("legacy filter after restart %+v", f)
	}
	fc.appendN(2)
	if s = waitConverged(t, tr, fc); s.Counters.Applied != 8 {
		t.Errorf("counters after restart %+v", s.Counters)
	}

	// Swapping the built-in back trusts it again and forgets the file.
	base = "http://" + tr.AdminAddr()
	code, b = httpDo(t, http.MethodPut, base+"/v1/filters/legacy", "application/octet-stream", builtin.Legacy())
	if code != http.StatusOK {
		t.Fatalf("swap back: %d %s", code, b)
	}
	if f := tr.status(t).Filters["legacy"]; f.SHA256 != legacySum || !f.Trusted {
		t.Errorf("legacy filter after swapping the built-in back %+v", f)
	}
	if _, err := os.Stat(persisted); !os.IsNotExist(err) {
		t.Errorf("the swapped-out module is still persisted: %v", err)
	}
}

func TestConfiguredFilterWins(t *testing.T) {
	fc := newFakeController(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "filters"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A module hot-swapped earlier...
	if err := os.WriteFile(filepath.Join(dir, "filters", "ha.wasm"), withCustomSection(builtin.HA(), "old"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir, fc.listen())
	cfg.Trust.AllowUnsigned = true
	// ...loses to the configured one.
	configured := withCustomSection(builtin.HA(), "flag")
	cfg.Filters = map[abi.IndexType]host.Module{abi.IndexHA: {Name: "flag.wasm", Bytes: configured}}
	tr := startRouter(t, cfg, nil)
	if f := tr.status(t).Filters["ha"]; f.SHA256 != hexSHA256(configured) || f.Trusted || f.Source != "flag.wasm" {
		t.Errorf("ha filter %+v, want the configured module, untrusted", f)
	}

	// A configured module that does not load is a configuration error.
	tr.stop(t)
	cfg.Filters = map[abi.IndexType]host.Module{abi.IndexHA: {Name: "bad.wasm", Bytes: builtin.Legacy()}}
	if _, err := New(context.Background(), cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "bad.wasm") {
		t.Errorf("New with a legacy module for ha: %v", err)
	}
}
