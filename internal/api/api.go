// Package api is ktrdr's HTTP interface: the IB service's endpoints under
// /api/v1, each answering in one JSON envelope within a deadline, and the
// Prometheus metrics under /metrics.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ktrdr/ktrdr/internal/loader"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/internal/statuspage"
)

// Defaults for Options.
const (
	DefaultHandlerTimeout = 5 * time.Second
	DefaultMaxBodyBytes   = 64 << 10
)

// handlerGrace is how long past its deadline a handler may take to report
// its own timeout. Service calls that honour the context answer at once
// with the stage that was waiting, which says more than a generic 504.
const handlerGrace = 200 * time.Millisecond

// healthPath is the one path served without the token, so liveness probes
// need no secret.
const healthPath = "/api/v1/health"

// unmatchedRoute labels requests that matched no route, so that scanning
// for random paths cannot grow the metrics' label set.
const unmatchedRoute = "unmatched"

// Options configures a Server.
type Options struct {
	// Token, when set, is required on every request except GET
	// /api/v1/health, as "Authorization: Bearer <token>". That includes
	// /metrics, because the metrics reveal the gateway's state, and unknown
	// paths, so that a caller without the token cannot map the routes.
	Token string
	// HandlerTimeout is every handler's deadline; default 5s, the response
	// time the original system's users were promised.
	HandlerTimeout time.Duration
	// MaxBodyBytes caps a request body; default 64 KiB, far above any valid
	// body. Larger bodies are answered 413.
	MaxBodyBytes int64
	// Logger; default discards.
	Logger *slog.Logger
	// Registry receives the metrics and is served on /metrics; default a
	// new registry.
	Registry *prometheus.Registry
	// Version is reported by GET /api/v1/health.
	Version string
	// Loader, when set, serves the historical-data endpoints (data loads,
	// operations, stored bars) and the pacing metrics.
	Loader *loader.Loader
}

// Server is the HTTP handler. Safe for concurrent use.
type Server struct {
	svc      *service.IB
	opts     Options
	log      *slog.Logger
	mux      *http.ServeMux
	tokenSum [sha256.Size]byte
	started  time.Time
	pid      int
	duration *prometheus.HistogramVec
}

// New builds the server and registers its metrics in opts.Registry.
func New(svc *service.IB, opts Options) (*Server, error) {
	if svc == nil {
		return nil, errors.New("api: nil service")
	}
	if opts.HandlerTimeout <= 0 {
		opts.HandlerTimeout = DefaultHandlerTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{svc: svc, opts: opts, log: opts.Logger, mux: http.NewServeMux(), started: time.Now(), pid: os.Getpid()}
	if opts.Token != "" {
		s.tokenSum = sha256.Sum256([]byte(opts.Token))
	}
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) registerMetrics() error {
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ktrdr_http_request_duration_seconds",
		Help:    "HTTP request durations by route pattern and status code.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "code"})
	reg := s.opts.Registry
	cs := []prometheus.Collector{s.duration, newIBCollector(s.svc)}
	if s.opts.Loader != nil {
		cs = append(cs, newDataCollector(s.opts.Loader))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("api: registering metrics: %w", err)
		}
	}
	// A caller's registry may already carry the Go and process collectors.
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return fmt.Errorf("api: registering metrics: %w", err)
		}
	}
	return nil
}

func (s *Server) routes() {
	s.handle("GET "+healthPath, noBody(s.serviceHealth))
	s.handle("GET /api/v1/ib/health", noBody(s.ibHealth))
	s.handle("GET /api/v1/ib/status", noBody(s.status))
	s.handle("GET /api/v1/ib/resilience", noBody(s.resilience))
	s.handle("GET /api/v1/ib/config", noBody(s.config))
	s.handle("PUT /api/v1/ib/config", withBody(s, s.updateConfig))
	s.handle("POST /api/v1/ib/cleanup", withBody(s, s.cleanup))
	s.handle("GET /api/v1/ib/circuit-breakers", noBody(s.circuitBreakers))
	s.handle("POST /api/v1/ib/symbols/discover", withBody(s, s.discover))
	s.handle("GET /api/v1/ib/symbols/discovered", noBody(s.discovered))
	s.dataRoutes()
	// The status page holds no data (its scripts fetch the API with the
	// token), so it is served without one; {$} keeps it from shadowing the
	// envelope 404s of unknown paths.
	s.mux.Handle("GET /{$}", statuspage.Handler())
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       s.opts.HandlerTimeout,
	}))
}

// statusPagePath serves the status page.
const statusPagePath = "/"

// HTTPServer returns an http.Server for s with timeouts that bound every
// phase of a connection: a client that sends its headers or body slowly, or
// never reads the answer, cannot hold a connection open.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      s.opts.HandlerTimeout + 5*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// ServeHTTP authenticates, checks the path, routes and records the
// request's duration. Requests that match no route are answered here, so
// 404 and 405 carry the envelope like every other answer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	route := unmatchedRoute
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !rec.wrote {
				s.writeResult(rec, internalError())
			}
		}
		took := time.Since(start)
		s.duration.WithLabelValues(route, strconv.Itoa(rec.code())).Observe(took.Seconds())
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "route", route, "status", rec.code(), "took", took)
		if p == http.ErrAbortHandler {
			panic(p) // net/http's way to abort a response; it logs nothing for it
		}
	}()

	canonical := isCanonical(r)
	h, pattern := s.mux.Handler(r)
	if canonical && pattern != "" {
		route = pattern
	}
	if !s.authorized(r) {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="ktrdr"`)
		s.writeResult(rec, fail(http.StatusUnauthorized, "UNAUTHORIZED",
			"this endpoint requires the header Authorization: Bearer <token>", nil))
		return
	}
	if !canonical {
		s.writeResult(rec, fail(http.StatusBadRequest, "INVALID_PATH",
			"the path is not in canonical form (no '.', '..' or empty segments)", map[string]any{"path": r.URL.EscapedPath()}))
		return
	}
	if pattern == "" {
		s.unrouted(rec, r, h)
		return
	}
	s.mux.ServeHTTP(rec, r)
}

// isCanonical reports whether the mux would serve the path as it is rather
// than redirect to a cleaned one. A redirect would send a traversal attempt
// such as /api/v1/../../etc to another path; a 400 says what is wrong.
func isCanonical(r *http.Request) bool {
	p := r.URL.EscapedPath()
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// unrouted answers a request the mux has no handler for: 405 with the
// mux's Allow header when the path exists under other methods, else 404.
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	probe := &headerProbe{header: http.Header{}}
	h.ServeHTTP(probe, r) // the mux's own 404 or 405 handler: it only sets headers
	if probe.status == http.StatusMethodNotAllowed {
		allow := probe.header.Get("Allow")
		w.Header().Set("Allow", allow)
		s.writeResult(w, fail(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED",
			fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path), map[string]any{"allow": allow}))
		return
	}
	s.writeResult(w, fail(http.StatusNotFound, "NOT_FOUND",
		"no such endpoint", map[string]any{"method": r.Method, "path": r.URL.Path}))
}

// authorized checks the bearer token. Both sides are hashed first so the
// comparison takes the same time whatever the length of the guess.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" || r.URL.Path == healthPath || r.URL.Path == statusPagePath {
		return true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], s.tokenSum[:]) == 1
}

// handlerFunc is an endpoint's work once its input is read.
type handlerFunc func(ctx context.Context) result

// prepareFunc reads and checks a request's input. It runs on the request's
// goroutine because the body must not be read after ServeHTTP returns,
// which may happen before the work finishes (see handle).
type prepareFunc func(w http.ResponseWriter, r *http.Request) (handlerFunc, *result)

func noBody(run handlerFunc) prepareFunc {
	return func(http.ResponseWriter, *http.Request) (handlerFunc, *result) { return run, nil }
}

func withBody[In any](s *Server, run func(ctx context.Context, in In) result) prepareFunc {
	return func(w http.ResponseWriter, r *http.Request) (handlerFunc, *result) {
		var in In
		if res := s.decode(w, r, &in); res != nil {
			return nil, res
		}
		return func(ctx context.Context) result { return run(ctx, in) }, nil
	}
}

// handle registers an endpoint. Its work runs on its own goroutine under
// HandlerTimeout, so the answer arrives in time even if a call does not
// honour its context: past the deadline (plus a short grace for the call's
// own, more precise error) the client gets a 504 naming the route, and the
// abandoned work ends when its cancelled context lets it.
func (s *Server) handle(pattern string, prep prepareFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		run, bad := prep(w, r)
		if bad != nil {
			s.writeResult(w, *bad)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.HandlerTimeout)
		defer cancel()
		done := make(chan result, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("panic in handler", "route", pattern, "panic", p, "stack", string(debug.Stack()))
					done <- internalError()
				}
			}()
			done <- run(ctx)
		}()
		var res result
		select {
		case res = <-done:
		case <-ctx.Done():
			grace := time.NewTimer(handlerGrace)
			select {
			case res = <-done:
			case <-grace.C:
				res = s.abandoned(pattern, ctx.Err())
			}
			grace.Stop()
		}
		s.writeResult(w, res)
	})
}

func (s *Server) abandoned(route string, err error) result {
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("handler missed its deadline", "route", route, "timeout", s.opts.HandlerTimeout)
		return fail(http.StatusGatewayTimeout, "HANDLER_TIMEOUT",
			fmt.Sprintf("the request did not finish within %s", s.opts.HandlerTimeout),
			map[string]any{"stage": route, "timeout_ms": s.opts.HandlerTimeout.Milliseconds()})
	}
	// The client went away: nobody reads this answer, but the metrics do.
	return fail(http.StatusServiceUnavailable, "REQUEST_CANCELED", "the request was cancelled by the client", map[string]any{"stage": route})
}

// recorder remembers the status for the metrics and whether anything was
// written, so the panic handler does not write twice.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// headerProbe captures what the mux's fallback handlers would answer.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *headerProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
