package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/internal/service"
)

// newTestServer builds a Server on a simulator-backed service; the tests
// here add routes that misbehave on purpose.
func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	sim, err := ibsim.Start(ibsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	svc, err := service.New(service.Options{Gateway: service.GatewayConfig{Host: "127.0.0.1", Port: sim.Port(), ClientIDBase: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	s, err := New(svc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serve(s *Server, method, path string) (*httptest.ResponseRecorder, envelope, map[string]any) {
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	var env envelope
	var details map[string]any
	var raw struct {
		Error *apiError `json:"error"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &env)
	if json.Unmarshal(w.Body.Bytes(), &raw) == nil && raw.Error != nil {
		details = raw.Error.Details
	}
	return w, env, details
}

func TestPanicBecomes500(t *testing.T) {
	s := newTestServer(t, Options{})
	s.handle("GET /api/v1/test/panic", noBody(func(context.Context) result { panic("boom") }))
	// A panic outside the handler goroutine, in a route registered raw.
	s.mux.HandleFunc("GET /api/v1/test/rawpanic", func(http.ResponseWriter, *http.Request) { panic("raw boom") })
	for _, p := range []string{"/api/v1/test/panic", "/api/v1/test/rawpanic"} {
		w, env, _ := serve(s, "GET", p)
		if w.Code != 500 || env.Success || env.Error == nil || env.Error.Code != "INTERNAL" {
			t.Fatalf("%s: %d %s", p, w.Code, w.Body)
		}
		if strings.Contains(w.Body.String(), "boom") {
			t.Fatalf("%s: the panic value leaked to the client: %s", p, w.Body)
		}
	}
	// Still serving.
	if w, _, _ := serve(s, "GET", "/api/v1/health"); w.Code != 200 {
		t.Fatalf("after panics: %d", w.Code)
	}
}

// TestHandlerDeadline: work that ignores its context still gets an answer
// at the deadline, naming the route as the stage.
func TestHandlerDeadline(t *testing.T) {
	s := newTestServer(t, Options{HandlerTimeout: 300 * time.Millisecond})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s.handle("GET /api/v1/test/stuck", noBody(func(context.Context) result { <-release; return ok(nil) }))
	// Work that honours its context answers with its own error at the deadline.
	s.handle("GET /api/v1/test/polite", noBody(func(ctx context.Context) result {
		<-ctx.Done()
		return fail(http.StatusGatewayTimeout, "GATEWAY_TIMEOUT", "deadline passed while waiting", map[string]any{"stage": "waiting"})
	}))
	start := time.Now()
	w, env, details := serve(s, "GET", "/api/v1/test/stuck")
	took := time.Since(start)
	if w.Code != 504 || env.Error == nil || env.Error.Code != "HANDLER_TIMEOUT" || details["stage"] != "GET /api/v1/test/stuck" {
		t.Fatalf("stuck: %d %s", w.Code, w.Body)
	}
	if took < 300*time.Millisecond || took > 300*time.Millisecond+handlerGrace+500*time.Millisecond {
		t.Fatalf("stuck answered after %s", took)
	}
	start = time.Now()
	w, _, details = serve(s, "GET", "/api/v1/test/polite")
	if w.Code != 504 || details["stage"] != "waiting" || time.Since(start) > 300*time.Millisecond+handlerGrace {
		t.Fatalf("polite: %d %s after %s", w.Code, w.Body, time.Since(start))
	}
}

func TestDefaults(t *testing.T) {
	s := newTestServer(t, Options{})
	if s.opts.HandlerTimeout != 5*time.Second || s.opts.MaxBodyBytes != 64<<10 || s.opts.Registry == nil || s.log == nil {
		t.Fatalf("defaults %+v", s.opts)
	}
}

func TestIsCanonical(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/api/v1/ib/health": true, "/api/v1/ib/": true,
		"/api/v1/../x": false, "/api//v1": false, "/api/./v1": false, "/api/v1/..": false, "/api/v1/.": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.Path = p
		if got := isCanonical(r); got != want {
			t.Errorf("isCanonical(%q) = %t", p, got)
		}
	}
}
