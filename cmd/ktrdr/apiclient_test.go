package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ktrdr/ktrdr/internal/service"
)

func TestMain(m *testing.M) {
	// The commands read these; a developer's own settings must not leak
	// into the tests. Tests that need them use t.Setenv.
	for _, k := range []string{"KTRDR_API_URL", "KTRDR_TOKEN", "NO_COLOR"} {
		os.Unsetenv(k)
	}
	goleak.VerifyTestMain(m)
}

// runCLI runs a command line in-process, as main does.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// recorded is one request a fake API received.
type recorded struct {
	method, path, auth string
	body               map[string]any
}

// fakeAPI is an httptest server that records requests and answers with h.
type fakeAPI struct {
	url  string
	mu   sync.Mutex
	reqs []recorded
}

func newFakeAPI(t *testing.T, h http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := recorded{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization")}
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			_ = json.Unmarshal(b, &rec.body)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, rec)
		f.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// writeEnvelope answers like the API: data on success, an error otherwise.
func writeEnvelope(w http.ResponseWriter, status int, data any, code, msg string) {
	env := map[string]any{"success": status/100 == 2 && code == "", "data": data, "error": nil}
	if code != "" {
		env["error"] = map[string]any{"code": code, "message": msg, "details": map[string]any{}}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(env)
}

// answer returns a handler that always answers the same envelope.
func answer(status int, data any, code, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeEnvelope(w, status, data, code, msg) }
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// apiCommands is every API command line, for tests that hold for all.
var apiCommands = [][]string{
	{"ib", "health"}, {"ib", "status"}, {"ib", "resilience"}, {"ib", "config"}, {"ib", "config", "get"},
	{"ib", "config", "set", "--port", "4002"}, {"ib", "cleanup"}, {"ib", "circuit-breakers"},
	{"symbols", "discover", "AAPL"}, {"symbols", "list"},
}

func TestConnectionRefusedExits3WithOneLine(t *testing.T) {
	addr := closedAddr(t)
	for _, args := range apiCommands {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			start := time.Now()
			code, out, errOut := runCLI(t, append(args, "--api", "http://"+addr)...)
			if code != exitUnreached {
				t.Errorf("exit %d, want %d; stderr %q", code, exitUnreached, errOut)
			}
			want := "ktrdr: cannot reach the ktrdr API at http://" + addr + " (connection refused): is `ktrdr serve` running?\n"
			if errOut != want {
				t.Errorf("stderr %q\nwant   %q", errOut, want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestSlowServerExits3WithinTimeout(t *testing.T) {
	release := make(chan struct{})
	tests := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"no headers", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}},
		{"headers then a stalled body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"success": true, "data": {`)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.h)
			start := time.Now()
			code, out, errOut := runCLI(t, "ib", "status", "--api", api.url, "--timeout", "200ms")
			elapsed := time.Since(start)
			if code != exitUnreached {
				t.Errorf("exit %d, want %d; stderr %q", code, exitUnreached, errOut)
			}
			want := "ktrdr: the ktrdr API at " + api.url + " did not answer within 200ms (connected, but no complete answer)\n"
			if errOut != want {
				t.Errorf("stderr %q\nwant   %q", errOut, want)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
			if elapsed > 2*time.Second {
				t.Errorf("took %s with --timeout 200ms", elapsed)
			}
		})
	}
	// Handlers must not outlive the test even if a disconnect went unseen.
	close(release)
}

func TestHTTPErrorClasses(t *testing.T) {
	tests := []struct {
		name   string
		h      http.HandlerFunc
		args   []string
		code   int
		stderr string // substring
	}{
		{"503 gateway unavailable", answer(503, nil, "CIRCUIT_OPEN", "the circuit breaker is open"), nil,
			exitFailed, "the circuit breaker is open (CIRCUIT_OPEN, HTTP 503)"},
		{"504 deadline", answer(504, nil, "GATEWAY_TIMEOUT", "deadline passed while connecting"), nil,
			exitFailed, "(GATEWAY_TIMEOUT, HTTP 504)"},
		{"500", answer(500, nil, "INTERNAL", "internal error"), nil, exitFailed, "internal error (INTERNAL, HTTP 500)"},
		{"400 invalid", answer(400, nil, "INVALID_PORT", "port 0 is outside 1..65535"), nil,
			exitUsage, "port 0 is outside 1..65535 (INVALID_PORT, HTTP 400)"},
		{"401 without a token", answer(401, nil, "UNAUTHORIZED", "token required"), nil,
			exitUsage, "requires a token: pass --token or set KTRDR_TOKEN (UNAUTHORIZED, HTTP 401)"},
		{"401 with a wrong token", answer(401, nil, "UNAUTHORIZED", "token required"), []string{"--token", "wrong"},
			exitUsage, "rejected the token: check --token or KTRDR_TOKEN"},
		{"404 unknown endpoint", answer(404, nil, "NOT_FOUND", "no such endpoint"), nil,
			exitFailed, "no such endpoint (NOT_FOUND, HTTP 404): is the server as new as this client?"},
		{"garbage body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html><body>Bad Gateway</body></html>")
		}, nil, exitFailed, `answered HTTP 200 with a body that is not JSON (text/html, 37 bytes, starting "<html><body>Bad Gateway`},
		{"JSON that is not the envelope", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"detail": "Not Found"}`)
		}, nil, exitFailed, "answered HTTP 404 with JSON that is not a ktrdr API envelope"},
		{"data of the wrong shape", answer(200, 5, "", ""), nil, exitFailed, "answered data this client does not understand"},
		{"huge body", func(w http.ResponseWriter, _ *http.Request) {
			chunk := bytes.Repeat([]byte("a"), 1<<20)
			for range 64 {
				if _, err := w.Write(chunk); err != nil {
					return // the client stopped reading, as it should
				}
			}
		}, nil, exitFailed, "answered HTTP 200 with more than 8 MiB: not a ktrdr API answer; stopped reading"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.h)
			start := time.Now()
			code, out, errOut := runCLI(t, append([]string{"ib", "status", "--api", api.url}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if !strings.Contains(errOut, tt.stderr) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q, want one line containing %q", errOut, tt.stderr)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing in table mode", out)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestJSONFailurePrintsWholeEnvelope(t *testing.T) {
	api := newFakeAPI(t, answer(404, nil, "SYMBOL_NOT_FOUND", "symbol ZZZZZZ not found"))
	code, out, errOut := runCLI(t, "symbols", "discover", "ZZZZZZ", "--api", api.url, "-o", "json")
	if code != exitFailed {
		t.Fatalf("exit %d, want 1; stderr %q", code, errOut)
	}
	var env struct {
		Success bool `json:"success"`
		Error   struct{ Code string }
	}
	if err := json.Unmarshal([]byte(out), &env); err != nil || env.Success || env.Error.Code != "SYMBOL_NOT_FOUND" {
		t.Errorf("stdout %q (%v), want the failed envelope", out, err)
	}
	if !strings.Contains(errOut, "symbol ZZZZZZ not found (SYMBOL_NOT_FOUND, HTTP 404)") {
		t.Errorf("stderr %q", errOut)
	}
	reqs := api.requests()
	if len(reqs) != 1 || reqs[0].method != "POST" || reqs[0].path != "/api/v1/ib/symbols/discover" ||
		reqs[0].body["symbol"] != "ZZZZZZ" || reqs[0].body["force_refresh"] != false {
		t.Errorf("requests %+v", reqs)
	}
}

func TestHealth(t *testing.T) {
	last := time.Now().Add(-time.Minute)
	healthy := service.Health{Healthy: true, ConnectionOK: true, DataFetchingOK: true, LatencyMS: 1.25,
		LastSuccessfulRequest: &last, CheckedAt: time.Now()}
	unhealthy := service.Health{ConnectionOK: true, Stage: "data request", ErrorMessage: "no answer within 3s",
		LatencyMS: 3000, LastSuccessfulRequest: &last, CheckedAt: time.Now()}
	unhealthyAPI := func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(503)
		_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "data": unhealthy,
			"error": map[string]any{"code": "GATEWAY_UNHEALTHY", "message": unhealthy.ErrorMessage}})
	}
	tests := []struct {
		name   string
		h      http.HandlerFunc
		output string
		code   int
		want   []string // stdout patterns
	}{
		{"healthy table", answer(200, healthy, "", ""), "table", exitOK,
			[]string{`(?m)^healthy\s+yes$`, `(?m)^latency\s+1\.2 ms$`, `(?m)^last success\s+.* \(1m0s ago\)$`}},
		{"healthy json is the data", answer(200, healthy, "", ""), "json", exitOK,
			[]string{`^\{\n  "healthy": true,`}},
		{"503 table shows the check", unhealthyAPI, "table", exitFailed,
			[]string{`(?m)^healthy\s+no$`, `(?m)^connection\s+ok$`, `(?m)^data request\s+failed$`,
				`(?m)^stage\s+data request$`, `(?m)^error\s+no answer within 3s$`}},
		{"503 json is the envelope", unhealthyAPI, "json", exitFailed,
			[]string{`"success": false`, `"GATEWAY_UNHEALTHY"`, `"stage": "data request"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.h)
			code, out, errOut := runCLI(t, "ib", "health", "--api", api.url, "-o", tt.output)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			// The output explains an unhealthy gateway: no second word on stderr.
			if errOut != "" {
				t.Errorf("stderr %q, want nothing", errOut)
			}
			for _, p := range tt.want {
				if !regexp.MustCompile(p).MatchString(out) {
					t.Errorf("stdout does not match %q:\n%s", p, out)
				}
			}
			if strings.Contains(out, "\x1b[") {
				t.Errorf("colour codes in output that is not a terminal:\n%q", out)
			}
		})
	}
}

func TestTokenAndAPIFromEnvironment(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			writeEnvelope(w, 401, nil, "UNAUTHORIZED", "token required")
			return
		}
		writeEnvelope(w, 200, service.GatewayConfig{Host: "gw", Port: 4002, ClientIDBase: 1}, "", "")
	})
	if code, _, errOut := runCLI(t, "ib", "config", "--api", api.url, "--token", "tok-123"); code != exitOK {
		t.Errorf("--token: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("KTRDR_API_URL", api.url)
	t.Setenv("KTRDR_TOKEN", "tok-123")
	code, out, errOut := runCLI(t, "ib", "config", "get")
	if code != exitOK || !regexp.MustCompile(`(?m)^port\s+4002$`).MatchString(out) {
		t.Errorf("from the environment: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A flag wins over the environment.
	if code, _, errOut := runCLI(t, "ib", "config", "--token", "other"); code != exitUsage ||
		!strings.Contains(errOut, "rejected the token") {
		t.Errorf("--token over KTRDR_TOKEN: exit %d, stderr %q", code, errOut)
	}
	// host:port without a scheme is taken as http.
	if code, _, errOut := runCLI(t, "ib", "config", "--api", strings.TrimPrefix(api.url, "http://")); code != exitOK {
		t.Errorf("--api host:port: exit %d, stderr %q", code, errOut)
	}
}

func TestUsageErrorsAskNothing(t *testing.T) {
	api := newFakeAPI(t, answer(200, map[string]any{}, "", ""))
	tests := [][]string{
		{"ib", "config", "set", "--port", "70000"},
		{"ib", "config", "set", "--port", "0"},
		{"ib", "config", "set", "--client-id-base", "-1"},
		{"ib", "config", "set", "--host", " "},
		{"ib", "config", "set"},
		{"ib", "config", "set", "--port", "many"},
		{"ib", "status", "-o", "yaml"},
		{"ib", "status", "--timeout", "0s"},
		{"ib", "status", "--timeout", "soon"},
		{"ib", "status", "extra"},
		{"ib", "resilience", "--min-score", "-1"},
		{"ib", "health", "--no-such-flag"},
		{"symbols", "discover"},
		{"symbols", "discover", "A", "B"},
		{"symbols", "discover", " "},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, append(args, "--api", api.url)...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %q", code, exitUsage, errOut)
			}
			if !strings.HasPrefix(errOut, "ktrdr: ") || out != "" {
				t.Errorf("stdout %q, stderr %q", out, errOut)
			}
		})
	}
	for _, api := range []string{"ftp://x", "http://", "http://a b"} {
		if code, _, errOut := runCLI(t, "ib", "status", "--api", api); code != exitUsage {
			t.Errorf("--api %q: exit %d, stderr %q", api, code, errOut)
		}
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

func TestConfigSetSendsOnlyGivenFields(t *testing.T) {
	var reconnect = true
	api := newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request) {
		ch := service.ConfigChange{Previous: service.GatewayConfig{Host: "a", Port: 4002, ClientIDBase: 1},
			Current: service.GatewayConfig{Host: "a", Port: 4001, ClientIDBase: 1}, Changed: true, Reconnected: reconnect}
		if !reconnect {
			ch.Error = "connection refused"
		}
		writeEnvelope(w, 200, ch, "", "")
	})
	tests := []struct {
		args []string
		body map[string]any
	}{
		{[]string{"--port", "4001"}, map[string]any{"port": 4001.0}},
		{[]string{"--host", "gw.example", "--client-id-base", "3"}, map[string]any{"host": "gw.example", "client_id_base": 3.0}},
		{[]string{"--client-id-base", "0"}, map[string]any{"client_id_base": 0.0}},
	}
	for i, tt := range tests {
		code, out, errOut := runCLI(t, append([]string{"ib", "config", "set", "--api", api.url}, tt.args...)...)
		if code != exitOK {
			t.Errorf("%v: exit %d, stderr %q", tt.args, code, errOut)
		}
		r := api.requests()[i]
		if r.method != http.MethodPut || r.path != "/api/v1/ib/config" || !equalJSON(r.body, tt.body) {
			t.Errorf("%v: sent %s %s %v, want PUT %v", tt.args, r.method, r.path, r.body, tt.body)
		}
		if !regexp.MustCompile(`(?m)^port\s+4002\s+4001$`).MatchString(out) || !regexp.MustCompile(`(?m)^host\s+a\s+\(unchanged\)$`).MatchString(out) {
			t.Errorf("table:\n%s", out)
		}
	}
	// Applied but not reconnected: the setting stays, the command fails.
	reconnect = false
	code, out, errOut := runCLI(t, "ib", "config", "set", "--port", "4001", "--api", api.url)
	if code != exitFailed || !strings.Contains(errOut, "applied, but no validated connection to a:4001") ||
		!regexp.MustCompile(`(?m)^reconnected\s+no: connection refused$`).MatchString(out) {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func equalJSON(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// resiliencePayload is a report with one phase of each status.
func resiliencePayload(score float64) map[string]any {
	return map[string]any{
		"phase_1_systematic_validation": map[string]any{"status": "working", "evidence": []string{"12 validations, 0 failed"}, "validation_enabled": true},
		"phase_2_garbage_collection":    map[string]any{"status": "degraded", "reason": "the health loop is late", "evidence": []string{"last ran 5m ago"}},
		"phase_3_client_id_preference":  map[string]any{"status": "working", "evidence": []string{}},
		"phase_4_live_validation":       map[string]any{"status": "failing", "reason": "no validated connection", "evidence": []string{"live check failed"}},
		"overall_resilience_score":      score,
		"score_formula":                 service.ScoreFormula,
		"connection_pool_health":        map[string]any{"total_connections": 2, "healthy_connections": 1, "pool_uptime_seconds": 61.0},
	}
}

func TestResilience(t *testing.T) {
	api := newFakeAPI(t, answer(200, resiliencePayload(50), "", ""))
	code, out, errOut := runCLI(t, "ib", "resilience", "--api", api.url)
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := []string{
		`(?m)^PHASE\s+STATUS\s+REASON$`,
		`(?m)^1 systematic validation\s+working$`,
		`(?m)^    - 12 validations, 0 failed$`,
		`(?m)^2 garbage collection\s+degraded  the health loop is late$`,
		`(?m)^4 live validation\s+failing   no validated connection$`,
		`(?m)^score\s+50\.0/100$`,
		`(?m)^formula\s+score = sum over phases`,
		`(?m)^pool\s+2 connections, 1 healthy, up 1m1s$`,
	}
	for _, p := range want {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("stdout does not match %q:\n%s", p, out)
		}
	}
	if i, j := strings.Index(out, "1 systematic"), strings.Index(out, "4 live"); i < 0 || j < i {
		t.Errorf("phases out of order:\n%s", out)
	}

	code, out, errOut = runCLI(t, "ib", "resilience", "--api", api.url, "--min-score", "75")
	if code != exitFailed {
		t.Errorf("--min-score 75: exit %d, want 1", code)
	}
	wantErr := "ktrdr: resilience score 50.0 is below --min-score 75: not working: 2 garbage collection: degraded " +
		"(the health loop is late); 4 live validation: failing (no validated connection)\n"
	if errOut != wantErr || !strings.Contains(out, "score") {
		t.Errorf("stderr %q\nwant   %q", errOut, wantErr)
	}
	if code, _, _ := runCLI(t, "ib", "resilience", "--api", api.url, "--min-score", "50"); code != exitOK {
		t.Errorf("--min-score equal to the score: exit %d, want 0", code)
	}

	code, out, _ = runCLI(t, "ib", "resilience", "--api", api.url, "-o", "json", "--min-score", "75")
	var data map[string]any
	if err := json.Unmarshal([]byte(out), &data); err != nil || code != exitFailed || data["phase_4_live_validation"] == nil {
		t.Errorf("json: exit %d, %v, stdout %q", code, err, out)
	}
}

func TestResilienceColours(t *testing.T) {
	var r resilienceView
	r.Score = 62.5
	r.Phases = []phaseView{{Key: "phase_1_a", Status: "working"}, {Key: "phase_2_b", Status: "degraded", Reason: "late"},
		{Key: "phase_3_c", Status: "failing", Reason: "down"}}
	var b bytes.Buffer
	renderResilience(&b, true, r)
	out := b.String()
	for _, want := range []string{ansiGreen + "working ", ansiYellow + "degraded", ansiRed + "failing "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%q", want, out)
		}
	}
	// Colour codes must not break the alignment of the reason column.
	lines := strings.Split(ansiPattern.ReplaceAllString(out, ""), "\n")
	if strings.Index(lines[2], "late") != strings.Index(lines[3], "down") {
		t.Errorf("reasons not aligned:\n%s", strings.Join(lines, "\n"))
	}
	b.Reset()
	renderResilience(&b, false, r)
	if strings.Contains(b.String(), "\x1b[") {
		t.Errorf("colour without a terminal:\n%q", b.String())
	}
}

func TestColorEnabled(t *testing.T) {
	if colorEnabled(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
	f, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if colorEnabled(f) {
		t.Error("a regular file is not a terminal")
	}
	// /dev/null is a character device, as a terminal is.
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer null.Close()
	t.Setenv("TERM", "xterm")
	if !colorEnabled(null) {
		t.Error("a character device should get colour")
	}
	t.Setenv("NO_COLOR", "1")
	if colorEnabled(null) {
		t.Error("NO_COLOR is set")
	}
}

func TestTables(t *testing.T) {
	now := time.Now()
	head := time.Date(2005, 1, 2, 22, 15, 0, 0, time.UTC)
	eur := service.Instrument{Symbol: "EURUSD", IBSymbol: "EUR", Type: "forex", SecType: "CASH", Exchange: "IDEALPRO",
		Currency: "USD", LocalSymbol: "EUR.USD", Description: "European Monetary Union Euro", ConID: 12087792,
		HeadTimestamp: &head, DiscoveredAt: now, DiscoveryTimeMS: 2.5}
	aapl := service.Instrument{Symbol: "AAPL", Type: "stock", SecType: "STK", Exchange: "SMART", PrimaryExchange: "NASDAQ",
		Currency: "USD", Description: "APPLE INC", ConID: 265598, DiscoveredAt: now.Add(-time.Hour), Cached: true}
	since := now.Add(-90 * time.Second)
	status := service.Status{
		Gateway:        service.GatewayInfo{Host: "127.0.0.1", Port: 4002, ServerVersion: 178, Accounts: []string{"DU123"}, AccountType: "paper", ConnectedSince: &since},
		ClientIDsInUse: []int{1, 2},
		Pool:           service.PoolStats{Total: 2, Idle: 1, InUse: 1, MaxConns: 4, MinIdle: 1, LowestFreeClientID: 3},
		Breaker:        service.BreakerInfo{Name: "gateway-connect", State: "closed", FailureThreshold: 3},
		Events:         []service.ConnEvent{{Time: now, Code: 2104, Text: "Market data farm connection is OK:usfarm", ClientID: 1}},
	}
	breakers := []service.BreakerInfo{{Name: "gateway-connect", State: "open", ConsecutiveFailures: 3, FailureThreshold: 3,
		Transitions: 1, LastTransition: &now, LastFrom: "closed", LastTo: "open", ProbeIntervalMS: 1000}}
	cleanup := service.CleanupResult{Force: true, ClosedClientIDs: []int{1, 2}, Closed: 2,
		Before: service.PoolStats{Total: 2, Idle: 1, InUse: 1}}
	// The request bodies the commands with one must send.
	bodies := map[string]map[string]any{
		"cleanup":  {"force": true},
		"discover": {"symbol": "eurusd", "force_refresh": true},
	}
	tests := []struct {
		name string
		args []string
		data any
		want []string
	}{
		{"status", []string{"ib", "status"}, status, []string{
			`(?m)^gateway\s+127\.0\.0\.1:4002 \(server version 178\)$`, `(?m)^accounts\s+DU123 \(paper\)$`,
			`(?m)^connected since\s+.*\(1m30s ago\)$`, `(?m)^pool\s+2 open: 1 idle, 1 in use`,
			`(?m)^client ids\s+in use 1,2, resting -, lowest free 3$`, `(?m)^breaker\s+closed \(0/3`,
			`(?m)^last events \(1 of 1\):$`, `(?m)^  \S+\s+2104\s+1\s+Market data farm connection is OK:usfarm$`}},
		{"config", []string{"ib", "config"}, service.GatewayConfig{Host: "gw", Port: 4001, ClientIDBase: 5}, []string{
			`(?m)^host\s+gw$`, `(?m)^port\s+4001$`, `(?m)^client id base\s+5$`}},
		{"cleanup", []string{"ib", "cleanup", "--force"}, cleanup, []string{
			`(?m)^closed\s+2: all connections \(force\)$`, `(?m)^client ids\s+1,2$`,
			`(?m)^before\s+2 open: 1 idle, 1 in use$`, `(?m)^after\s+0 open`}},
		{"circuit-breakers wrapped", []string{"ib", "circuit-breakers"}, map[string]any{"circuit_breakers": breakers}, []string{
			`(?m)^NAME\s+STATE\s+FAILURES`, `(?m)^gateway-connect\s+open\s+3/3\s+1\s+1s\s+closed -> open, just now$`}},
		{"circuit-breakers bare", []string{"ib", "circuit-breakers"}, breakers, []string{`(?m)^gateway-connect\s+open`}},
		{"discover", []string{"symbols", "discover", "eurusd", "--force-refresh"}, eur, []string{
			`(?m)^type\s+forex \(CASH\)$`, `(?m)^exchange\s+IDEALPRO$`, `(?m)^currency\s+USD$`, `(?m)^conId\s+12087792$`,
			`(?m)^description\s+European Monetary Union Euro$`, `(?m)^head timestamp\s+2005-01-02 22:15:00 UTC$`,
			`(?m)^cached\s+no`, `(?m)^time\s+2\.5 ms$`}},
		{"list", []string{"symbols", "list"}, map[string]any{"symbols": []service.Instrument{eur, aapl}, "count": 2}, []string{
			`(?m)^SYMBOL\s+TYPE\s+EXCHANGE\s+CURRENCY\s+CONID\s+DISCOVERED\s+DESCRIPTION$`,
			`(?m)^EURUSD\s+forex\s+IDEALPRO\s+USD\s+12087792\s+just now\s+European Monetary Union Euro$`,
			`(?m)^AAPL\s+stock\s+SMART\s+USD\s+265598\s+1h0m0s ago\s+APPLE INC$`}},
		{"empty list", []string{"symbols", "list"}, map[string]any{"symbols": []any{}, "count": 0}, []string{`no symbols discovered yet`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, answer(200, tt.data, "", ""))
			code, out, errOut := runCLI(t, append(tt.args, "--api", api.url)...)
			if code != exitOK || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			for _, p := range tt.want {
				if !regexp.MustCompile(p).MatchString(out) {
					t.Errorf("stdout does not match %q:\n%s", p, out)
				}
			}
			if r := api.requests()[0]; bodies[tt.name] != nil && !equalJSON(r.body, bodies[tt.name]) {
				t.Errorf("sent %v, want %v", r.body, bodies[tt.name])
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.HasSuffix(l, " ") {
					t.Errorf("trailing blanks: %q", l)
				}
			}
			// -o json prints the data, pretty, and nothing else.
			code, out, _ = runCLI(t, append(tt.args, "--api", api.url, "-o", "json")...)
			want, _ := json.MarshalIndent(tt.data, "", "  ")
			if code != exitOK || !equalJSONText(t, out, string(want)) || !strings.HasSuffix(out, "}\n") && !strings.HasSuffix(out, "]\n") {
				t.Errorf("json: exit %d, stdout\n%s", code, out)
			}
		})
	}
}

// equalJSONText compares two JSON texts by value.
func equalJSONText(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Errorf("not JSON: %v", err)
		return false
	}
	_ = json.Unmarshal([]byte(b), &vb)
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}
