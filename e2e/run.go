// Package e2e is ktrdr's end-to-end resilience runner: scenarios that
// drive a running service (or one it starts itself, with a simulated
// gateway and a network fault proxy) through the API and the CLI, measure
// each success criterion of the original resilience guide and report every
// check with its figure beside its threshold. `ktrdr e2e` and the package's
// tests run the same scenarios.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// scenarioTimeout bounds one scenario unless it sets its own.
const scenarioTimeout = 3 * time.Minute

// scenario is one step of a level: it records checks and may skip them
// with a reason when the target cannot support it.
type scenario struct {
	phase   string
	timeout time.Duration
	run     func(ctx context.Context, r *run, e *env)
}

// run is the state of one Run.
type run struct {
	opts    Options
	start   time.Time
	workDir string
	ops     *recorder

	mu    sync.Mutex // guards rep and the level and phase being recorded
	rep   *Report
	level Level
	phase string
}

// Run runs every level up to opts.Level against opts.Target and returns
// the report. The error is non-nil when the run could not go on: it wraps
// ErrRefused or ErrUnreachable when those are the reason. The report is
// returned whenever one was started, with the checks that explain it.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &run{opts: opts, start: time.Now(), ops: &recorder{}}
	r.rep = &Report{Level: opts.Level, Target: opts.Target, Binary: opts.Bin, StartedAt: r.start, Checks: []Check{}}
	for l := Basic; l <= opts.Level; l++ {
		r.rep.Levels = append(r.rep.Levels, l)
	}
	if r.workDir, err = os.MkdirTemp("", "ktrdr-e2e-"); err != nil {
		return nil, err
	}
	if opts.self() {
		err = r.runSelf(ctx)
	} else {
		err = r.runRemote(ctx)
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("run interrupted: %w", ctx.Err())
	}
	if ents, _ := os.ReadDir(r.workDir); len(ents) > 0 && (r.rep.Failed() || err != nil) {
		r.note("the simulator's and the server's logs are kept in %s", r.workDir)
	} else {
		_ = os.RemoveAll(r.workDir)
	}
	r.rep.finish(time.Since(r.start))
	r.setLevel(0, "")
	r.logf("%s", r.rep.Verdict)
	return r.rep, err
}

// runSelf starts the target's processes: the basic level against a server
// with no gateway, the others against a server with one.
func (r *run) runSelf(ctx context.Context) error {
	if r.opts.Level >= Standard && r.opts.IBPort > 0 {
		// Refuse a live account before anything runs against it.
		r.setLevel(Standard, "prerequisites")
		if err := r.checkRealGateway(ctx); err != nil {
			return err
		}
	}
	r.setLevel(Basic, "set-up")
	r.logf("starting a server with no gateway")
	e, err := r.startSelf(ctx, noGateway)
	if err != nil {
		r.check("start ktrdr serve", false, err.Error(), "starts and prints its address within "+fmtDur(startTimeout))
		return err
	}
	r.addSetup("basic", e.setup)
	r.runLevel(ctx, Basic, e, scenariosFor(Basic, r.opts))
	e.close(r)
	if r.opts.Level == Basic || ctx.Err() != nil {
		return nil
	}

	kind := withGateway
	if r.opts.Level == Exhaustive {
		kind = withGatewayAndProxy
	}
	r.setLevel(Standard, "set-up")
	r.logf("starting the gateway and a server pointed at it")
	e, err = r.startSelf(ctx, kind)
	if err != nil {
		r.check("start the gateway and ktrdr serve", false, err.Error(), "start and print their addresses within "+fmtDur(startTimeout))
		return err
	}
	defer e.close(r)
	r.addSetup(joinLevels(r.rep.Levels[1:]), e.setup)
	for _, lv := range r.rep.Levels[1:] {
		if ctx.Err() == nil {
			r.runLevel(ctx, lv, e, scenariosFor(lv, r.opts))
		}
	}
	return nil
}

// runRemote checks the deployment's prerequisites, then runs the levels.
func (r *run) runRemote(ctx context.Context) error {
	e := r.connectRemote()
	r.setLevel(Basic, "prerequisites")
	if err := r.remotePrerequisites(ctx, e); err != nil {
		return err
	}
	e.readSettings(ctx)
	r.addSetup("all levels", e.setup)
	defer e.api.closeIdle()
	for _, lv := range r.rep.Levels {
		if ctx.Err() != nil {
			break
		}
		r.runLevel(ctx, lv, e, scenariosFor(lv, r.opts))
	}
	return nil
}

// scenariosFor lists a level's own scenarios.
func scenariosFor(lv Level, o Options) []scenario {
	switch lv {
	case Basic:
		return basicScenarios()
	case Standard:
		return standardScenarios()
	}
	return exhaustiveScenarios(o)
}

// runLevel runs a level's scenarios in order, then its operation checks:
// no hung operation and every CLI command within its bound.
func (r *run) runLevel(ctx context.Context, lv Level, e *env, list []scenario) {
	mark := r.ops.mark()
	for _, s := range list {
		r.setLevel(lv, s.phase)
		if ctx.Err() != nil {
			r.skip(s.phase, "the run was interrupted")
			continue
		}
		r.logf("begin")
		timeout := s.timeout
		if timeout == 0 {
			timeout = scenarioTimeout
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		s.run(sctx, r, e)
		if errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			r.check("scenario finished in time", false, "still running after "+fmtDur(timeout), "<= "+fmtDur(timeout),
				detail("the scenario was cut short; its remaining checks did not run"))
		}
		cancel()
		if p := e.serveProc(); p != nil && !p.alive() {
			r.check("server process alive", false, "exited", "runs until stopped", detail("log: %s", p.log))
			return
		}
	}
	r.setLevel(lv, "operations")
	ops := r.ops.since(mark)
	r.operationChecks(ops, "")
}

// operationChecks are the hung-operation and CLI-time checks over ops;
// what names the window ("" for the whole level).
func (r *run) operationChecks(ops []op, what string) {
	api, cl := summarize(ops, opAPI), summarize(ops, opCLI)
	hung := api.hung + cl.hung
	fig := fmt.Sprintf("%d of %d operations over their deadline", hung, api.n+cl.n)
	var d string
	if hung > 0 {
		d = "hung: " + listNames(append(api.hungNames, cl.hungNames...), 5)
	}
	r.check(what+"every operation returned within its deadline", hung == 0, fig,
		fmt.Sprintf("0 (API %s, CLI %s)", fmtDur(apiDeadline), fmtDur(cliDeadline)), crit(critHung), detail("%s", d))
	if cl.n > 0 {
		r.check(what+"CLI commands finished in time", cl.max <= cliDeadline,
			fmt.Sprintf("slowest %s (%s); %s", fmtDur(cl.max), cl.slowest.name, cl.describe()), "<= "+fmtDur(cliDeadline),
			crit(critCLI), measured(cl.max.Seconds(), cliDeadline.Seconds(), "s"))
	}
}

// checkRealGateway probes a real gateway directly and refuses a live account.
func (r *run) checkRealGateway(ctx context.Context) error {
	c := &cli{bin: r.opts.Bin, self: true, ops: r.ops}
	p, res := probeGateway(ctx, c, r.opts.IBHost, r.opts.IBPort)
	r.check("gateway handshake (ktrdr ib probe)", res.code == 0 && p.Healthy, probeFigure(p, res),
		"exit 0: connect, handshake, one round trip")
	if res.code != 0 || !p.Healthy {
		return fmt.Errorf("%w: the gateway at %s:%d did not pass the probe: %s", ErrUnreachable, r.opts.IBHost, r.opts.IBPort, firstLine(res.output()))
	}
	return r.refuseLive(p.AccountType, p.Accounts)
}

// refuseLive stops the standard and exhaustive levels on anything but a
// paper account: they inject faults, force connections closed and hold
// client ids, which a live trading session must never suffer.
func (r *run) refuseLive(kind string, accounts []string) error {
	ok := kind == "paper"
	r.check("paper account", ok, fmt.Sprintf("%s %v", kind, accounts), "paper (accounts starting with DU)")
	if ok {
		return nil
	}
	return fmt.Errorf("%w: the %s level does not run against a %s account %v: it injects faults, closes connections by force and takes client ids; use a paper account (DU...)",
		ErrRefused, r.opts.Level, kind, accounts)
}

func (r *run) setLevel(lv Level, phase string) {
	r.mu.Lock()
	r.level, r.phase = lv, phase
	r.mu.Unlock()
}

func (r *run) addSetup(levels string, lines []string) {
	for _, l := range lines {
		r.rep.Setup = append(r.rep.Setup, levels+": "+l)
	}
}

// checkOpt adjusts a check being recorded.
type checkOpt func(*Check)

// crit counts the check towards a success criterion.
func crit(key string) checkOpt { return func(c *Check) { c.Criterion = key } }

// warning makes a failure a warning: reported, but not a reason not to deploy.
func warning() checkOpt { return func(c *Check) { c.Critical = false } }

func detail(format string, a ...any) checkOpt {
	return func(c *Check) { c.Detail = fmt.Sprintf(format, a...) }
}

// measured attaches the figure and threshold as numbers.
func measured(value, limit float64, unit string) checkOpt {
	return func(c *Check) { c.Value, c.Limit, c.Unit = &value, &limit, unit }
}

// check records a check, critical unless told otherwise.
func (r *run) check(name string, ok bool, figure, threshold string, opts ...checkOpt) bool {
	c := Check{Name: name, Status: Fail, Critical: true, Figure: figure, Threshold: threshold}
	if ok {
		c.Status = Pass
	}
	for _, o := range opts {
		o(&c)
	}
	r.record(c)
	return ok
}

// within records a duration check: took <= limit.
func (r *run) within(name string, took, limit time.Duration, threshold string, opts ...checkOpt) bool {
	if threshold == "" {
		threshold = "<= " + fmtDur(limit)
	}
	opts = append([]checkOpt{measured(took.Seconds(), limit.Seconds(), "s")}, opts...)
	return r.check(name, took <= limit, fmtDur(took), threshold, opts...)
}

// skip records a check that could not run here, and why.
func (r *run) skip(name, why string) {
	r.record(Check{Name: name, Status: Skip, Figure: "-", Threshold: "-", Detail: why})
}

func (r *run) record(c Check) {
	r.mu.Lock()
	c.Level, c.Phase = r.level, r.phase
	c.AtSeconds = float64(time.Since(r.start).Milliseconds()) / 1000
	r.rep.Checks = append(r.rep.Checks, c)
	r.mu.Unlock()
	line := fmt.Sprintf("%s %s — %s (%s)", resultWord(c.Status), c.Name, c.Figure, c.Threshold)
	if c.Detail != "" && c.Status != Pass {
		line += ": " + c.Detail
	}
	r.logf("%s", line)
}

// note adds a line to the report's notes.
func (r *run) note(format string, a ...any) {
	r.mu.Lock()
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, a...))
	r.mu.Unlock()
}

// logf streams a progress line when the run is verbose.
func (r *run) logf(format string, a ...any) {
	if r.opts.Progress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	where := ""
	if r.level != 0 {
		where = r.level.String() + "/" + r.phase + ": "
	}
	fmt.Fprintf(r.opts.Progress, "[%6.1fs] %s%s\n", time.Since(r.start).Seconds(), where, fmt.Sprintf(format, a...))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
