package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// endpointBound is the original guide's bound on an API answer.
const endpointBound = 5 * time.Second

// basicScenarios need no gateway: with the self target the server is
// pointed at a closed port; a running deployment is taken as it is.
func basicScenarios() []scenario {
	return []scenario{
		{phase: "endpoints", run: endpointsScenario},
		{phase: "cli", run: cliScenario},
		{phase: "leaks", run: burstLeakScenario},
	}
}

// endpoint is one API route and what it should answer.
type endpoint struct {
	method, path string
	body         any
	// gateway: the answer depends on the gateway (503 without one).
	gateway bool
	want    int
}

var endpoints = []endpoint{
	{method: "GET", path: "/api/v1/health", want: 200},
	{method: "GET", path: "/api/v1/ib/health", gateway: true},
	{method: "GET", path: "/api/v1/ib/status", want: 200},
	{method: "GET", path: "/api/v1/ib/resilience", want: 200},
	{method: "GET", path: "/api/v1/ib/config", want: 200},
	{method: "PUT", path: "/api/v1/ib/config", body: map[string]any{}, want: 200},
	{method: "GET", path: "/api/v1/ib/circuit-breakers", want: 200},
	{method: "POST", path: "/api/v1/ib/cleanup", body: map[string]any{"force": false}, want: 200},
	{method: "POST", path: "/api/v1/ib/symbols/discover", body: map[string]any{"symbol": "AAPL"}, gateway: true},
	{method: "GET", path: "/api/v1/ib/symbols/discovered", want: 200},
	{method: "GET", path: "/metrics", want: 200},
	{method: "GET", path: "/api/v1/no-such-endpoint", want: 404},
}

func (ep endpoint) name() string { return ep.method + " " + ep.path }

// gatewayUp reports whether the deployment's gateway answers: a closed
// port for the self target, the live check for a running deployment.
func gatewayUp(ctx context.Context, r *run, e *env) bool {
	if r.opts.self() {
		return false
	}
	rep, _, err := e.api.ibHealth(ctx)
	return err == nil && rep.Status == http.StatusOK
}

// endpointsScenario: every endpoint answers within 5 s, in the envelope;
// the gateway's endpoints answer 503 when there is no gateway.
func endpointsScenario(ctx context.Context, r *run, e *env) {
	up := gatewayUp(ctx, r, e)
	for _, ep := range endpoints {
		want := []int{ep.want}
		wantText := strconv.Itoa(ep.want)
		if ep.gateway {
			want, wantText = []int{http.StatusServiceUnavailable}, "503 with the envelope"
			if up {
				want, wantText = []int{http.StatusOK}, "200"
			}
		}
		rep, err := e.api.call(ctx, ep.name(), ep.method, ep.path, ep.body)
		threshold := "<= 5 s, HTTP " + wantText
		if err != nil {
			r.check(ep.name(), false, err.Error(), threshold)
			continue
		}
		ok := rep.Took <= endpointBound && slices.Contains(want, rep.Status)
		var why string
		if strings.HasPrefix(ep.path, "/api/") {
			// The envelope's flag must agree with the status, and a failure must name itself.
			switch {
			case !rep.envelope:
				ok, why = false, "the body is not the {success, data, error} envelope"
			case *rep.Env.Success != (rep.Status/100 == 2):
				ok, why = false, "success flag disagrees with the status"
			case rep.Status >= 400 && rep.errCode() == "":
				ok, why = false, "a failure without an error code"
			}
		}
		r.check(ep.name(), ok, rep.summary(), threshold, measured(rep.Took.Seconds(), endpointBound.Seconds(), "s"), detail("%s", why))
	}
}

// cliCase is one CLI command and the exit status and message it should give.
type cliCase struct {
	name string
	args []string
	want int
	// says is a fragment of a clear message (case-insensitive): the stage,
	// the reason or the thing shown.
	says string
	// noAPI: the command takes no --api, or sets its own.
	noAPI bool
}

// cliScenario: every command exits within 30 s with the exit status its
// documentation gives and a message that says what happened.
func cliScenario(ctx context.Context, r *run, e *env) {
	closed, err := closedPort()
	if err != nil {
		r.check("a closed port for the unreachable cases", false, err.Error(), "available")
		return
	}
	cp := strconv.Itoa(closed)
	// Without a gateway the health command must name the stage that failed.
	healthCode, healthSays, scoreCode := 1, "stage", 1
	if !r.opts.self() {
		// A deployment's gateway may well be up: expect what the API says.
		if gatewayUp(ctx, r, e) {
			healthCode, healthSays = 0, "healthy"
		}
		if res, err := e.api.resilience(ctx); err == nil && res.Score >= 75 {
			scoreCode = 0
		}
	}
	cases := []cliCase{
		{name: "ib health", args: []string{"ib", "health"}, want: healthCode, says: healthSays},
		{name: "ib status", args: []string{"ib", "status"}, want: 0, says: "gateway"},
		{name: "ib resilience", args: []string{"ib", "resilience"}, want: 0, says: "phase"},
		{name: "ib resilience --min-score 75", args: []string{"ib", "resilience", "--min-score", "75"}, want: scoreCode, says: "score"},
		{name: "ib config", args: []string{"ib", "config"}, want: 0, says: "port"},
		{name: "ib circuit-breakers", args: []string{"ib", "circuit-breakers"}, want: 0, says: "gateway-connect"},
		{name: "ib cleanup", args: []string{"ib", "cleanup"}, want: 0, says: "closed"},
		{name: "symbols list", args: []string{"symbols", "list"}, want: 0, says: "symbol"},
		{name: "unreachable API: ib health", args: []string{"ib", "health", "--api", "http://127.0.0.1:" + cp}, want: 3, says: "cannot reach", noAPI: true},
		{name: "unreachable API: ib status", args: []string{"ib", "status", "--api", "http://127.0.0.1:" + cp}, want: 3, says: "cannot reach", noAPI: true},
		{name: "usage: ib resilience --min-score -1", args: []string{"ib", "resilience", "--min-score", "-1"}, want: 2, says: "min-score"},
		{name: "usage: symbols discover without a symbol", args: []string{"symbols", "discover"}, want: 2, says: "arg"},
	}
	if r.opts.self() {
		cases = append(cases,
			cliCase{name: "symbols discover AAPL without a gateway", args: []string{"symbols", "discover", "AAPL"}, want: 1, says: "503"},
			cliCase{name: "ib probe of a closed port", args: []string{"ib", "probe", "--ib-port", cp, "--timeout", "3s"}, want: 1, says: "tcp connect", noAPI: true})
	}
	for _, c := range cases {
		var res cliResult
		if c.noAPI {
			res = e.cli.runDirect(ctx, "ktrdr "+c.name, c.args...)
		} else {
			res = e.cli.run(ctx, "ktrdr "+c.name, c.args...)
		}
		clear := c.says == "" || strings.Contains(strings.ToLower(res.output()), strings.ToLower(c.says))
		ok := res.err == nil && res.code == c.want && res.took <= cliDeadline && clear
		fig := fmt.Sprintf("exit %d in %s: %s", res.code, fmtDur(res.took), lineWith(res.output(), c.says))
		if res.err != nil {
			fig = fmt.Sprintf("did not finish in %s: %v", fmtDur(res.took), res.err)
		}
		var why string
		if !clear {
			why = fmt.Sprintf("the output does not mention %q", c.says)
		}
		r.check("ktrdr "+c.name, ok, fig, fmt.Sprintf("exit %d within 30 s, says %q", c.want, c.says), detail("%s", why))
	}
}

// burst is the basic level's load: enough requests at once to show a
// goroutine or descriptor that is not given back.
const (
	burstWorkers = 25
	burstEach    = 40
)

// burstLeakScenario samples the server, sends a burst of requests to every
// endpoint, and checks that goroutines and open descriptors come back to
// the baseline and that every answer came within 5 s.
func burstLeakScenario(ctx context.Context, r *run, e *env) {
	wantPool := 0
	if gatewayUp(ctx, r, e) {
		wantPool = e.settings.MinIdle
	}
	base, err := e.settle(ctx, nil, wantPool)
	if err != nil {
		r.check("baseline sample", false, err.Error(), "the server reports goroutines and descriptors")
		return
	}
	r.logf("baseline: %d goroutines, %d open fds", base.goroutines, base.fds)

	mark := r.ops.mark()
	var wg sync.WaitGroup
	for w := range burstWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range burstEach {
				if ctx.Err() != nil {
					return
				}
				ep := endpoints[(w+i)%len(endpoints)]
				_, _ = e.api.call(ctx, ep.name(), ep.method, ep.path, ep.body)
			}
		}()
	}
	wg.Wait()
	st := summarize(r.ops.since(mark), opAPI)
	r.check(fmt.Sprintf("burst of %d requests, %d at once: every answer within 5 s", burstWorkers*burstEach, burstWorkers),
		st.max <= endpointBound && st.n == burstWorkers*burstEach, st.describe(), "max <= 5 s",
		measured(st.max.Seconds(), endpointBound.Seconds(), "s"))
	r.within("burst: API p99", st.p99, endpointBound, "", crit(critAPIP99))

	after, err := e.settle(ctx, &base, wantPool)
	if err != nil {
		r.check("goroutines and descriptors back to baseline", false, err.Error(), "within tolerance", crit(critLeaks))
		return
	}
	fig, ok := leakFigure(base, after)
	r.check("goroutines and descriptors back to baseline after the burst", ok, fig, "within tolerance of the baseline", crit(critLeaks))
}
