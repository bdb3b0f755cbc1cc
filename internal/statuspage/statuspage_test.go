package statuspage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/internal/api"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/internal/statuspage"
	"github.com/ktrdr/ktrdr/pool"
)

// env is the status page mounted beside a real API, service and simulator,
// the way ktrdr serve combines them: "/" is the page, every other path the API.
type env struct {
	sim   *ibsim.Server
	svc   *service.IB
	ts    *httptest.Server
	token string
}

// testPool keeps every period short, so the health loop, breaker probes
// and validations run many times within a test and the score settles in
// well under a second; values sit at or above the pool's floors.
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

func newEnv(t *testing.T, token string) *env {
	t.Helper()
	sim, err := ibsim.Start(ibsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	svc, err := service.New(service.Options{
		Gateway: service.GatewayConfig{Host: "127.0.0.1", Port: sim.Port(), ClientIDBase: 1},
		Pool:    testPool(),
		DataDir: t.TempDir(),
		// Well inside the page's 2 s refresh, so a silent gateway shows
		// in the score within a few refreshes.
		CheckTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	srv, err := api.New(svc, api.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/{$}", statuspage.Handler())
	mux.Handle("/", srv)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return &env{sim: sim, svc: svc, ts: ts, token: token}
}

// apiData GETs an API path and decodes the envelope's data into dst.
func (e *env) apiData(t *testing.T, path string, dst any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Success bool            `json:"success"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || !env.Success {
		t.Fatalf("GET %s: %d, success %t, %v", path, resp.StatusCode, env.Success, err)
	}
	if err := json.Unmarshal(env.Data, dst); err != nil {
		t.Fatalf("GET %s: data: %v", path, err)
	}
}

// score is the API's current resilience score.
func (e *env) score(t *testing.T) float64 {
	t.Helper()
	var r struct {
		Score float64 `json:"overall_resilience_score"`
	}
	e.apiData(t, "/api/v1/ib/resilience", &r)
	return r.Score
}

func get(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Result()
}

// TestHandlerServesOnePage: the page on GET and HEAD of "/", with a
// policy that allows its own inline script and style and nothing from
// elsewhere; other paths 404 and other methods 405.
func TestHandlerServesOnePage(t *testing.T) {
	h := statuspage.Handler()

	resp := get(t, h, http.MethodGet, "/")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`<meta name="viewport"`, "/api/v1/ib/status", "/api/v1/ib/resilience", "sessionStorage", "Bearer "} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Self-contained: no URL other than the SVG namespace, no external
	// script, style sheet or image.
	for _, u := range regexp.MustCompile(`https?://[^\s"'<>)]+`).FindAll(body, -1) {
		if string(u) != "http://www.w3.org/2000/svg" {
			t.Errorf("page refers to %s", u)
		}
	}
	if regexp.MustCompile(`<script[^>]*\ssrc=|<link[^>]*stylesheet|@import`).Match(body) {
		t.Error("page loads a script or style sheet from elsewhere")
	}

	csp := resp.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("no inline <%s>", tag)
		}
		sum := sha256.Sum256(m[1])
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", resp.Header)
	}

	head := get(t, h, http.MethodHead, "/")
	if b, _ := io.ReadAll(head.Body); head.StatusCode != http.StatusOK || len(b) != 0 {
		t.Errorf("HEAD /: %d with %d body bytes", head.StatusCode, len(b))
	}
	if r := get(t, h, http.MethodGet, "/index.html"); r.StatusCode != http.StatusNotFound {
		t.Errorf("GET /index.html: %d", r.StatusCode)
	}
	if r := get(t, h, http.MethodPost, "/"); r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d, Allow %q", r.StatusCode, r.Header.Get("Allow"))
	}
}

// TestPageBesideTheAPI: mounted at "/{$}" the page needs no token while
// the API beside it keeps requiring one, and the API's routes still answer.
func TestPageBesideTheAPI(t *testing.T) {
	e := newEnv(t, "secret")
	client := e.ts.Client()
	resp, err := client.Get(e.ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	resp, err = client.Get(e.ts.URL + "/api/v1/ib/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /api/v1/ib/status without a token: %d", resp.StatusCode)
	}
	var st service.Status
	e.apiData(t, "/api/v1/ib/status", &st)
	if st.Gateway.Port != e.sim.Port() {
		t.Fatalf("status names port %d, simulator is on %d", st.Gateway.Port, e.sim.Port())
	}
}
