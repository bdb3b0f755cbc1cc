package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/internal/api"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "s3cret-token"

// env is one API server in front of one service and one simulator.
type env struct {
	sim   *ibsim.Server
	svc   *service.IB
	srv   *api.Server
	ts    *httptest.Server
	token string
}

type envOptions struct {
	token string
}

// testPool keeps every period short so the health loop, breaker probes and
// validations run many times within a test; values sit at or above the
// pool's floors.
func testPool() pool.Config {
	return pool.Config{
		HealthInterval:       200 * time.Millisecond,
		ValidationTimeout:    250 * time.Millisecond,
		ConnectTimeout:       time.Second,
		BreakerProbeInterval: 200 * time.Millisecond,
		ClientIDPause:        10 * time.Millisecond,
		ClientIDCooldown:     time.Second,
	}
}

func startSim(t *testing.T) *ibsim.Server {
	t.Helper()
	sim, err := ibsim.Start(ibsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	sim := startSim(t)
	svc, err := service.New(service.Options{
		Gateway: service.GatewayConfig{Host: "127.0.0.1", Port: sim.Port(), ClientIDBase: 1},
		Pool:    testPool(),
		DataDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	srv, err := api.New(svc, api.Options{Token: o.token, Version: "test-1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	// The server under test runs with the hardening HTTPServer provides.
	ts := httptest.NewUnstartedServer(srv)
	ts.Config = srv.HTTPServer("")
	ts.Start()
	t.Cleanup(ts.Close)
	return &env{sim: sim, svc: svc, srv: srv, ts: ts, token: o.token}
}

// reply is one answer, with its envelope decoded.
type reply struct {
	status int
	header http.Header
	body   []byte
	raw    map[string]json.RawMessage
	env    struct {
		Success bool            `json:"success"`
		Data    json.RawMessage `json:"data"`
		Error   *struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	took time.Duration
}

// data decodes the envelope's data as a generic JSON object.
func (r reply) data(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.env.Data, &m); err != nil {
		t.Fatalf("data is not an object: %v: %s", err, r.body)
	}
	return m
}

type req struct {
	method, path string
	body         string
	header       map[string]string
	noAuth       bool
}

func (e *env) do(t *testing.T, q req) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r, err := http.NewRequestWithContext(ctx, q.method, e.ts.URL+q.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if q.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if e.token != "" && !q.noAuth {
		r.Header.Set("Authorization", "Bearer "+e.token)
	}
	for k, v := range q.header {
		if v == "" {
			r.Header.Del(k)
			continue
		}
		r.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := e.ts.Client().Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", q.method, q.path, err)
	}
	rep := reply{status: resp.StatusCode, header: resp.Header, body: b, took: time.Since(start)}
	if q.path == "/metrics" && resp.StatusCode == http.StatusOK {
		return rep
	}
	if q.method == http.MethodHead {
		return rep
	}
	checkEnvelope(t, q, &rep)
	return rep
}

// checkEnvelope asserts the answer is the envelope: JSON, exactly the three
// keys, success matching the status, an error exactly when it failed.
func checkEnvelope(t *testing.T, q req, rep *reply) {
	t.Helper()
	if ct := rep.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %s", q.method, q.path, ct, rep.body)
	}
	if err := json.Unmarshal(rep.body, &rep.raw); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %v: %s", q.method, q.path, err, rep.body)
	}
	if len(rep.raw) != 3 || rep.raw["success"] == nil || rep.raw["data"] == nil || rep.raw["error"] == nil {
		t.Fatalf("%s %s: envelope keys wrong: %s", q.method, q.path, rep.body)
	}
	if err := json.Unmarshal(rep.body, &rep.env); err != nil {
		t.Fatal(err)
	}
	okStatus := rep.status >= 200 && rep.status < 300
	if rep.env.Success != okStatus {
		t.Fatalf("%s %s: status %d with success %t: %s", q.method, q.path, rep.status, rep.env.Success, rep.body)
	}
	if okStatus != (rep.env.Error == nil) {
		t.Fatalf("%s %s: status %d with error %s", q.method, q.path, rep.status, rep.raw["error"])
	}
	if rep.env.Error != nil && (rep.env.Error.Code == "" || rep.env.Error.Message == "" || rep.env.Error.Details == nil) {
		t.Fatalf("%s %s: incomplete error %s", q.method, q.path, rep.raw["error"])
	}
}

func (e *env) get(t *testing.T, path string) reply {
	t.Helper()
	return e.do(t, req{method: http.MethodGet, path: path})
}

func (e *env) send(t *testing.T, method, path, body string) reply {
	t.Helper()
	return e.do(t, req{method: method, path: path, body: body})
}

// eventually polls cond every 100ms until it holds or timeout passes, and
// returns how long it took.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// score reads the resilience score and the phase statuses.
func (e *env) score(t *testing.T) (float64, string) {
	t.Helper()
	rep := e.get(t, "/api/v1/ib/resilience")
	if rep.status != http.StatusOK {
		t.Fatalf("resilience status %d: %s", rep.status, rep.body)
	}
	d := rep.data(t)
	s, _ := d["overall_resilience_score"].(float64)
	state := ""
	for _, k := range []string{service.PhaseValidation, service.PhaseCollection, service.PhaseClientIDs, service.PhaseLive} {
		ph, _ := d[k].(map[string]any)
		state += k + "=" + str(ph["status"]) + " (" + str(ph["reason"]) + ") "
	}
	return s, state
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// at walks a decoded JSON object.
func at(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, p := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// waitHealthy waits for the gateway's first warm connection and health loop run.
func (e *env) waitHealthy(t *testing.T) {
	t.Helper()
	eventually(t, 10*time.Second, "gateway healthy and score >= 75", func() (bool, string) {
		rep := e.get(t, "/api/v1/ib/health")
		if rep.status != http.StatusOK {
			return false, string(rep.body)
		}
		s, state := e.score(t)
		return s >= 75, state
	})
}
