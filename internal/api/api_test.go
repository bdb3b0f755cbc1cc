package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ktrdr/ktrdr/internal/api"
)

func TestServiceHealthNeedsNoToken(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	rep := e.do(t, req{method: http.MethodGet, path: "/api/v1/health", noAuth: true})
	if rep.status != http.StatusOK {
		t.Fatalf("status %d: %s", rep.status, rep.body)
	}
	d := rep.data(t)
	if d["version"] != "test-1.2.3" || d["status"] != "ok" || d["pid"] != float64(os.Getpid()) {
		t.Fatalf("service health %s", rep.body)
	}
	if g, _ := d["goroutines"].(float64); g < 1 {
		t.Fatalf("goroutines %v", d["goroutines"])
	}
	if _, ok := d["uptime_seconds"].(float64); !ok {
		t.Fatalf("uptime missing: %s", rep.body)
	}
	// Everything else needs the token.
	if rep := e.do(t, req{method: http.MethodGet, path: "/api/v1/ib/status", noAuth: true}); rep.status != http.StatusUnauthorized ||
		rep.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("status without token: %d %v", rep.status, rep.header)
	}
	if rep := e.get(t, "/api/v1/ib/status"); rep.status != http.StatusOK {
		t.Fatalf("status with token: %d", rep.status)
	}
}

func TestEndpointsHappyPath(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	e.waitHealthy(t)

	t.Run("ib health", func(t *testing.T) {
		rep := e.get(t, "/api/v1/ib/health")
		d := rep.data(t)
		if rep.status != http.StatusOK || d["healthy"] != true || d["connection_ok"] != true || d["data_fetching_ok"] != true ||
			d["last_successful_request"] == nil || d["checked_at"] == nil {
			t.Fatalf("health %d %s", rep.status, rep.body)
		}
	})
	t.Run("status", func(t *testing.T) {
		rep := e.get(t, "/api/v1/ib/status")
		d := rep.data(t)
		if port, _ := at(d, "gateway", "port"); port != float64(e.sim.Port()) {
			t.Fatalf("gateway port %v: %s", port, rep.body)
		}
		if at, _ := at(d, "gateway", "account_type"); at != "paper" {
			t.Fatalf("account type %v", at)
		}
		for _, k := range []string{"client_ids_in_use", "connection_metrics", "data_metrics", "pool", "circuit_breaker", "config", "uptime_seconds"} {
			if _, ok := d[k]; !ok {
				t.Fatalf("status lacks %s: %s", k, rep.body)
			}
		}
		if ids, _ := d["client_ids_in_use"].([]any); len(ids) == 0 || ids[0] != float64(1) {
			t.Fatalf("client ids %v", d["client_ids_in_use"])
		}
	})
	t.Run("resilience keeps the original keys", func(t *testing.T) {
		rep := e.get(t, "/api/v1/ib/resilience")
		d := rep.data(t)
		want := map[string]func(any) bool{
			"phase_1_systematic_validation.status":               func(v any) bool { return v == "working" },
			"phase_1_systematic_validation.validation_enabled":   func(v any) bool { return v == true },
			"phase_2_garbage_collection.max_idle_time_seconds":   func(v any) bool { return v == 300.0 },
			"phase_2_garbage_collection.health_check_interval":   func(v any) bool { return v == 0.2 },
			"phase_3_client_id_preference.client_ids_in_use":     func(v any) bool { l, ok := v.([]any); return ok && len(l) > 0 },
			"phase_3_client_id_preference.lowest_client_id_used": func(v any) bool { return v == 1.0 },
			"overall_resilience_score":                           func(v any) bool { f, ok := v.(float64); return ok && f >= 75 },
			"connection_pool_health.total_connections":           func(v any) bool { f, ok := v.(float64); return ok && f >= 1 },
			"connection_pool_health.healthy_connections":         func(v any) bool { _, ok := v.(float64); return ok },
			"connection_pool_health.pool_uptime_seconds":         func(v any) bool { f, ok := v.(float64); return ok && f > 0 },
		}
		for path, check := range want {
			v, found := at(d, strings.Split(path, ".")...)
			if !found || !check(v) {
				t.Errorf("%s = %v (present %t)", path, v, found)
			}
		}
		if t.Failed() {
			t.Logf("%s", rep.body)
		}
	})
	t.Run("config", func(t *testing.T) {
		rep := e.get(t, "/api/v1/ib/config")
		d := rep.data(t)
		if d["host"] != "127.0.0.1" || d["port"] != float64(e.sim.Port()) || d["client_id_base"] != 1.0 {
			t.Fatalf("config %s", rep.body)
		}
	})
	t.Run("circuit breakers", func(t *testing.T) {
		rep := e.get(t, "/api/v1/ib/circuit-breakers")
		bs, _ := rep.data(t)["circuit_breakers"].([]any)
		if len(bs) != 1 {
			t.Fatalf("breakers %s", rep.body)
		}
		b := bs[0].(map[string]any)
		if b["state"] != "closed" || b["failure_threshold"] != 3.0 {
			t.Fatalf("breaker %v", b)
		}
	})
	t.Run("discovered starts empty", func(t *testing.T) {
		rep := e.get(t, "/api/v1/ib/symbols/discovered")
		d := rep.data(t)
		if d["count"] != 0.0 || d["symbols"] == nil {
			t.Fatalf("discovered %s", rep.body)
		}
	})
	t.Run("head", func(t *testing.T) {
		rep := e.do(t, req{method: http.MethodHead, path: "/api/v1/ib/status"})
		if rep.status != http.StatusOK || len(rep.body) != 0 {
			t.Fatalf("HEAD %d %q", rep.status, rep.body)
		}
	})
	t.Run("cleanup", func(t *testing.T) {
		rep := e.send(t, http.MethodPost, "/api/v1/ib/cleanup", "")
		d := rep.data(t)
		if rep.status != http.StatusOK || d["force"] != false || d["closed_client_ids"] == nil || d["pool_before"] == nil || d["pool_after"] == nil {
			t.Fatalf("cleanup %d %s", rep.status, rep.body)
		}
		if after, _ := at(d, "pool_after", "idle"); after != 0.0 {
			t.Fatalf("idle after cleanup %v", after)
		}
		// The health loop reopens the warm connection; force closes it again.
		eventually(t, 5*time.Second, "warm connection reopened", func() (bool, string) {
			return e.svc.Pool().Stats().Total >= 1, ""
		})
		rep = e.send(t, http.MethodPost, "/api/v1/ib/cleanup", `{"force": true}`)
		d = rep.data(t)
		if d["force"] != true || d["closed"].(float64) < 1 {
			t.Fatalf("forced cleanup %s", rep.body)
		}
		e.waitHealthy(t)
	})
}

// TestHostileRequests sends malformed and hostile requests: each gets a
// 4xx in the envelope, and the server goes on serving.
func TestHostileRequests(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	const disc = "/api/v1/ib/symbols/discover"
	const conf = "/api/v1/ib/config"
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	cases := []struct {
		name   string
		q      req
		status int
		code   string
	}{
		{"bad json", req{method: "POST", path: disc, body: `{"symbol":`}, 400, "INVALID_JSON"},
		{"not json", req{method: "POST", path: disc, body: `symbol=AAPL`}, 400, "INVALID_JSON"},
		{"unknown field", req{method: "POST", path: disc, body: `{"symbol":"AAPL","exchange":"SMART"}`}, 400, "UNKNOWN_FIELD"},
		{"second object", req{method: "POST", path: disc, body: `{"symbol":"AAPL"}{"symbol":"MSFT"}`}, 400, "TRAILING_DATA"},
		{"trailing garbage", req{method: "POST", path: disc, body: `{"symbol":"AAPL"} ;rm -rf`}, 400, "TRAILING_DATA"},
		{"symbol a number", req{method: "POST", path: disc, body: `{"symbol": 5}`}, 400, "INVALID_FIELD_TYPE"},
		{"force_refresh a string", req{method: "POST", path: disc, body: `{"symbol":"AAPL","force_refresh":"yes"}`}, 400, "INVALID_FIELD_TYPE"},
		{"array body", req{method: "POST", path: disc, body: `["AAPL"]`}, 400, "INVALID_FIELD_TYPE"},
		{"deeply nested", req{method: "POST", path: disc, body: `{"symbol":` + deep + `}`}, 400, ""},
		{"huge body", req{method: "POST", path: disc, body: `{"symbol":"` + strings.Repeat("A", 1<<20) + `"}`}, 413, "BODY_TOO_LARGE"},
		{"empty symbol", req{method: "POST", path: disc, body: `{"symbol":""}`}, 400, "INVALID_SYMBOL"},
		{"no symbol", req{method: "POST", path: disc, body: `{}`}, 400, "INVALID_SYMBOL"},
		{"injection symbol", req{method: "POST", path: disc, body: `{"symbol":"A;DROP TABLE symbols"}`}, 400, "INVALID_SYMBOL"},
		{"200-char symbol", req{method: "POST", path: disc, body: `{"symbol":"` + strings.Repeat("B", 200) + `"}`}, 400, "INVALID_SYMBOL"},
		{"unicode symbol", req{method: "POST", path: disc, body: `{"symbol":"ÄPFEL☃"}`}, 400, "INVALID_SYMBOL"},
		{"invalid utf-8 symbol", req{method: "POST", path: disc, body: "{\"symbol\":\"\xff\xfe\"}"}, 400, "INVALID_SYMBOL"},
		{"traversal symbol", req{method: "POST", path: disc, body: `{"symbol":"../../etc/passwd"}`}, 400, "INVALID_SYMBOL"},
		{"text content type", req{method: "POST", path: disc, body: `{"symbol":"AAPL"}`, header: map[string]string{"Content-Type": "text/plain"}}, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"form content type", req{method: "POST", path: "/api/v1/ib/cleanup", body: `force=true`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"cleanup force a string", req{method: "POST", path: "/api/v1/ib/cleanup", body: `{"force":"true"}`}, 400, "INVALID_FIELD_TYPE"},
		{"config port 0", req{method: "PUT", path: conf, body: `{"port":0}`}, 400, "INVALID_PORT"},
		{"config port 70000", req{method: "PUT", path: conf, body: `{"port":70000}`}, 400, "INVALID_PORT"},
		{"config port a string", req{method: "PUT", path: conf, body: `{"port":"4002"}`}, 400, "INVALID_FIELD_TYPE"},
		{"config port a fraction", req{method: "PUT", path: conf, body: `{"port":4002.5}`}, 400, "INVALID_FIELD_TYPE"},
		{"config empty host", req{method: "PUT", path: conf, body: `{"host":""}`}, 400, "INVALID_HOST"},
		{"config host with a path", req{method: "PUT", path: conf, body: `{"host":"../../etc/passwd"}`}, 400, "INVALID_HOST"},
		{"config host a number", req{method: "PUT", path: conf, body: `{"host":127}`}, 400, "INVALID_FIELD_TYPE"},
		{"config negative client id base", req{method: "PUT", path: conf, body: `{"client_id_base":-1}`}, 400, "INVALID_CLIENT_ID_BASE"},
		{"config unknown field", req{method: "PUT", path: conf, body: `{"port":4002,"password":"x"}`}, 400, "UNKNOWN_FIELD"},
		{"wrong method on health", req{method: "DELETE", path: "/api/v1/ib/health"}, 405, "METHOD_NOT_ALLOWED"},
		{"wrong method on status", req{method: "POST", path: "/api/v1/ib/status", body: `{}`}, 405, "METHOD_NOT_ALLOWED"},
		{"GET on discover", req{method: "GET", path: disc}, 405, "METHOD_NOT_ALLOWED"},
		{"PATCH config", req{method: "PATCH", path: conf, body: `{"port":1}`}, 405, "METHOD_NOT_ALLOWED"},
		{"missing token", req{method: "GET", path: "/api/v1/ib/status", noAuth: true}, 401, "UNAUTHORIZED"},
		{"wrong token", req{method: "GET", path: "/api/v1/ib/status", header: map[string]string{"Authorization": "Bearer wrong"}}, 401, "UNAUTHORIZED"},
		{"token prefix", req{method: "GET", path: "/api/v1/ib/status", header: map[string]string{"Authorization": "Bearer " + testToken[:5]}}, 401, "UNAUTHORIZED"},
		{"basic auth", req{method: "GET", path: "/api/v1/ib/status", header: map[string]string{"Authorization": "Basic " + testToken}}, 401, "UNAUTHORIZED"},
		{"no token on unknown route", req{method: "GET", path: "/api/v1/admin", noAuth: true}, 401, "UNAUTHORIZED"},
		{"no token on metrics", req{method: "GET", path: "/metrics", noAuth: true}, 401, "UNAUTHORIZED"},
		{"unknown route", req{method: "GET", path: "/api/v1/ib/nope"}, 404, "NOT_FOUND"},
		{"unknown version", req{method: "GET", path: "/api/v2/ib/health"}, 404, "NOT_FOUND"},
		{"trailing slash", req{method: "GET", path: "/api/v1/ib/health/"}, 404, "NOT_FOUND"},
		{"unknown top-level path", req{method: "GET", path: "/index.php"}, 404, "NOT_FOUND"},
		{"post to the status page", req{method: "POST", path: "/"}, 405, "METHOD_NOT_ALLOWED"},
		{"dot-dot traversal", req{method: "GET", path: "/api/v1/ib/../../../etc/passwd"}, 400, "INVALID_PATH"},
		{"dot-dot to a real route", req{method: "GET", path: "/api/v1/x/../ib/status"}, 400, "INVALID_PATH"},
		{"encoded traversal", req{method: "GET", path: "/api/v1/ib/%2e%2e/%2e%2e/health"}, 404, "NOT_FOUND"},
		{"double slash", req{method: "GET", path: "//api/v1/ib/status"}, 400, "INVALID_PATH"},
		{"encoded slash", req{method: "GET", path: "/api/v1/ib%2fstatus"}, 404, "NOT_FOUND"},
	}
	if len(cases) < 20 {
		t.Fatal("want at least 20 cases")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := e.do(t, c.q)
			if rep.status != c.status {
				t.Fatalf("status %d, want %d: %s", rep.status, c.status, rep.body)
			}
			if c.code != "" && rep.env.Error.Code != c.code {
				t.Fatalf("code %s, want %s: %s", rep.env.Error.Code, c.code, rep.body)
			}
			if c.status == 405 && rep.header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		})
	}
	// Still serving, and nothing hostile changed the configuration.
	if rep := e.do(t, req{method: "GET", path: "/api/v1/health", noAuth: true}); rep.status != 200 {
		t.Fatalf("health after hostile requests: %d", rep.status)
	}
	rep := e.get(t, conf)
	if d := rep.data(t); d["port"] != float64(e.sim.Port()) || d["host"] != "127.0.0.1" || d["client_id_base"] != 1.0 {
		t.Fatalf("config changed by hostile requests: %s", rep.body)
	}
	e.waitHealthy(t)
}

func TestAllowHeader(t *testing.T) {
	e := newEnv(t, envOptions{})
	rep := e.send(t, "DELETE", "/api/v1/ib/config", "")
	if rep.status != 405 {
		t.Fatalf("status %d", rep.status)
	}
	allow := rep.header.Get("Allow")
	for _, m := range []string{"GET", "PUT"} {
		if !strings.Contains(allow, m) {
			t.Fatalf("Allow %q lacks %s", allow, m)
		}
	}
	if rep.env.Error.Details["allow"] != allow {
		t.Fatalf("details %v", rep.env.Error.Details)
	}
}

func TestHTTPServerHardening(t *testing.T) {
	e := newEnv(t, envOptions{})
	hs := e.srv.HTTPServer(":0")
	if hs.ReadHeaderTimeout != 5*time.Second || hs.ReadTimeout != 10*time.Second || hs.WriteTimeout != 10*time.Second ||
		hs.IdleTimeout != time.Minute || hs.MaxHeaderBytes != 64<<10 || hs.Handler != e.srv || hs.Addr != ":0" {
		t.Fatalf("server %+v", hs)
	}
}

func TestNewRejectsNilServiceAndSharesRegistry(t *testing.T) {
	if _, err := api.New(nil, api.Options{}); err == nil {
		t.Fatal("nil service accepted")
	}
	e := newEnv(t, envOptions{})
	reg := prometheus.NewRegistry()
	if _, err := api.New(e.svc, api.Options{Registry: reg}); err != nil {
		t.Fatal(err)
	}
	// A second server on the same registry would report the same series twice.
	if _, err := api.New(e.svc, api.Options{Registry: reg}); err == nil {
		t.Fatal("second registration accepted")
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	e.waitHealthy(t)
	e.get(t, "/api/v1/ib/status")
	e.get(t, "/api/v1/no/such/route/12345")
	rep := e.get(t, "/metrics")
	if rep.status != 200 || !strings.HasPrefix(rep.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics %d %s", rep.status, rep.header.Get("Content-Type"))
	}
	body := string(rep.body)
	for _, name := range []string{
		"ktrdr_pool_connections ", "ktrdr_pool_connections_idle ", "ktrdr_pool_connections_in_use ",
		"ktrdr_pool_connections_connecting ", "ktrdr_pool_acquires_waiting ",
		"ktrdr_pool_validations_total ", "ktrdr_pool_validation_failures_total ",
		`ktrdr_pool_removals_total{reason="idle"} `, `ktrdr_pool_removals_total{reason="client_id_in_use"} `,
		"ktrdr_pool_client_id_conflicts_total ", "ktrdr_pool_silent_connections_detected_total ",
		"ktrdr_pool_acquires_total ", "ktrdr_pool_acquire_failures_total ",
		"ktrdr_pool_breaker_state 0", "ktrdr_pool_degraded 0",
		`ktrdr_pool_validation_seconds{quantile="0.5"} `, `ktrdr_pool_validation_seconds{quantile="0.99"} `, "ktrdr_pool_validation_seconds_count ",
		"ktrdr_resilience_score ", `ktrdr_resilience_phase_status{phase="phase_1_systematic_validation"} `,
		`ktrdr_resilience_phase_status{phase="phase_4_live_validation"} `,
		`ktrdr_http_request_duration_seconds_bucket{code="200",route="GET /api/v1/ib/status"`,
		`ktrdr_http_request_duration_seconds_count{code="404",route="unmatched"}`,
		"go_goroutines ", "process_start_time_seconds ",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("metrics lack %q", name)
		}
	}
	if strings.Contains(body, "12345") {
		t.Error("a raw path leaked into a label")
	}
	var score float64
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "ktrdr_resilience_score ") {
			fmt.Sscanf(strings.TrimPrefix(line, "ktrdr_resilience_score "), "%g", &score)
		}
	}
	if score < 75 {
		t.Errorf("score metric %g on a healthy gateway", score)
	}
	if t.Failed() {
		t.Logf("%s", body)
	}
	// The counters are read at scrape time: another validation shows at once.
	before := e.svc.Pool().Stats().Validations
	eventually(t, 5*time.Second, "validations counted", func() (bool, string) { return e.svc.Pool().Stats().Validations > before, "" })
	rep = e.get(t, "/metrics")
	var got int64
	for _, line := range strings.Split(string(rep.body), "\n") {
		if strings.HasPrefix(line, "ktrdr_pool_validations_total ") {
			fmt.Sscanf(strings.TrimPrefix(line, "ktrdr_pool_validations_total "), "%d", &got)
		}
	}
	if got <= before {
		t.Fatalf("validations_total %d, pool had %d before", got, before)
	}
	var env map[string]json.RawMessage
	if json.Unmarshal(rep.body, &env) == nil {
		t.Fatal("metrics answered in the envelope")
	}
}

// TestChunkedBodyOverLimit: a body without a Content-Length is cut at the
// limit while it is read.
func TestChunkedBodyOverLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := io.MultiReader(strings.NewReader(`{"symbol":"`), strings.NewReader(strings.Repeat("A", 200<<10)), strings.NewReader(`"}`))
	r, err := http.NewRequest(http.MethodPost, e.ts.URL+"/api/v1/ib/symbols/discover", body)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := e.ts.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || r.ContentLength != 0 || !strings.Contains(string(b), "BODY_TOO_LARGE") {
		t.Fatalf("chunked over the limit: %d (content length %d) %s", resp.StatusCode, r.ContentLength, b)
	}
	if rep := e.get(t, "/api/v1/ib/config"); rep.status != 200 {
		t.Fatalf("after: %d", rep.status)
	}
}
