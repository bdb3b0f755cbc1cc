package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// gatewayWait bounds the wait for the gateway to be healthy through the
// server: a fresh server's first connect, or a breaker's next probe.
const gatewayWait = 30 * time.Second

// probeResult is the part of `ktrdr ib probe -o json` the runner reads.
type probeResult struct {
	Healthy       bool     `json:"healthy"`
	Stage         string   `json:"stage"`
	Error         string   `json:"error"`
	ServerVersion int      `json:"server_version"`
	Accounts      []string `json:"accounts"`
	AccountType   string   `json:"account_type"`
	RoundTripMS   float64  `json:"round_trip_ms"`
}

// probeGateway runs `ktrdr ib probe` against a gateway directly.
func probeGateway(ctx context.Context, c *cli, host string, port int) (probeResult, cliResult) {
	res := c.runDirect(ctx, "ktrdr ib probe", "ib", "probe", "--ib-host", host, "--ib-port", strconv.Itoa(port), "--timeout", "5s", "-o", "json")
	var p probeResult
	_ = json.Unmarshal([]byte(res.stdout), &p)
	return p, res
}

func probeFigure(p probeResult, res cliResult) string {
	if res.err != nil {
		return fmt.Sprintf("did not finish: %v", res.err)
	}
	if !p.Healthy {
		return fmt.Sprintf("exit %d in %s: failed at %s: %s", res.code, fmtDur(res.took), p.Stage, firstLine(p.Error+res.stderr))
	}
	return fmt.Sprintf("exit 0 in %s: server version %d, accounts %s (%s), round trip %.1f ms",
		fmtDur(res.took), p.ServerVersion, strings.Join(p.Accounts, ","), p.AccountType, p.RoundTripMS)
}

// remotePrerequisites checks a running deployment before anything else:
// the API answers; for the levels that need a gateway, the gateway
// answers (directly with --ib-host/--ib-port, and through the server) and
// the account is a paper account.
func (r *run) remotePrerequisites(ctx context.Context, e *env) error {
	h, err := e.api.serviceHealth(ctx)
	if err != nil {
		r.check("API reachable", false, err.Error(), "GET /api/v1/health answers 200")
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	r.check("API reachable", true, fmt.Sprintf("ktrdr %s (%s), pid %d, up %.0f s", h.Version, h.GoVersion, h.PID, h.UptimeSeconds),
		"GET /api/v1/health answers 200")
	if host, port, ok := e.gatewayHostPort(); ok && e.real {
		p, res := probeGateway(ctx, e.cli, host, port)
		r.check("gateway handshake (ktrdr ib probe)", res.code == 0 && p.Healthy, probeFigure(p, res),
			"exit 0: connect, handshake, one round trip", orWarning(r.opts.Level == Basic))
		if r.opts.Level >= Standard && (res.code != 0 || !p.Healthy) {
			return fmt.Errorf("%w: the gateway at %s did not pass the probe", ErrUnreachable, e.gateway)
		}
		if r.opts.Level >= Standard {
			if err := r.refuseLive(p.AccountType, p.Accounts); err != nil {
				return err
			}
		}
	}
	if r.opts.Level == Basic {
		return nil
	}
	took, err := waitHealthy(ctx, e, time.Time{}, gatewayWait)
	if !r.check("gateway healthy through the server", err == nil, healthyFigure(took, err), "GET /api/v1/ib/health 200 within "+fmtDur(gatewayWait)) {
		return fmt.Errorf("%w: the gateway behind %s is not healthy (%v); the %s level needs one", ErrUnreachable, e.apiURL, err, r.opts.Level)
	}
	st, err := e.api.status(ctx)
	if err != nil {
		r.check("account type from the status", false, err.Error(), "paper")
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	return r.refuseLive(st.Gateway.AccountType, st.Gateway.Accounts)
}

// orWarning makes a check a warning when cond holds.
func orWarning(cond bool) checkOpt {
	return func(c *Check) {
		if cond {
			c.Critical = false
		}
	}
}

// gatewayHostPort is the gateway's address as host and port.
func (e *env) gatewayHostPort() (string, int, bool) {
	if e.gateway == "" {
		return "", 0, false
	}
	host, ps, err := net.SplitHostPort(e.gateway)
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.Atoi(ps)
	return host, port, err == nil
}

// waitHealthy waits for a healthy answer from GET /api/v1/ib/health whose
// check started at or after since (zero: any), returning the time from
// since (or from now) to that answer.
func waitHealthy(ctx context.Context, e *env, since time.Time, timeout time.Duration) (time.Duration, error) {
	from := since
	if from.IsZero() {
		from = time.Now()
	}
	var last string
	_, err := poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) error {
		rep, h, err := e.api.ibHealth(ctx)
		switch {
		case err != nil:
			last = err.Error()
		case rep.Status == http.StatusOK && h.Healthy && !h.CheckedAt.Before(since):
			return nil
		default:
			last = fmt.Sprintf("HTTP %d at stage %q: %s", rep.Status, h.Stage, h.ErrorMessage)
		}
		return errNotYet
	})
	took := time.Since(from)
	if err != nil {
		return took, fmt.Errorf("not healthy within %s; last answer: %s", fmtDur(timeout), last)
	}
	return took, nil
}

func healthyFigure(took time.Duration, err error) string {
	if err != nil {
		return err.Error()
	}
	return "healthy after " + fmtDur(took)
}

// firstLine is the first non-empty line of s.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return oneLine(l, 160)
		}
	}
	return ""
}

// lineWith is the first line of s that contains fragment (case-insensitive),
// else the first line: the part of an output that shows it is clear.
func lineWith(s, fragment string) string {
	f := strings.ToLower(fragment)
	for _, l := range strings.Split(s, "\n") {
		if f != "" && strings.Contains(strings.ToLower(l), f) {
			return oneLine(strings.TrimSpace(l), 160)
		}
	}
	return firstLine(s)
}
