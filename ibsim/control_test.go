package ibsim_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

// wireState is GET /v1/state as a client of the control API reads it; the
// JSON names are the contract, so they are spelled out here.
type wireState struct {
	Listening bool `json:"listening"`
	Clients   []struct {
		ClientID      int   `json:"client_id"`
		Started       bool  `json:"started"`
		ServerVersion int   `json:"server_version"`
		MessagesIn    int64 `json:"messages_in"`
		MessagesOut   int64 `json:"messages_out"`
	} `json:"clients"`
	Faults []struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	} `json:"faults"`
	Counters struct {
		ConnectionsAccepted int64 `json:"connections_accepted"`
	} `json:"counters"`
}

// controlClient calls a control API without keeping connections alive, so
// no transport goroutine outlives the test.
type controlClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newControlClient(t *testing.T, base string) *controlClient {
	return &controlClient{t: t, base: base, hc: &http.Client{Timeout: replyTimeout, Transport: &http.Transport{DisableKeepAlives: true}}}
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (cc *controlClient) do(method, path, body string, out any) (int, string) {
	cc.t.Helper()
	req, err := http.NewRequest(method, cc.base+path, strings.NewReader(body))
	if err != nil {
		cc.t.Fatal(err)
	}
	resp, err := cc.hc.Do(req)
	if err != nil {
		cc.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		cc.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		cc.t.Errorf("%s %s: content type %q", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			cc.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, string(raw)
}

func (cc *controlClient) state() wireState {
	cc.t.Helper()
	var st wireState
	if code, raw := cc.do("GET", "/v1/state", "", &st); code != http.StatusOK {
		cc.t.Fatalf("GET /v1/state: %d %s", code, raw)
	}
	return st
}

func TestControlState(t *testing.T) {
	srv := startSim(t, ibsim.Config{ControlAddr: "127.0.0.1:0"})
	if !strings.HasPrefix(srv.ControlURL(), "http://127.0.0.1:") {
		t.Fatalf("ControlURL %q", srv.ControlURL())
	}
	cc := newControlClient(t, srv.ControlURL())

	c1, _ := connect(t, srv, 1)
	for i := 0; i < 3; i++ {
		c1.currentTime()
	}
	connect(t, srv, 2)
	pending := dial(t, srv.Addr())

	// Counters move as the sockets are served, so poll until they settle:
	// client 1 sent startApi and 3 requests and got 5 startup messages and
	// 3 replies; client 2 only started; the pending client has not
	// completed a handshake.
	type row struct {
		id      int
		started bool
		ver     int
		in, out int64
	}
	want := []row{{0, false, 0, 0, 0}, {1, true, 178, 4, 8}, {2, true, 178, 1, 5}}
	var got []row
	eventually(t, replyTimeout, "state to list the clients", func() bool {
		got = got[:0]
		for _, c := range cc.state().Clients {
			got = append(got, row{c.ClientID, c.Started, c.ServerVersion, c.MessagesIn, c.MessagesOut})
		}
		if len(got) != len(want) {
			return false
		}
		for i := range want {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	})

	// The state may be read while a client is mid-handshake.
	if _, err := pending.handshake(157, 170); err != nil {
		t.Fatal(err)
	}
	eventually(t, replyTimeout, "the pending client's version", func() bool {
		st := cc.state()
		return len(st.Clients) == 3 && st.Clients[0].ServerVersion == 170
	})
	st := cc.state()
	if !st.Listening || st.Counters.ConnectionsAccepted != 3 {
		t.Errorf("listening %v, connections accepted %d, want true and 3", st.Listening, st.Counters.ConnectionsAccepted)
	}
}

func TestControlFaults(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	ts := httptest.NewServer(srv.ControlHandler())
	defer ts.Close()
	cc := newControlClient(t, ts.URL)

	t.Run("rejected", func(t *testing.T) {
		for _, tt := range []struct {
			name, body, want string
		}{
			{"not JSON", `latency please`, "not a JSON object"},
			{"JSON array", `[1,2]`, "not a JSON object"},
			{"kind missing", `{"latency_ms":5}`, `"kind" is required`},
			{"unknown kind", `{"kind":"meteor"}`, `unknown kind "meteor"`},
			{"negative latency", `{"kind":"latency","latency_ms":-1}`, "latency_ms"},
			{"latency without amount", `{"kind":"latency"}`, "latency_ms or jitter_ms is required"},
			{"latency as text", `{"kind":"latency","latency_ms":"fast"}`, "latency_ms"},
			{"unknown farm", `{"kind":"farm_broken","farm":"x"}`, "farm must be"},
			{"unknown field", `{"kind":"silent","volume":11}`, `unknown field "volume"`},
			{"negative duration", `{"kind":"silent","duration_ms":-5}`, `"duration_ms"`},
			{"negative client id", `{"kind":"silent","client_ids":[-1]}`, "client id -1"},
			{"client ids missing", `{"kind":"client_id_in_use"}`, "client_ids is required"},
			{"restart without downtime", `{"kind":"restart"}`, "down_ms must be positive"},
			{"unknown garbage mode", `{"kind":"garbage","mode":"loud"}`, "mode must be"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				var e struct {
					Error string `json:"error"`
				}
				code, raw := cc.do("POST", "/v1/faults", tt.body, &e)
				if code != http.StatusBadRequest || !strings.Contains(e.Error, tt.want) {
					t.Errorf("POST %s: %d %s, want 400 naming %q", tt.body, code, raw, tt.want)
				}
			})
		}
		if n := len(srv.Faults()); n != 0 {
			t.Errorf("%d faults active after rejected requests", n)
		}
		code, _ := cc.do("POST", "/v1/faults", `{"kind":"silent","pad":"`+strings.Repeat("x", 70<<10)+`"}`, nil)
		if code != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized body: %d, want 413", code)
		}
	})

	// One valid body per kind; the test fails when a kind is added without one.
	valid := map[string]string{
		"silent_handshake":   `{"kind":"silent_handshake","duration_ms":60000}`,
		"silent":             `{"kind":"silent","client_ids":[42]}`,
		"latency":            `{"kind":"latency","latency_ms":5,"jitter_ms":2,"client_ids":[42]}`,
		"drop":               `{"kind":"drop","client_ids":[42]}`,
		"refuse":             `{"kind":"refuse"}`,
		"restart":            `{"kind":"restart","down_ms":60000}`,
		"connectivity_loss":  `{"kind":"connectivity_loss","data_lost":true}`,
		"farm_broken":        `{"kind":"farm_broken","farm":"hmds"}`,
		"client_id_in_use":   `{"kind":"client_id_in_use","client_ids":[5,6]}`,
		"current_time_quirk": `{"kind":"current_time_quirk"}`,
		"garbage":            `{"kind":"garbage","mode":"fields"}`,
	}
	oneShot := map[string]bool{"drop": true, "garbage": true}
	ids := map[string]string{}
	for _, kind := range ibsim.FaultKinds() {
		body, ok := valid[kind]
		if !ok {
			t.Errorf("no valid body for fault kind %q in this test", kind)
			continue
		}
		var created struct{ ID, Kind string }
		code, raw := cc.do("POST", "/v1/faults", body, &created)
		if code != http.StatusCreated || created.ID == "" || created.Kind != kind {
			t.Errorf("POST %s: %d %s, want 201 with an id", body, code, raw)
		}
		if !oneShot[kind] {
			ids[kind] = created.ID
		}
	}

	var listed []struct {
		ID        string         `json:"id"`
		Kind      string         `json:"kind"`
		Params    map[string]any `json:"params"`
		ClientIDs []int          `json:"client_ids"`
	}
	if code, raw := cc.do("GET", "/v1/faults", "", &listed); code != http.StatusOK || len(listed) != len(ids) {
		t.Fatalf("GET /v1/faults: %d %s, want the %d lasting faults", code, raw, len(ids))
	}
	for _, f := range listed {
		if ids[f.Kind] != f.ID {
			t.Errorf("listed %s %s, want id %s", f.Kind, f.ID, ids[f.Kind])
		}
		switch f.Kind {
		case "latency":
			if f.Params["latency_ms"] != 5.0 || len(f.ClientIDs) != 1 || f.ClientIDs[0] != 42 {
				t.Errorf("latency listed as %+v", f)
			}
		case "client_id_in_use":
			// client_ids there names the ids held, not a scope.
			if len(f.ClientIDs) != 0 || f.Params["client_ids"] == nil {
				t.Errorf("client_id_in_use listed as %+v", f)
			}
		}
	}
	if st := cc.state(); len(st.Faults) != len(ids) || st.Listening {
		t.Errorf("state: %d faults, listening %v; want %d and not listening (refuse, restart)", len(st.Faults), st.Listening, len(ids))
	}

	// DELETE one, then the same again, then an id never issued.
	var removed map[string]string
	if code, raw := cc.do("DELETE", "/v1/faults/"+ids["latency"], "", &removed); code != http.StatusOK || removed["removed"] != ids["latency"] {
		t.Errorf("DELETE latency: %d %s", code, raw)
	}
	for _, id := range []string{ids["latency"], "f999"} {
		var e struct{ Error string }
		if code, raw := cc.do("DELETE", "/v1/faults/"+id, "", &e); code != http.StatusNotFound || !strings.Contains(e.Error, id) {
			t.Errorf("DELETE %s: %d %s, want 404 naming the id", id, code, raw)
		}
	}
	var cleared map[string]int
	if code, raw := cc.do("DELETE", "/v1/faults", "", &cleared); code != http.StatusOK || cleared["cleared"] != len(ids)-1 {
		t.Errorf("DELETE /v1/faults: %d %s, want %d cleared", code, raw, len(ids)-1)
	}
	if n := len(srv.Faults()); n != 0 {
		t.Errorf("%d faults left after DELETE all", n)
	}
	if code, _ := cc.do("GET", "/v1/nothing", "", nil); code != http.StatusNotFound {
		t.Errorf("unknown endpoint: %d, want 404", code)
	}

	// With refuse and restart cleared, the gateway serves again.
	c, _ := connect(t, srv, 1)
	c.currentTime()
}

// TestControlFaultTakesEffect posts a fault and observes it over TCP.
func TestControlFaultTakesEffect(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	ts := httptest.NewServer(srv.ControlHandler())
	defer ts.Close()
	cc := newControlClient(t, ts.URL)
	c1, _ := connect(t, srv, 1)
	c2, _ := connect(t, srv, 2)
	var created struct{ ID string }
	if code, raw := cc.do("POST", "/v1/faults", `{"kind":"silent","client_ids":[2]}`, &created); code != http.StatusCreated {
		t.Fatalf("POST: %d %s", code, raw)
	}
	c2.send(&tws.ReqCurrentTime{})
	c2.expectQuiet(quietFor, "currentTime for client 2", isCurrentTime)
	c1.currentTime()
	if code, raw := cc.do("DELETE", "/v1/faults/"+created.ID, "", nil); code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", code, raw)
	}
	c2.currentTime()
}
