package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ktrdr/ktrdr/internal/loader"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/internal/api"
	"github.com/ktrdr/ktrdr/internal/service"
)

// Bounds of the standard level, each from the original guide.
const (
	validationBound = 3 * time.Second  // one validation round trip
	silentBound     = 5 * time.Second  // a silent connection is caught within 3-5 s
	recoveryBound   = 10 * time.Second // healthy again after a fault is cleared
	recoveryTarget  = 1500 * time.Millisecond
	minScore        = 75.0
	// recoveryWait is how long the runner waits for a recovery at all;
	// past recoveryBound the figure is a failure, but its size still says
	// something.
	recoveryWait = 30 * time.Second
	// healthTTL is how long the server reuses a health check.
	healthTTL = time.Second
)

// standardScenarios prove each resilience phase against a gateway.
func standardScenarios() []scenario {
	return []scenario{
		{phase: "readiness", run: readinessScenario},
		{phase: "health", run: healthScenario},
		{phase: "status", run: statusScenario},
		{phase: "resilience score", run: resilienceScenario},
		{phase: "symbol discovery", run: symbolsScenario},
		{phase: "data load", run: dataLoadScenario},
		{phase: "validation before handoff", run: silentScenario},
		{phase: "idle collection", run: idleScenario},
		{phase: "client-id preference", run: clientIDScenario},
	}
}

// readinessScenario waits for the gateway through the server and for the
// health loop's first run, and probes the gateway directly.
func readinessScenario(ctx context.Context, r *run, e *env) {
	took, err := waitHealthy(ctx, e, time.Time{}, gatewayWait)
	if !r.check("gateway healthy through the server", err == nil, healthyFigure(took, err), "GET /api/v1/ib/health 200 within "+fmtDur(gatewayWait)) {
		return
	}
	loopWait := 2*e.settings.HealthInterval + 5*time.Second
	var runs int64
	took, err = poll(ctx, loopWait, 100*time.Millisecond, func(ctx context.Context) error {
		st, err := e.api.status(ctx)
		if err != nil {
			return err
		}
		if runs = st.Pool.HealthRuns; runs == 0 {
			return errNotYet
		}
		return nil
	})
	fig := fmt.Sprintf("%d runs after %s", runs, fmtDur(took))
	if err != nil {
		fig = err.Error()
	}
	r.check("health loop has run", err == nil, fig, fmt.Sprintf(">= 1 run within %s (2 health intervals + 5 s)", fmtDur(loopWait)))
	if e.sim != nil {
		host, port, _ := e.gatewayHostPort()
		p, res := probeGateway(ctx, e.cli, host, port)
		r.check("gateway handshake (ktrdr ib probe)", res.code == 0 && p.Healthy, probeFigure(p, res), "exit 0: connect, handshake, one round trip")
	}
}

// healthScenario: the live check through the API and the CLI.
func healthScenario(ctx context.Context, r *run, e *env) {
	rep, h, err := e.api.ibHealth(ctx)
	if err != nil {
		r.check("GET /api/v1/ib/health", false, err.Error(), "200, healthy")
	} else {
		r.check("GET /api/v1/ib/health: validated connection and a data request answered",
			rep.Status == http.StatusOK && h.Healthy && h.ConnectionOK && h.DataFetchingOK,
			fmt.Sprintf("%s; check latency %.1f ms", rep.summary(), h.LatencyMS), "200, connection_ok and data_fetching_ok")
	}
	res := e.cli.run(ctx, "ktrdr ib health", "ib", "health")
	r.check("ktrdr ib health", res.err == nil && res.code == 0 && res.took <= cliDeadline,
		cliFigure(res), "exit 0 within 30 s")
}

// statusScenario: what the server knows of the gateway and the pool.
func statusScenario(ctx context.Context, r *run, e *env) {
	st, err := e.api.status(ctx)
	if err != nil {
		r.check("GET /api/v1/ib/status", false, err.Error(), "200")
		return
	}
	g := st.Gateway
	r.check("gateway and accounts known", g.ServerVersion > 0 && len(g.Accounts) > 0 && g.AccountType == "paper",
		fmt.Sprintf("server version %d, accounts %v (%s)", g.ServerVersion, g.Accounts, g.AccountType), "server version and a paper account")
	p := st.Pool
	p99 := time.Duration(p.ValidationP99MS * float64(time.Millisecond))
	r.check("connection validation round trip (p99)", p.Validations > 0 && p99 <= validationBound,
		fmt.Sprintf("p99 %s, p50 %.1f ms over %d validations (%d failed)", fmtDur(p99), p.ValidationP50MS, p.Validations, p.ValidationFailures),
		"<= 3 s", crit(critValidation), measured(p99.Seconds(), validationBound.Seconds(), "s"))
	r.check("circuit breaker closed", st.Breaker.State == "closed",
		fmt.Sprintf("%s (%d/%d consecutive failures)", st.Breaker.State, st.Breaker.ConsecutiveFailures, st.Breaker.FailureThreshold), "closed")
	res := e.cli.run(ctx, "ktrdr ib status", "ib", "status")
	r.check("ktrdr ib status", res.err == nil && res.code == 0 && strings.Contains(res.stdout, "accounts"), cliFigure(res), "exit 0 within 30 s, shows the accounts")
}

// resilienceScenario: score >= 75 with every phase working, through the
// API and as the CLI's monitoring check.
func resilienceScenario(ctx context.Context, r *run, e *env) {
	scoreCheck(ctx, r, e, "resilience score with every phase working")
	res := e.cli.run(ctx, "ktrdr ib resilience --min-score 75", "ib", "resilience", "--min-score", "75")
	r.check("ktrdr ib resilience --min-score 75", res.err == nil && res.code == 0, cliFigure(res), "exit 0 within 30 s")
}

// scoreCheck waits (a few health intervals) for score >= 75 with every
// phase working, and records the figure.
func scoreCheck(ctx context.Context, r *run, e *env, name string) {
	wait := 3*e.settings.HealthInterval + 15*time.Second
	var last resilience
	took, err := poll(ctx, wait, 250*time.Millisecond, func(ctx context.Context) error {
		res, err := e.api.resilience(ctx)
		if err != nil {
			return err
		}
		last = res
		if res.Score < minScore || len(res.notWorking()) > 0 {
			return errNotYet
		}
		return nil
	})
	working := len(last.Phases) - len(last.notWorking())
	fig := fmt.Sprintf("score %.0f, %d/%d phases working", last.Score, working, len(last.Phases))
	if err == nil {
		fig += " after " + fmtDur(took)
	}
	r.check(name, err == nil && len(last.Phases) > 0, fig, ">= 75, every phase working", crit(critScore),
		measured(last.Score, minScore, "points"), detail("%s", strings.Join(last.notWorking(), "; ")))
}

// symbolsScenario: discovery of a stock and a forex pair each way, asked
// of the gateway (not the cache), then listed.
func symbolsScenario(ctx context.Context, r *run, e *env) {
	want := []struct{ symbol, kind string }{{"AAPL", "stock"}, {"MSFT", "stock"}, {"EURUSD", "forex"}, {"USDJPY", "forex"}}
	for _, w := range want {
		res := e.cli.run(ctx, "ktrdr symbols discover", "symbols", "discover", w.symbol, "--force-refresh", "-o", "json")
		var in service.Instrument
		decodeErr := json.Unmarshal([]byte(res.stdout), &in)
		ok := res.err == nil && res.code == 0 && decodeErr == nil && in.Type == w.kind && in.ConID > 0 && res.took <= cliDeadline
		fig := cliFigure(res)
		if decodeErr == nil && res.code == 0 {
			fig = fmt.Sprintf("exit 0 in %s: %s %s on %s (%s), contract %d, discovery %.0f ms", fmtDur(res.took),
				in.Type, in.IBSymbol, in.Exchange, in.Currency, in.ConID, in.DiscoveryTimeMS)
		}
		r.check("discover "+w.symbol, ok, fig, fmt.Sprintf("exit 0 within 30 s, a %s with a contract id", w.kind))
	}
	res := e.cli.run(ctx, "ktrdr symbols list", "symbols", "list", "-o", "json")
	var list api.SymbolList
	_ = json.Unmarshal([]byte(res.stdout), &list)
	var missing []string
	for _, w := range want {
		if !slices.ContainsFunc(list.Symbols, func(in service.Instrument) bool { return in.Symbol == w.symbol }) {
			missing = append(missing, w.symbol)
		}
	}
	r.check("ktrdr symbols list shows them", res.code == 0 && len(missing) == 0,
		fmt.Sprintf("exit %d in %s: %d symbols", res.code, fmtDur(res.took), list.Count), "exit 0, lists all four",
		detail("%s", strings.Join(missing, ", ")))
}

// dataLoadWindow is the small load the standard level makes: a week of
// hourly EUR.USD bars, a few segments within IB's pacing rules.
const dataLoadWindow = 7 * 24 * time.Hour

// dataLoadScenario loads a week of hourly bars through the CLI, then checks
// through the API that the store holds them without a gap, and that a second
// load of the same range fetches nothing new.
func dataLoadScenario(ctx context.Context, r *run, e *env) {
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.Add(-dataLoadWindow)
	args := []string{"data", "load", "EURUSD", "-t", "1h", "--mode", "full",
		"--start", start.Format(time.RFC3339), "--end", end.Format(time.RFC3339)}
	res := e.cli.run(ctx, "ktrdr data load", args...)
	r.check("ktrdr data load EURUSD -t 1h (one week)", res.err == nil && res.code == 0 && res.took <= cliDeadline,
		cliFigure(res), "exit 0 within 30 s")
	var rng loader.RangeInfo
	err := e.api.getData(ctx, "/api/v1/data/EUR.USD/1h/range", &rng)
	ok := err == nil && rng.Count > 0 && rng.Missing == 0 && rng.First != nil && rng.Last != nil
	fig := errOr(err, fmt.Sprintf("%d bars, %d missing in %d gaps, %s .. %s", rng.Count, rng.Missing, rng.Gaps,
		fmtTime(rng.First), fmtTime(rng.Last)))
	r.check("stored bars cover the trading hours", ok, fig, "bars stored, none missing (trading hours)")
	again := e.cli.run(ctx, "ktrdr data load (again)", args...)
	var after loader.RangeInfo
	err = e.api.getData(ctx, "/api/v1/data/EUR.USD/1h/range", &after)
	r.check("a second load adds no duplicate", again.code == 0 && err == nil && after.Count == rng.Count,
		errOr(err, fmt.Sprintf("exit %d, %d bars before, %d after", again.code, rng.Count, after.Count)), "the same bar count")
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// fault is a way to break the gateway and mend it again.
type fault struct {
	name   string
	inject func(ctx context.Context) error
	clear  func(ctx context.Context) error
	// handshakes: new connections' handshakes go unanswered too, so a
	// caller may wait out a connect rather than a validation.
	handshakes bool
}

// silence makes the gateway silent: the simulator's own fault, or, in
// front of a real gateway, a proxy that stops passing the gateway's bytes.
func silence(e *env) *fault {
	switch {
	case e.sim != nil:
		return simFault(e, "silent", nil)
	case e.net != nil:
		f := netFault(e, "a network that drops the gateway's bytes", toxic{Type: "timeout", Stream: "downstream", Attributes: map[string]any{"timeout": 0}})
		f.handshakes = true
		return f
	}
	return nil
}

func simFault(e *env, kind string, params map[string]any) *fault {
	return &fault{
		name:   "simulator fault " + kind,
		inject: func(ctx context.Context) error { _, err := e.sim.addFault(ctx, kind, params); return err },
		clear:  e.sim.clearFaults,
	}
}

func netFault(e *env, name string, t toxic) *fault {
	return &fault{
		name:   name,
		inject: func(context.Context) error { return e.net.add(t) },
		clear:  func(ctx context.Context) error { e.net.clear(ctx); return nil },
	}
}

// faultWatch is what the server showed while a fault was on. Only answers
// from health checks begun after the fault started count: a check begun
// before it describes the gateway as it was.
type faultWatch struct {
	answers, healthy int           // fresh health answers, and the healthy ones
	first503         time.Duration // from the fault to the first fresh unhealthy answer; -1 if none
	detected         time.Duration // from the fault to a new silent detection; -1 if none
	silent0, silent1 int64         // silent_connections_detected before and after
	degraded         bool          // the pool reported the gateway's 1100
	stages           map[string]int
}

// watch polls the health check and the status every 200 ms from the
// fault's start t0 for d, or, with until, until until says enough.
func watch(ctx context.Context, e *env, t0 time.Time, before service.Status, d time.Duration, until func(w *faultWatch) bool) faultWatch {
	w := faultWatch{first503: -1, detected: -1, silent0: before.Pool.SilentDetected, silent1: before.Pool.SilentDetected, stages: map[string]int{}}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if rep, h, err := e.api.ibHealth(ctx); err == nil && !h.CheckedAt.Before(t0) {
			w.answers++
			if rep.Status == http.StatusOK {
				w.healthy++
			} else {
				if w.first503 < 0 {
					w.first503 = time.Since(t0)
				}
				w.stages[h.Stage]++
			}
		}
		if st, err := e.api.status(ctx); err == nil {
			if st.Pool.SilentDetected > w.silent0 && w.detected < 0 {
				w.detected = time.Since(t0)
			}
			w.silent1 = st.Pool.SilentDetected
			w.degraded = w.degraded || st.Connection.Degraded
		}
		if time.Since(t0) >= d || (until != nil && until(&w)) {
			return w
		}
		select {
		case <-ctx.Done():
			return w
		case <-tick.C:
		}
	}
}

func (w faultWatch) describe() string {
	s := fmt.Sprintf("%d fresh health answers, %d healthy", w.answers, w.healthy)
	if len(w.stages) > 0 {
		var parts []string
		for _, k := range sortedKeys(w.stages) {
			parts = append(parts, fmt.Sprintf("%s x%d", orDash(k), w.stages[k]))
		}
		s += "; failed at " + strings.Join(parts, ", ")
	}
	if w.silent1 > w.silent0 {
		s += fmt.Sprintf("; silent connections detected %d -> %d", w.silent0, w.silent1)
	}
	if w.degraded {
		s += "; pool degraded (1100)"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// silentScenario: the gateway goes silent. The health check must turn 503
// within the validation timeout plus the health cache, the pool must count
// the silent connection and never hand it out (no data request reported
// ok while silent), and the service must be healthy again soon after.
func silentScenario(ctx context.Context, r *run, e *env) {
	f := silence(e)
	if f == nil {
		r.skip("silent gateway caught before handoff", "needs the simulator or the network fault proxy (a self target): a deployment's gateway cannot be silenced from here")
		return
	}
	if _, err := waitHealthy(ctx, e, time.Time{}, gatewayWait); err != nil {
		r.check("healthy before the fault", false, err.Error(), "200")
		return
	}
	before, err := e.api.status(ctx)
	if err != nil {
		r.check("status before the fault", false, err.Error(), "200")
		return
	}
	vt := e.settings.ValidationTimeout
	// One cached answer, then one check that waits out the validation, or,
	// when the idle connection is busy being probed and handshakes go
	// unanswered too, a new connect.
	wait, waitWhat := vt, "validation timeout"
	if f.handshakes {
		wait, waitWhat = max(vt, e.settings.ConnectTimeout), "longer of the validation and connect timeouts"
	}
	turnBound := wait + 2*healthTTL
	t0 := time.Now()
	if err := f.inject(ctx); err != nil {
		r.check("inject "+f.name, false, err.Error(), "accepted")
		return
	}
	cleared := false
	defer func() {
		if !cleared {
			_ = f.clear(context.WithoutCancel(ctx))
		}
	}()
	w := watch(ctx, e, t0, before, vt+6*time.Second, func(w *faultWatch) bool {
		return w.first503 >= 0 && w.detected >= 0 && time.Since(t0) > turnBound+time.Second
	})
	// A data request of its own, while the gateway is silent.
	disc, discErr := e.api.call(ctx, "POST /api/v1/ib/symbols/discover", http.MethodPost, "/api/v1/ib/symbols/discover",
		map[string]any{"symbol": "MSFT", "force_refresh": true})

	r.check(fmt.Sprintf("ib health turns 503 under %s", f.name), w.first503 >= 0 && w.first503 <= turnBound,
		durOrNever(w.first503, "still healthy"),
		fmt.Sprintf("<= %s (%s %s + %s health cache and margin)", fmtDur(turnBound), waitWhat, fmtDur(wait), fmtDur(2*healthTTL)),
		measured(w.first503.Seconds(), turnBound.Seconds(), "s"), detail("%s", w.describe()))
	r.check("silent connection caught (silent_connections_detected grows)", w.detected >= 0 && w.detected <= silentBound,
		durOrNever(w.detected, "never detected"), "within 3-5 s (<= 5 s)", crit(critSilent),
		measured(w.detected.Seconds(), silentBound.Seconds(), "s"), detail("silent_connections_detected %d -> %d", w.silent0, w.silent1))
	// Validation must give up at its timeout: failed round trips are in
	// the pool's validation latencies.
	if st, err := e.api.status(ctx); err == nil {
		p99 := time.Duration(st.Pool.ValidationP99MS * float64(time.Millisecond))
		r.check("validation round trip under silence (p99)", p99 <= validationBound,
			fmt.Sprintf("p99 %s over %d validations, %d failed (validation timeout %s)", fmtDur(p99), st.Pool.Validations, st.Pool.ValidationFailures, fmtDur(vt)),
			"<= 3 s", crit(critValidation), measured(p99.Seconds(), validationBound.Seconds(), "s"))
	}
	discFig := "no answer"
	discOK := false
	if discErr == nil {
		discFig, discOK = disc.summary(), disc.ok()
	}
	r.check("no data request reported ok while silent", w.healthy == 0 && !discOK && discErr == nil && disc.Took <= apiDeadline,
		fmt.Sprintf("%d of %d health answers ok after the fault began; discover MSFT: %s", w.healthy, w.answers, discFig),
		"0 ok; the data request fails within its deadline")

	tc := time.Now()
	err = f.clear(ctx)
	cleared = err == nil
	recoveryCheck(ctx, r, e, "recovery after the silence", tc, err)
}

// recoveryCheck measures the time from clearing a fault to a healthy check
// begun after the clearing.
func recoveryCheck(ctx context.Context, r *run, e *env, name string, cleared time.Time, clearErr error) {
	if clearErr != nil {
		r.check(name, false, "clearing the fault failed: "+clearErr.Error(), "<= 10 s", crit(critRecovery))
		return
	}
	took, err := waitHealthy(ctx, e, cleared, recoveryWait)
	target := "target 1.5 s met"
	if took > recoveryTarget {
		target = "target 1.5 s missed"
	}
	fig := fmtDur(took)
	if err != nil {
		fig = "not recovered: " + err.Error()
	}
	r.check(name, err == nil && took <= recoveryBound, fig, "<= 10 s (target 1.5 s)", crit(critRecovery),
		measured(took.Seconds(), recoveryBound.Seconds(), "s"), detail("%s", target))
}

func durOrNever(d time.Duration, never string) string {
	if d < 0 {
		return never
	}
	return fmtDur(d)
}

// slowness makes every gateway answer late, so that concurrent requests
// each need a connection of their own.
func slowness(e *env, d time.Duration) *fault {
	switch {
	case e.sim != nil:
		return simFault(e, "latency", map[string]any{"latency_ms": d.Milliseconds()})
	case e.net != nil:
		return netFault(e, "network latency", toxic{Type: "latency", Stream: "downstream", Attributes: map[string]any{"latency": d.Milliseconds()}})
	}
	return nil
}

// idleSymbols are asked at once to make the pool grow.
var idleSymbols = []string{"AAPL", "MSFT", "IBM", "SPY", "QQQ", "EURUSD", "USDJPY", "GBPUSD"}

// idleScenario: concurrent requests open extra connections; once they are
// idle past the idle timeout the health loop closes them, down to the
// warm minimum, and counts them as removed for idleness.
func idleScenario(ctx context.Context, r *run, e *env) {
	s := e.settings
	collectBound := s.IdleTimeout + 2*s.HealthInterval + 3*time.Second
	if collectBound > 2*time.Minute {
		r.skip("idle connections collected", fmt.Sprintf("the server's idle timeout is %s: longer than this run waits (the self target uses %s)", s.IdleTimeout, shortSettings.IdleTimeout))
		return
	}
	backToMin := func(ctx context.Context) error {
		st, err := e.api.status(ctx)
		if err != nil {
			return err
		}
		if st.Pool.Total != s.MinIdle || st.Pool.InUse > 0 {
			return errNotYet
		}
		return nil
	}
	if _, err := poll(ctx, collectBound, 100*time.Millisecond, backToMin); err != nil {
		r.check("pool at its warm minimum before the test", false, err.Error(), fmt.Sprintf("%d connections", s.MinIdle))
		return
	}
	before, err := e.api.status(ctx)
	if err != nil {
		r.check("status", false, err.Error(), "200")
		return
	}
	slow := slowness(e, 300*time.Millisecond)
	if slow != nil {
		if err := slow.inject(ctx); err != nil {
			r.check("slow the gateway down", false, err.Error(), "accepted")
			return
		}
	}
	// Every discovery asks the gateway and holds a connection meanwhile.
	var wg sync.WaitGroup
	var mu sync.Mutex
	okCount := 0
	for i := range 2 * s.MaxConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := e.api.call(ctx, "POST /api/v1/ib/symbols/discover", http.MethodPost, "/api/v1/ib/symbols/discover",
				map[string]any{"symbol": idleSymbols[i%len(idleSymbols)], "force_refresh": true})
			if err == nil && rep.ok() {
				mu.Lock()
				okCount++
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	peak := before.Pool.Total
	tick := time.NewTicker(50 * time.Millisecond)
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			if st, err := e.api.status(ctx); err == nil {
				peak = max(peak, st.Pool.Total)
			}
		}
	}
	tick.Stop()
	if slow != nil {
		_ = slow.clear(context.WithoutCancel(ctx))
	}
	r.check("concurrent discoveries answered", okCount == 2*s.MaxConns, fmt.Sprintf("%d of %d ok", okCount, 2*s.MaxConns), "all", warning())
	if peak <= s.MinIdle {
		if slow == nil {
			r.skip("idle connections collected", "the concurrent requests never needed a second connection")
			return
		}
		r.check("extra connections opened for concurrent requests", false, fmt.Sprintf("pool stayed at %d", peak), fmt.Sprintf("> %d", s.MinIdle))
		return
	}
	r.check("extra connections opened for concurrent requests", true, fmt.Sprintf("pool %d -> %d", before.Pool.Total, peak), fmt.Sprintf("> min idle %d", s.MinIdle))
	took, err := poll(ctx, collectBound, 100*time.Millisecond, backToMin)
	after, _ := e.api.status(ctx)
	idle0, idle1 := before.Pool.Removals["idle"], after.Pool.Removals["idle"]
	fig := fmt.Sprintf("pool %d -> %d in %s; removals_by_reason.idle %d -> %d", peak, after.Pool.Total, fmtDur(took), idle0, idle1)
	if err != nil {
		fig = fmt.Sprintf("pool still %d after %s; removals_by_reason.idle %d -> %d", after.Pool.Total, fmtDur(took), idle0, idle1)
	}
	r.check("idle connections collected", err == nil && idle1 > idle0, fig,
		fmt.Sprintf("back to min idle %d within %s (idle timeout %s + 2 health intervals + 3 s); idle removals grow", s.MinIdle, fmtDur(collectBound), s.IdleTimeout),
		measured(took.Seconds(), collectBound.Seconds(), "s"))
}

// clientIDScenario: with client id 1 held elsewhere a new connection
// falls back to 2 (error 326); once the id is free again and its cool-down
// is over, a new connection takes 1 again.
func clientIDScenario(ctx context.Context, r *run, e *env) {
	st, err := e.api.status(ctx)
	if err != nil {
		r.check("status", false, err.Error(), "200")
		return
	}
	base := st.Config.ClientIDBase
	var release func()
	switch {
	case e.sim != nil:
		release = holdIDWithSimulator(ctx, r, e, base)
	case e.net != nil:
		release = holdIDBehindProxy(ctx, r, e, base)
	case e.gateway != "":
		release = holdIDRacing(ctx, r, e, base)
	default:
		r.skip("client id 326 fallback", "needs the simulator, or --ib-host/--ib-port to hold a client id on the gateway")
		return
	}
	if release == nil {
		return
	}
	release()
	preferenceRestored(ctx, r, e, base)
}

// holdIDWithSimulator makes the simulator refuse id base with 326, forces
// the pool to reconnect, and checks the fallback.
func holdIDWithSimulator(ctx context.Context, r *run, e *env, base int) func() {
	if _, err := e.sim.addFault(ctx, "client_id_in_use", map[string]any{"client_ids": []int{base}}); err != nil {
		r.check("simulator holds client id", false, err.Error(), "accepted")
		return nil
	}
	release := func() { _ = e.sim.clearFaults(context.WithoutCancel(ctx)) }
	res := e.cli.run(ctx, "ktrdr ib cleanup --force", "ib", "cleanup", "--force")
	r.check("ktrdr ib cleanup --force", res.err == nil && res.code == 0, cliFigure(res), "exit 0 within 30 s")
	if !fallbackCheck(ctx, r, e, base) {
		release()
		return nil
	}
	return release
}

// holdIDBehindProxy holds id base on a real gateway with a client of the
// runner's own: the proxy stops (the pool loses its connections and cannot
// take the id back), the runner takes the id, the proxy resumes and the
// pool reconnects.
func holdIDBehindProxy(ctx context.Context, r *run, e *env, base int) func() {
	if err := e.net.setEnabled(false); err != nil {
		r.check("cut the server off the gateway", false, err.Error(), "proxy stopped")
		return nil
	}
	_, _ = poll(ctx, 10*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		st, err := e.api.status(ctx)
		if err == nil && st.Pool.Total > 0 {
			return errNotYet
		}
		return err
	})
	holder, err := holdClientID(ctx, e.gateway, base, 20*time.Second)
	if err := e.net.setEnabled(true); err != nil {
		r.check("reconnect the server to the gateway", false, err.Error(), "proxy listening")
	}
	if !r.check(fmt.Sprintf("a second client holds id %d on the gateway", base), err == nil, errOr(err, "held"), "connected") {
		return nil
	}
	if !fallbackCheck(ctx, r, e, base) {
		holder.Close()
		return nil
	}
	return func() { holder.Close() }
}

// holdIDRacing holds id base on a deployment's gateway: it closes the
// pool's connections and tries to take the id before the pool does.
func holdIDRacing(ctx context.Context, r *run, e *env, base int) func() {
	var holder *client.Conn
	var lastErr error
	for attempt := 0; attempt < 5 && holder == nil && ctx.Err() == nil; attempt++ {
		if err := e.api.cleanup(ctx, true); err != nil {
			lastErr = err
			continue
		}
		// The pool reconnects at once; a dial that loses the race gets 326.
		holder, lastErr = holdClientID(ctx, e.gateway, base, time.Second)
	}
	if holder == nil {
		r.skip(fmt.Sprintf("client id %d 326 fallback", base), fmt.Sprintf("the server took id %d back first on every attempt (%v)", base, lastErr))
		return nil
	}
	if !fallbackCheck(ctx, r, e, base) {
		holder.Close()
		return nil
	}
	return func() { holder.Close() }
}

// holdClientID connects to the gateway with id, retrying while the gateway
// still holds a session just closed under that id.
func holdClientID(ctx context.Context, addr string, id int, within time.Duration) (*client.Conn, error) {
	var conn *client.Conn
	_, err := poll(ctx, within, 250*time.Millisecond, func(ctx context.Context) error {
		c, err := client.Dial(ctx, client.Config{Addr: addr, ClientID: id, ConnectTimeout: 3 * time.Second})
		var inUse *client.ClientIDInUseError
		switch {
		case errors.As(err, &inUse):
			return errNotYet
		case err != nil:
			return err
		}
		conn = c
		return nil
	})
	return conn, err
}

// fallbackCheck waits for the pool's new connection and checks it took
// the lowest id not refused: base+1, unless the gateway refused that one
// too (a session it had not yet let go of) and it rests as well.
func fallbackCheck(ctx context.Context, r *run, e *env, base int) bool {
	var st service.Status
	took, err := poll(ctx, 20*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		var err error
		if st, err = e.api.status(ctx); err != nil {
			return err
		}
		if len(openIDs(st)) == 0 || st.Pool.Connecting > 0 {
			return errNotYet
		}
		return nil
	})
	ids := openIDs(st)
	want := base + 1
	for slices.Contains(st.Pool.ClientIDsResting, want) {
		want++
	}
	fig := fmt.Sprintf("connections with ids %v after %s; client-id conflicts %d, resting %v", ids, fmtDur(took), st.Connection.ClientIDConflicts, st.Pool.ClientIDsResting)
	if err != nil {
		fig = err.Error()
	}
	return r.check(fmt.Sprintf("326 fallback: with id %d held, the new connection uses %d", base, base+1),
		err == nil && !slices.Contains(ids, base) && slices.Contains(ids, want) && st.Connection.ClientIDConflicts > 0,
		fig, fmt.Sprintf("id %d (the next not refused) in use, not %d; a conflict counted", want, base))
}

// preferenceRestored: with the id free and its cool-down over, a forced
// reconnect takes the preferred id again.
func preferenceRestored(ctx context.Context, r *run, e *env, base int) {
	cooldown := e.settings.Cooldown
	start := time.Now()
	var st service.Status
	first := true
	took, err := poll(ctx, cooldown+30*time.Second, 250*time.Millisecond, func(ctx context.Context) error {
		var err error
		if st, err = e.api.status(ctx); err != nil {
			return err
		}
		ids := openIDs(st)
		switch {
		case slices.Contains(ids, base):
			return nil
		case st.Pool.Connecting > 0 || len(ids) == 0:
			return errNotYet // a connect is under way: see which id it gets
		case slices.Contains(st.Pool.ClientIDsResting, base):
			return errNotYet // still cooling down
		}
		// Free and rested: make the pool connect anew.
		if first {
			first = false
			res := e.cli.run(ctx, "ktrdr ib cleanup --force", "ib", "cleanup", "--force")
			if res.code != 0 {
				return fmt.Errorf("ktrdr ib cleanup --force: %s", cliFigure(res))
			}
		} else if err := e.api.cleanup(ctx, true); err != nil {
			return err
		}
		return errNotYet
	})
	cd := "cool-down " + cooldown.String()
	if e.settings.CooldownAssumed {
		cd += ", assumed: the server does not report it"
	}
	fig := fmt.Sprintf("a connection with id %d %s after the release; ids %v", base, fmtDur(took), openIDs(st))
	if err != nil {
		fig = fmt.Sprintf("connections with ids %v after %s: %v", openIDs(st), fmtDur(time.Since(start)), err)
	}
	r.check(fmt.Sprintf("preference restored: after the cool-down a new connection uses %d", base), err == nil, fig,
		fmt.Sprintf("id %d within the cool-down + 30 s (%s)", base, cd))
}

// openIDs are the client ids of the pool's open connections. The status's
// ids in use also count an id while a connect is still trying it.
func openIDs(st service.Status) []int {
	var ids []int
	for _, c := range st.Pool.Connections {
		ids = append(ids, c.ClientID)
	}
	slices.Sort(ids)
	return ids
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// cliFigure describes a finished command in one line.
func cliFigure(res cliResult) string {
	if res.err != nil {
		return fmt.Sprintf("did not finish in %s: %v", fmtDur(res.took), res.err)
	}
	return fmt.Sprintf("exit %d in %s: %s", res.code, fmtDur(res.took), firstLine(res.output()))
}
