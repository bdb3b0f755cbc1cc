package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
)

// Bounds of the exhaustive level.
const (
	apiP99Bound = 5 * time.Second
	// heapGrowthBound: the heap in use after warm-up may not grow by more
	// than half over the soak. Live heap that keeps growing under a steady
	// load is a leak; GC noise stays well inside this.
	heapGrowthBound = 0.50
	// healthyErrorBound: under load with a healthy gateway, operations
	// that fail (HTTP errors, CLI exits other than 0).
	healthyErrorBound = 0.01
)

// soakSpec is the soak's load: steady rather than saturating, so that
// the heap and goroutine samples compare like with like.
var soakSpec = loadSpec{api: 16, cli: 4, refresh: 1}

// simFaultParams are the parameters each simulator fault is injected with;
// kinds not listed take none. Every kind the simulator knows is run.
var simFaultParams = map[string]map[string]any{
	"latency":          {"latency_ms": 200},
	"restart":          {"down_ms": 1500},
	"farm_broken":      {"farm": "hmds"},
	"client_id_in_use": {"client_ids": []int{1, 2}},
	"garbage":          {"mode": "oversize"},
}

// expectation is what a fault must do to the service besides being
// recovered from.
type expectation int

const (
	expectNothing   expectation = iota // only: no hang, and recovery in time
	expectHealthy                      // the service stays healthy throughout
	expectSilent                       // caught as silent: 503 and a detection
	expectDegraded                     // the pool reports the gateway's connectivity loss
	expectUnhealthy                    // the service reports unhealthy (no silent count needed)
)

var simFaultExpect = map[string]expectation{
	"silent":             expectSilent,
	"latency":            expectHealthy,
	"current_time_quirk": expectHealthy,
	"connectivity_loss":  expectDegraded,
}

// exhaustive holds what its scenarios share: the baseline sample.
type exhaustive struct {
	base    sample
	hasBase bool
}

// exhaustiveScenarios: load, every fault under that load, a soak and the
// leak comparison with the level's baseline.
func exhaustiveScenarios(o Options) []scenario {
	x := &exhaustive{}
	faults := len(ibsim.FaultKinds()) + len(networkFaults(shortSettings))
	loadTimeout := o.load + time.Duration(faults)*(o.faultHold+recoveryWait+5*time.Second) + 3*time.Minute
	return []scenario{
		{phase: "baseline", run: x.baseline},
		{phase: "load", timeout: loadTimeout, run: x.loadAndFaults},
		{phase: "soak", timeout: o.Soak + 3*time.Minute, run: x.soak},
		{phase: "leaks", run: x.leaks},
		{phase: "resilience after", run: func(ctx context.Context, r *run, e *env) {
			scoreCheck(ctx, r, e, "resilience score with every phase working after the faults")
		}},
	}
}

// baseline settles the server and samples it before any load.
func (x *exhaustive) baseline(ctx context.Context, r *run, e *env) {
	if _, err := waitHealthy(ctx, e, time.Time{}, gatewayWait); err != nil {
		r.check("healthy before the load", false, err.Error(), "200")
		return
	}
	s, err := e.settle(ctx, nil, e.settings.MinIdle)
	if !r.check("baseline sample", err == nil, sampleFigure(s, err), "goroutines, open fds and heap reported", warning()) {
		return
	}
	x.base, x.hasBase = s, true
}

func sampleFigure(s sample, err error) string {
	if err != nil {
		return err.Error()
	}
	f := fmt.Sprintf("%d goroutines, pool %d", s.goroutines, s.poolTotal)
	if s.fds >= 0 {
		f += fmt.Sprintf(", %d open fds", s.fds)
	}
	if s.heap >= 0 {
		f += fmt.Sprintf(", heap in use %s", mib(s.heap))
	}
	return f
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// loadAndFaults runs the full load: first with a healthy gateway for the
// load duration, then on through every simulator fault and every network
// fault in turn, each held, cleared and recovered from.
func (x *exhaustive) loadAndFaults(ctx context.Context, r *run, e *env) {
	spec := loadSpec{api: loadWorkers - cliWorkers, cli: cliWorkers}
	if e.sim != nil {
		spec.refresh = 2 // a few discoveries reach the simulator; a real gateway's pacing is not ours to spend
	}
	r.logf("load: %s for %s", spec, fmtDur(r.opts.load))
	mark := r.ops.mark()
	l := startLoad(ctx, e, spec)
	defer l.stop()
	select {
	case <-ctx.Done():
		return
	case <-time.After(r.opts.load):
	}
	mean, peak := l.inFlightStats()
	ops := r.ops.since(mark)
	took := time.Since(l.start)
	threshold := fmt.Sprintf(">= %d at once for >= %s", loadWorkers, fmtDur(minLoad))
	if r.opts.load < minLoad {
		threshold = fmt.Sprintf(">= %d at once for >= %s (shortened from %s by the test suite)", loadWorkers, fmtDur(r.opts.load), fmtDur(minLoad))
	}
	r.check("concurrent API and CLI operations", peak >= loadWorkers && took >= r.opts.load,
		fmt.Sprintf("%s for %s: %d operations; in flight mean %.1f, peak %d", spec, fmtDur(took), len(ops), mean, peak), threshold)
	x.loadChecks(r, ops, "healthy load: ")

	mark = r.ops.mark()
	r.setLevel(Exhaustive, "simulator faults under load")
	if e.sim == nil {
		r.skip("simulator faults", "the gateway is not a simulator")
	} else {
		for _, kind := range ibsim.FaultKinds() {
			if ctx.Err() != nil {
				return
			}
			x.faultUnderLoad(ctx, r, e, simFault(e, kind, simFaultParams[kind]), simFaultExpect[kind])
		}
	}
	r.setLevel(Exhaustive, "network faults under load")
	if e.net == nil {
		r.skip("network faults", "needs the network fault proxy between server and gateway (a self target)")
	} else {
		for _, nf := range networkFaults(e.settings) {
			if ctx.Err() != nil {
				return
			}
			x.faultUnderLoad(ctx, r, e, netFault(e, nf.name, nf.toxic), nf.expect)
		}
	}
	l.stop()
	r.setLevel(Exhaustive, "operations under faults")
	faultOps := r.ops.since(mark)
	r.operationChecks(faultOps, "under faults: ")
	bad, total, _ := badOps(faultOps)
	r.check("operations that failed while faults were on", true, fmt.Sprintf("%d of %d", bad, total), "reported, not judged: a fault is meant to fail some", warning())
}

// loadChecks: p99, CLI times, hung operations and errors of a healthy load.
func (x *exhaustive) loadChecks(r *run, ops []op, what string) {
	api := summarize(ops, opAPI)
	r.check(what+"API p99", api.n > 0 && api.p99 <= apiP99Bound, fmt.Sprintf("p99 %s (%s)", fmtDur(api.p99), api.describe()),
		"<= 5 s", crit(critAPIP99), measured(api.p99.Seconds(), apiP99Bound.Seconds(), "s"))
	r.operationChecks(ops, what)
	bad, total, names := badOps(ops)
	rate := 0.0
	if total > 0 {
		rate = float64(bad) / float64(total)
	}
	var worst []string
	for _, n := range sortedKeys(names) {
		worst = append(worst, fmt.Sprintf("%s x%d", n, names[n]))
	}
	r.check(what+"operations that failed", rate <= healthyErrorBound, fmt.Sprintf("%d of %d (%.2f %%)", bad, total, 100*rate),
		fmt.Sprintf("<= %.0f %%", 100*healthyErrorBound), measured(rate, healthyErrorBound, "ratio"), detail("%s", listNames(worst, 5)))
}

// faultUnderLoad injects a fault, holds it while watching the service,
// clears it and measures the recovery; then checks the fault's expectation.
func (x *exhaustive) faultUnderLoad(ctx context.Context, r *run, e *env, f *fault, expect expectation) {
	r.logf("%s", f.name)
	before, err := e.api.status(ctx)
	if err != nil {
		r.check(f.name, false, err.Error(), "status before the fault")
		return
	}
	t0 := time.Now()
	if err := f.inject(ctx); err != nil {
		r.check(f.name+": injected", false, err.Error(), "accepted")
		return
	}
	hold, enough := r.opts.faultHold, func(*faultWatch) bool { return false }
	if expect == expectHealthy {
		// "Stays healthy" needs a few checks begun under the fault; a slow
		// gateway makes each check slow, so hold on until there are three.
		hold, enough = 3*r.opts.faultHold, func(w *faultWatch) bool { return time.Since(t0) >= r.opts.faultHold && w.answers >= 3 }
	}
	w := watch(ctx, e, t0, before, hold, enough)
	tc := time.Now()
	clearErr := f.clear(ctx)
	recoveryCheck(ctx, r, e, "recovery after "+f.name, tc, clearErr)

	switch expect {
	case expectHealthy:
		r.check(f.name+": service stays healthy", w.answers > 0 && w.healthy == w.answers, w.describe(), "every fresh check healthy")
	case expectSilent, expectUnhealthy:
		// Under load every connection may be busy, so a check can wait out a
		// new connect whose handshake the fault swallows (connect timeout
		// 3 s), and a busy connection may be caught by its request's
		// deadline rather than by a validation: the figure is the time until
		// the service says so, bounded like silent detection.
		opts := []checkOpt{measured(w.first503.Seconds(), silentBound.Seconds(), "s"), detail("%s", w.describe())}
		name := f.name + ": reported unhealthy"
		if expect == expectSilent {
			opts, name = append(opts, crit(critSilent)), f.name+": silent gateway caught under load"
		}
		r.check(name, w.first503 >= 0 && w.first503 <= silentBound, durOrNever(w.first503, "never"), "503 within 3-5 s (<= 5 s)", opts...)
	case expectDegraded:
		r.check(f.name+": pool reports the lost connectivity", w.degraded, w.describe(), "status shows degraded while it lasts")
	}
}

// netCase is one network fault and what it must do.
type netCase struct {
	name   string
	toxic  toxic
	expect expectation
}

// networkFaults are the faults the proxy injects between server and
// gateway, timed against the server's validation timeout.
func networkFaults(s settings) []netCase {
	vt := s.ValidationTimeout
	under, over := vt*7/10, vt*3/2
	lat := func(d time.Duration) toxic {
		return toxic{Type: "latency", Stream: "downstream", Attributes: map[string]any{"latency": d.Milliseconds()}}
	}
	return []netCase{
		{name: "network timeout (a silent network)", toxic: toxic{Type: "timeout", Stream: "downstream", Attributes: map[string]any{"timeout": 0}}, expect: expectSilent},
		{name: fmt.Sprintf("network latency %s, under the %s validation timeout", fmtDur(under), fmtDur(vt)), toxic: lat(under), expect: expectHealthy},
		{name: fmt.Sprintf("network latency %s, over the %s validation timeout", fmtDur(over), fmtDur(vt)), toxic: lat(over), expect: expectUnhealthy},
		{name: "network reset_peer", toxic: toxic{Type: "reset_peer", Stream: "downstream", Attributes: map[string]any{"timeout": 0}}},
		{name: "network bandwidth 1 KB/s", toxic: toxic{Type: "bandwidth", Stream: "downstream", Attributes: map[string]any{"rate": 1}}},
	}
}

// soak runs a steady load and samples heap, goroutines and descriptors.
func (x *exhaustive) soak(ctx context.Context, r *run, e *env) {
	if _, err := waitHealthy(ctx, e, time.Time{}, gatewayWait); err != nil {
		r.check("healthy before the soak", false, err.Error(), "200")
		return
	}
	every := min(max(r.opts.Soak/60, time.Second), 5*time.Second)
	r.logf("soak: %s for %s, sampling every %s", soakSpec, fmtDur(r.opts.Soak), fmtDur(every))
	l := startLoad(ctx, e, soakSpec)
	var samples []sample
	t := time.NewTicker(every)
	end := time.NewTimer(r.opts.Soak)
	func() {
		defer t.Stop()
		defer end.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-end.C:
				return
			case <-t.C:
				if s, err := e.sample(ctx); err == nil {
					samples = append(samples, s)
				}
			}
		}
	}()
	l.stop()
	// Warm-up: the first fifth, while caches, pools and buffers fill.
	warm := len(samples) / 5
	rest := samples[warm:]
	if len(rest) < 4 {
		r.skip("heap, goroutines and descriptors through the soak", fmt.Sprintf("%d samples in %s: at least 5 are needed (every %s)", len(samples), r.opts.Soak, every))
		return
	}
	q := max(len(rest)/4, 1)
	first, last := rest[:q], rest[len(rest)-q:]
	heapStart, heapEnd := minOf(first, func(s sample) float64 { return s.heap }), minOf(last, func(s sample) float64 { return s.heap })
	if heapStart > 0 {
		growth := heapEnd/heapStart - 1
		r.check("heap growth after warm-up", growth <= heapGrowthBound,
			fmt.Sprintf("%+.1f %% (%s -> %s, lowest of the first and last quarter of %d samples)", 100*growth, mib(heapStart), mib(heapEnd), len(rest)),
			fmt.Sprintf("<= %.0f %%", 100*heapGrowthBound), crit(critHeap), measured(growth, heapGrowthBound, "ratio"))
	} else {
		r.skip("heap growth after warm-up", "the server's /metrics has no go_memstats_heap_inuse_bytes")
	}
	// Counts under load swing with the operations in flight; a leak raises
	// the floor, so the lowest reading of each quarter is compared.
	gStart, gEnd := int(minOf(first, func(s sample) float64 { return float64(s.goroutines) })), int(minOf(last, func(s sample) float64 { return float64(s.goroutines) }))
	gTol := tolerance(gStart)
	r.check("goroutines steady through the soak", gEnd <= gStart+gTol,
		fmt.Sprintf("lowest %d -> %d (%+d, tolerance +%d)", gStart, gEnd, gEnd-gStart, gTol), "no upward drift", crit(critLeaks))
	if first[0].fds >= 0 {
		fStart, fEnd := int(minOf(first, func(s sample) float64 { return float64(s.fds) })), int(minOf(last, func(s sample) float64 { return float64(s.fds) }))
		fTol := tolerance(fStart)
		r.check("open descriptors steady through the soak", fEnd <= fStart+fTol,
			fmt.Sprintf("lowest %d -> %d (%+d, tolerance +%d)", fStart, fEnd, fEnd-fStart, fTol), "no upward drift", crit(critLeaks))
	}
	mean, peak := l.inFlightStats()
	r.check("soak load", true, fmt.Sprintf("%s for %s, %d samples; in flight mean %.1f, peak %d", soakSpec, fmtDur(time.Since(l.start)), len(samples), mean, peak),
		"steady load", warning())
}

func minOf(ss []sample, f func(sample) float64) float64 {
	m := f(ss[0])
	for _, s := range ss[1:] {
		m = min(m, f(s))
	}
	return m
}

// leaks settles the server after everything and compares it with the
// baseline; it also checks that no lease was held too long and that the
// gateway holds no connection the pool does not know.
func (x *exhaustive) leaks(ctx context.Context, r *run, e *env) {
	if !x.hasBase {
		r.skip("back to baseline", "no baseline sample")
		return
	}
	if _, err := waitHealthy(ctx, e, time.Time{}, gatewayWait); err != nil {
		r.check("healthy after the load", false, err.Error(), "200")
	}
	after, err := e.settle(ctx, &x.base, e.settings.MinIdle)
	if err != nil {
		r.check("goroutines and descriptors back to baseline", false, err.Error(), "within tolerance", crit(critLeaks))
		return
	}
	fig, ok := leakFigure(x.base, after)
	r.check("goroutines and descriptors back to baseline after load, faults and soak", ok, fig, "within tolerance of the baseline", crit(critLeaks))
	if x.base.heap > 0 && after.heap > 0 {
		r.check("heap in use, baseline to the end", true, fmt.Sprintf("%s -> %s", mib(x.base.heap), mib(after.heap)), "reported; judged over the soak", warning())
	}
	st, err := e.api.status(ctx)
	if err == nil {
		var held []string
		for _, l := range st.Pool.Leaks {
			held = append(held, fmt.Sprintf("id %d by %q for %.0f s", l.ClientID, l.Label, l.HeldSeconds))
		}
		r.check("no connection held past the leak threshold", len(held) == 0, fmt.Sprintf("%d leases", len(held)), "0", crit(critLeaks),
			detail("%s", strings.Join(held, "; ")))
	}
	if e.sim == nil {
		return
	}
	// The gateway's view: every client it serves is one of the pool's.
	var simIDs, poolIDs []int
	_, err = poll(ctx, 10*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
		ss, err := e.sim.state(ctx)
		if err != nil {
			return err
		}
		st, err := e.api.status(ctx)
		if err != nil {
			return err
		}
		simIDs = simIDs[:0]
		for _, c := range ss.Clients {
			if c.Started {
				simIDs = append(simIDs, c.ClientID)
			}
		}
		sort.Ints(simIDs)
		poolIDs = openIDs(st)
		if !slices.Equal(simIDs, poolIDs) {
			return errNotYet
		}
		return nil
	})
	r.check("no connection left open at the gateway", err == nil,
		fmt.Sprintf("gateway serves client ids %v, pool holds %v", simIDs, poolIDs), "the same ids", crit(critLeaks))
}
