package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// settings are the server's pool settings that scenarios time themselves by.
type settings struct {
	ValidationTimeout time.Duration
	ConnectTimeout    time.Duration
	HealthInterval    time.Duration
	IdleTimeout       time.Duration
	Cooldown          time.Duration
	MinIdle, MaxConns int
	// CooldownAssumed: the server does not report its client-id cool-down;
	// Cooldown is the documented default.
	CooldownAssumed bool
}

// shortSettings are the self target's: short enough that idle collection,
// the health loop, silent detection and the client-id cool-down each show
// within seconds, where the defaults would take minutes.
var shortSettings = settings{
	ValidationTimeout: time.Second,
	ConnectTimeout:    3 * time.Second, // the default: handshakes need no shortening
	HealthInterval:    time.Second,
	IdleTimeout:       2 * time.Second,
	Cooldown:          time.Second,
	MinIdle:           1,
	MaxConns:          4,
}

// leakThreshold is the self target's lease-leak threshold: far above any
// honest lease (a health check holds one for at most 4 s), far below a run.
const leakThreshold = 15 * time.Second

// env is the system under test: the API, the gateway behind it, and the
// handles the runner has on each.
type env struct {
	setup    []string // how it was arranged, for the report
	apiURL   string
	api      *apiClient
	cli      *cli
	pid      int         // the server's pid on this machine; 0 when not local
	sim      *simControl // nil without a simulator
	net      *netFaults  // nil without the fault proxy
	gateway  string      // the gateway's own address, "" when none is known
	real     bool        // the gateway is a real IB Gateway or TWS
	settings settings
	procs    []*proc
}

var (
	simGatewayLine = regexp.MustCompile(`gateway listening on (\S+)`)
	simControlLine = regexp.MustCompile(`control API on (\S+)`)
	serveAPILine   = regexp.MustCompile(`serve: API on (http://\S+)`)
)

// gatewayKind says what the self target's server is pointed at.
type gatewayKind int

const (
	noGateway gatewayKind = iota // a closed port: the basic level
	withGateway
	withGatewayAndProxy // through the network fault proxy
)

// startSelf starts the self target: a simulator (unless a real gateway was
// named), optionally the fault proxy, and a server pointed at them.
func (r *run) startSelf(ctx context.Context, kind gatewayKind) (*env, error) {
	e := &env{}
	dir, err := os.MkdirTemp(r.workDir, "env-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*env, error) {
		e.close(r)
		return nil, err
	}
	var ibAddr string
	switch {
	case kind == noGateway:
		port, err := closedPort()
		if err != nil {
			return fail(err)
		}
		ibAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		e.setup = append(e.setup, fmt.Sprintf("ktrdr serve pointed at %s, a closed port: no gateway", ibAddr))
	case r.opts.IBPort > 0:
		e.gateway, e.real = net.JoinHostPort(r.opts.IBHost, strconv.Itoa(r.opts.IBPort)), true
		ibAddr = e.gateway
		e.setup = append(e.setup, "real gateway at "+e.gateway)
	default:
		p, addrs, err := startProc(ctx, "sim", r.opts.Bin, dir,
			[]string{"sim", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--log-level", "info"},
			[]*regexp.Regexp{simGatewayLine, simControlLine})
		if err != nil {
			return fail(err)
		}
		e.procs = append(e.procs, p)
		e.gateway, e.sim = addrs[0], newSimControl(addrs[1])
		ibAddr = e.gateway
		e.setup = append(e.setup, fmt.Sprintf("ktrdr sim (pid %d) on %s, control API %s", p.pid(), addrs[0], addrs[1]))
	}
	// With a real gateway the proxy is needed at the standard level too:
	// there is no simulator to make the gateway silent.
	if kind == withGatewayAndProxy || (kind == withGateway && e.real) {
		n, err := startNetFaults(ibAddr)
		if err != nil {
			return fail(err)
		}
		e.net = n
		ibAddr = n.addr()
		e.setup = append(e.setup, fmt.Sprintf("network fault proxy (in the runner) on %s -> %s", n.addr(), e.gateway))
	}

	host, port, _ := net.SplitHostPort(ibAddr)
	args := []string{"serve", "--listen", "127.0.0.1:0", "--ib-host", host, "--ib-port", port, "--data-dir", filepath.Join(dir, "data"), "--log-level", "info"}
	if kind != noGateway {
		s := shortSettings
		args = append(args,
			"--health-interval", s.HealthInterval.String(), "--idle-timeout", s.IdleTimeout.String(),
			"--validation-timeout", s.ValidationTimeout.String(), "--client-id-cooldown", s.Cooldown.String(),
			"--min-idle", strconv.Itoa(s.MinIdle), "--max-conns", strconv.Itoa(s.MaxConns),
			"--leak-threshold", leakThreshold.String())
		e.settings = s
	}
	p, addrs, err := startProc(ctx, "serve", r.opts.Bin, dir, args, []*regexp.Regexp{serveAPILine})
	if err != nil {
		return fail(err)
	}
	e.procs = append(e.procs, p)
	e.apiURL, e.pid = addrs[0], p.pid()
	e.setup = append(e.setup, fmt.Sprintf("ktrdr serve (pid %d) on %s: %s", p.pid(), e.apiURL, strings.Join(args[1:], " ")))
	e.api = newAPIClient(e.apiURL, "", r.ops)
	e.cli = &cli{bin: r.opts.Bin, api: e.apiURL, self: true, ops: r.ops}
	return e, nil
}

// connectRemote uses a running deployment.
func (r *run) connectRemote() *env {
	e := &env{apiURL: r.opts.Target}
	e.api = newAPIClient(e.apiURL, r.opts.Token, r.ops)
	e.cli = &cli{bin: r.opts.Bin, api: e.apiURL, token: r.opts.Token, ops: r.ops}
	if r.opts.IBPort > 0 {
		e.gateway, e.real = net.JoinHostPort(r.opts.IBHost, strconv.Itoa(r.opts.IBPort)), true
	}
	e.setup = []string{"a running ktrdr serve at " + e.apiURL}
	// Until read from the server, assume the documented defaults.
	e.settings = settings{ValidationTimeout: 3 * time.Second, ConnectTimeout: 3 * time.Second, HealthInterval: 60 * time.Second,
		IdleTimeout: 300 * time.Second, Cooldown: 60 * time.Second, MinIdle: 1, MaxConns: 4, CooldownAssumed: true}
	return e
}

// readSettings takes a remote server's pool settings from its resilience
// report, which states them (the cool-down is not reported; the default
// is assumed).
func (e *env) readSettings(ctx context.Context) {
	res, err := e.api.resilience(ctx)
	if err != nil {
		return
	}
	var f float64
	if res.phaseField("phase_1_systematic_validation", "validation_timeout_seconds", &f) {
		e.settings.ValidationTimeout = seconds(f)
	}
	if res.phaseField("phase_2_garbage_collection", "health_check_interval", &f) {
		e.settings.HealthInterval = seconds(f)
	}
	if res.phaseField("phase_2_garbage_collection", "max_idle_time_seconds", &f) {
		e.settings.IdleTimeout = seconds(f)
	}
	var n int
	if res.phaseField("phase_2_garbage_collection", "min_idle", &n) {
		e.settings.MinIdle = n
	}
	if st, err := e.api.status(ctx); err == nil && st.Pool.MaxConns > 0 {
		e.settings.MaxConns = st.Pool.MaxConns
	}
	e.setup = append(e.setup, fmt.Sprintf("server settings: validation timeout %s, health interval %s, idle timeout %s, min idle %d, max conns %d",
		e.settings.ValidationTimeout, e.settings.HealthInterval, e.settings.IdleTimeout, e.settings.MinIdle, e.settings.MaxConns))
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// close stops the server first, so that it lets go of the gateway, then
// the proxy, then the simulator. A process that does not stop on SIGTERM
// is a finding, noted in the report.
func (e *env) close(r *run) {
	if e.api != nil {
		e.api.closeIdle()
	}
	stop := func(p *proc) {
		if err := p.stop(); err != nil {
			r.note("%v", err)
		}
	}
	if p := e.serveProc(); p != nil {
		stop(p)
	}
	if e.net != nil {
		e.net.close()
		e.net = nil
	}
	for _, p := range e.procs {
		if p.name != "serve" {
			stop(p)
		}
	}
	e.procs = nil
}

// serveProc is the self target's server process, or nil.
func (e *env) serveProc() *proc {
	for _, p := range e.procs {
		if p.name == "serve" {
			return p
		}
	}
	return nil
}

// closedPort returns a loopback port nothing listens on: one the kernel
// just handed out and that was closed again.
func closedPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}
