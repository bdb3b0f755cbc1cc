package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec says how many operations run at once.
type loadSpec struct {
	api, cli int
	// refresh is how many API workers also ask the gateway (a discovery
	// with force_refresh) once per cycle; the others read what the server
	// already has, and the health check, which reaches the gateway.
	refresh int
}

func (s loadSpec) String() string {
	return fmt.Sprintf("%d workers (%d API, %d CLI)", s.api+s.cli, s.api, s.cli)
}

// loadOp is one operation a worker repeats.
type loadOp struct {
	name         string
	method, path string
	body         any
	args         []string // a CLI command instead of an API call
}

// apiLoad is the API workers' cycle: every read endpoint, the live check,
// cached discoveries and the metrics.
var apiLoad = []loadOp{
	{name: "GET /api/v1/health", method: "GET", path: "/api/v1/health"},
	{name: "GET /api/v1/ib/health", method: "GET", path: "/api/v1/ib/health"},
	{name: "GET /api/v1/ib/status", method: "GET", path: "/api/v1/ib/status"},
	{name: "GET /api/v1/ib/resilience", method: "GET", path: "/api/v1/ib/resilience"},
	{name: "GET /api/v1/ib/config", method: "GET", path: "/api/v1/ib/config"},
	{name: "GET /api/v1/ib/circuit-breakers", method: "GET", path: "/api/v1/ib/circuit-breakers"},
	{name: "GET /api/v1/ib/symbols/discovered", method: "GET", path: "/api/v1/ib/symbols/discovered"},
	{name: "POST /api/v1/ib/symbols/discover", method: "POST", path: "/api/v1/ib/symbols/discover", body: map[string]any{"symbol": "AAPL"}},
	{name: "POST /api/v1/ib/symbols/discover", method: "POST", path: "/api/v1/ib/symbols/discover", body: map[string]any{"symbol": "EURUSD"}},
	{name: "GET /metrics", method: "GET", path: "/metrics"},
}

var refreshOp = loadOp{name: "POST /api/v1/ib/symbols/discover (force_refresh)", method: "POST", path: "/api/v1/ib/symbols/discover",
	body: map[string]any{"symbol": "MSFT", "force_refresh": true}}

// cliLoad is the CLI workers' cycle.
var cliLoad = []loadOp{
	{name: "ktrdr ib health", args: []string{"ib", "health"}},
	{name: "ktrdr ib status", args: []string{"ib", "status"}},
	{name: "ktrdr ib resilience", args: []string{"ib", "resilience"}},
	{name: "ktrdr symbols list", args: []string{"symbols", "list"}},
	{name: "ktrdr ib circuit-breakers", args: []string{"ib", "circuit-breakers"}},
	{name: "ktrdr symbols discover AAPL", args: []string{"symbols", "discover", "AAPL"}},
}

// load is running workers. Each repeats its cycle until stopped; every
// operation is recorded by the API client or the CLI runner.
type load struct {
	spec     loadSpec
	start    time.Time
	stopping chan struct{}
	stopOnce sync.Once
	abort    context.CancelFunc
	wg       sync.WaitGroup
	inFlight atomic.Int64

	mu        sync.Mutex
	samples   int64 // in-flight samples taken
	sum, peak int64
	window    time.Time // samples are counted from here (see resetWindow)
}

// loadStopTimeout bounds the wait for the last operations after stop: a
// CLI command may take up to its hard timeout.
const loadStopTimeout = cliHardTimeout + 5*time.Second

// startLoad starts the workers; stop ends them.
func startLoad(ctx context.Context, e *env, spec loadSpec) *load {
	ctx, abort := context.WithCancel(ctx)
	l := &load{spec: spec, start: time.Now(), stopping: make(chan struct{}), abort: abort}
	l.window = l.start
	for i := range spec.api {
		ops := apiLoad
		if i < spec.refresh {
			ops = append(append([]loadOp{}, apiLoad...), refreshOp)
		}
		l.wg.Add(1)
		go l.worker(ctx, e, ops, i)
	}
	for i := range spec.cli {
		l.wg.Add(1)
		go l.worker(ctx, e, cliLoad, i)
	}
	l.wg.Add(1)
	go l.sampleInFlight()
	return l
}

func (l *load) worker(ctx context.Context, e *env, ops []loadOp, offset int) {
	defer l.wg.Done()
	for i := offset; ; i++ {
		select {
		case <-l.stopping:
			return
		case <-ctx.Done():
			return
		default:
		}
		o := ops[i%len(ops)]
		l.inFlight.Add(1)
		if o.args != nil {
			e.cli.run(ctx, o.name, o.args...)
		} else {
			_, _ = e.api.call(ctx, o.name, o.method, o.path, o.body)
		}
		l.inFlight.Add(-1)
	}
}

// sampleInFlight measures how many operations are in flight, ten times a second.
func (l *load) sampleInFlight() {
	defer l.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-l.stopping:
			return
		case <-t.C:
			n := l.inFlight.Load()
			l.mu.Lock()
			l.samples++
			l.sum += n
			l.peak = max(l.peak, n)
			l.mu.Unlock()
		}
	}
}

// inFlightStats returns the mean and peak operations in flight since the
// window began, and starts a new window.
func (l *load) inFlightStats() (mean float64, peak int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.samples > 0 {
		mean = float64(l.sum) / float64(l.samples)
	}
	peak = l.peak
	l.samples, l.sum, l.peak, l.window = 0, 0, 0, time.Now()
	return mean, peak
}

// stop lets every worker finish its operation and waits for them; past
// loadStopTimeout it cancels what is still running. Later calls return at once.
func (l *load) stop() { l.stopOnce.Do(l.stopNow) }

func (l *load) stopNow() {
	close(l.stopping)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(loadStopTimeout):
		l.abort()
		<-done // every operation honours its context
	}
	l.abort()
}

// badOps counts operations that did not succeed: no answer, an HTTP error
// status, or a CLI command that did not exit 0.
func badOps(ops []op) (bad, total int, names map[string]int) {
	names = map[string]int{}
	for _, o := range ops {
		total++
		if o.failed || (o.kind == opAPI && o.status >= http.StatusBadRequest) || (o.kind == opCLI && o.status != 0) {
			bad++
			names[o.name]++
		}
	}
	return bad, total, names
}
