package controller

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/indexgate/indexgate/wire"
)

// answerDigests answers every DigestRequest on r's connection with the
// router's position, entity count and digest d until the connection ends.
func answerDigests(r *fakeRouter, d string) {
	reply := &wire.DigestReply{Position: r.pos, Entities: uint64(len(r.entities)), Digest: d}
	go func() {
		for {
			m, err := r.conn.Read(ctxT(r.t))
			if err != nil {
				return
			}
			if _, ok := m.(*wire.DigestRequest); ok {
				if err := r.conn.Write(ctxT(r.t), reply); err != nil {
					return
				}
			}
		}
	}()
}

func TestValidateCatchesTamperedRouter(t *testing.T) {
	c := startController(t, testConfig(t))
	commit(t, c, put("svc", "a", "1"), put("svc", "b", "2"))
	commit(t, c, del("svc", "a"), put("route", "r", "x"))

	validate := func() Validation {
		t.Helper()
		code, body := httpDo(t, c, http.MethodGet, "/v1/validate?timeout=20s", nil)
		if code != http.StatusOK {
			t.Fatalf("GET /v1/validate: %d %s", code, body)
		}
		var v Validation
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := validate(); !v.OK || len(v.Routers) != 0 {
		t.Fatalf("no routers: %+v", v)
	}

	good := connect(t, c, hello("good"))
	good.fullState()
	answerDigests(good, digestOf(t, good.entities))
	if v := validate(); !v.OK || len(v.Routers) != 1 || !v.Routers[0].Match {
		t.Fatalf("one faithful router: %+v", v)
	}

	bad := connect(t, c, hello("bad"))
	bad.fullState()
	// The router's model on disk was edited behind its back: one more
	// entity than the change sets explain.
	tampered := map[string]string{"svc/intruder": "evil"}
	for k, v := range bad.entities {
		tampered[k] = v
	}
	answerDigests(bad, digestOf(t, tampered))

	v := validate()
	if v.OK {
		t.Fatalf("validation passed with a tampered router: %+v", v)
	}
	want := map[string]bool{"bad": false, "good": true}
	if len(v.Routers) != len(want) {
		t.Fatalf("routers %+v", v.Routers)
	}
	for _, r := range v.Routers {
		if r.Match != want[r.ID] || r.Error != "" || r.ControllerDigest != v.Digest {
			t.Errorf("router %+v: want match %v at the controller's digest %s", r, want[r.ID], v.Digest)
		}
	}
	if code, body := httpDo(t, c, http.MethodGet, "/v1/validate?timeout=soon", nil); code != http.StatusBadRequest {
		t.Errorf("bad timeout: %d %s", code, body)
	}
}

func TestValidateRouterThatNeverAnswers(t *testing.T) {
	c := startController(t, testConfig(t))
	commit(t, c, put("svc", "a", "1"))
	mute := connect(t, c, hello("mute"))
	mute.fullState()
	// No answerDigests: the request goes unanswered until the deadline.
	code, body := httpDo(t, c, http.MethodGet, "/v1/validate?timeout=200ms", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/validate: %d %s", code, body)
	}
	var v Validation
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if v.OK || len(v.Routers) != 1 || v.Routers[0].Match || v.Routers[0].Error == "" {
		t.Fatalf("unanswered router: %+v", v)
	}
}
