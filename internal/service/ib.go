// Package service is ktrdr's IB service: the live health check, status,
// the measured resilience report, gateway reconfiguration, cleanup and
// symbol discovery, all through the connection pool.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/pool"
	"github.com/ktrdr/ktrdr/tws"
)

// Options configures the service.
type Options struct {
	// Gateway is where the pool connects.
	Gateway GatewayConfig
	// Pool is the pool's configuration; Addr and ClientIDBase come from Gateway.
	Pool pool.Config
	// DataDir holds the symbol cache; "" keeps it in memory only.
	DataDir string
	// HealthTTL is how long a health check result is reused; default 1s.
	HealthTTL time.Duration
	// CheckTimeout bounds one health check (acquire, validation and one data
	// request); default 4s, inside the API's 5s handler deadline.
	CheckTimeout time.Duration
	// DataCheck is the contract the health check asks contract details for
	// to prove data requests are answered; default AAPL on SMART.
	DataCheck tws.Contract
	// Logger; default discards.
	Logger *slog.Logger
}

// IB is the service. Safe for concurrent use.
type IB struct {
	opts Options
	log  *slog.Logger

	mu   sync.RWMutex // guards pool and gw
	pool *pool.Pool
	gw   GatewayConfig

	healthMu sync.Mutex
	last     *Health
	inflight chan struct{}

	infoMu sync.Mutex
	info   GatewayInfo
	events []ConnEvent
	data   DataMetrics

	disc *discovery

	started time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// maxEvents is how many connection-level events Status keeps.
const maxEvents = 20

// New validates opts, starts the pool and loads the symbol cache.
func New(opts Options) (*IB, error) {
	if err := validateGateway(opts.Gateway); err != nil {
		return nil, err
	}
	if opts.HealthTTL <= 0 {
		opts.HealthTTL = time.Second
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 4 * time.Second
	}
	if opts.DataCheck.Symbol == "" && opts.DataCheck.ConID == 0 {
		opts.DataCheck = tws.Contract{Symbol: "AAPL", SecType: "STK", Exchange: "SMART", Currency: "USD"}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	disc, err := newDiscovery(opts.DataDir, opts.Logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &IB{opts: opts, log: opts.Logger, gw: opts.Gateway, disc: disc, started: time.Now(), ctx: ctx, cancel: cancel}
	s.info = GatewayInfo{Host: opts.Gateway.Host, Port: opts.Gateway.Port, Accounts: []string{}, AccountType: "unknown"}
	p, err := s.newPool(opts.Gateway)
	if err != nil {
		cancel()
		return nil, err
	}
	s.pool = p
	return s, nil
}

func (s *IB) newPool(gw GatewayConfig) (*pool.Pool, error) {
	cfg := s.opts.Pool
	cfg.Addr = net.JoinHostPort(gw.Host, strconv.Itoa(gw.Port))
	cfg.ClientIDBase = gw.ClientIDBase
	cfg.Logger = s.log
	return pool.New(cfg)
}

// Pool returns the current pool (it changes when the gateway config does).
func (s *IB) Pool() *pool.Pool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pool
}

// Close stops the pool and background work.
func (s *IB) Close() error {
	s.cancel()
	s.wg.Wait()
	return s.Pool().Close()
}

func validateGateway(g GatewayConfig) error {
	switch {
	case g.Host == "" || len(g.Host) > 253 || strings.ContainsAny(g.Host, " /\\\t\n"):
		return invalid("INVALID_HOST", fmt.Sprintf("host %q is not a host name or address", g.Host))
	case g.Port < 1 || g.Port > 65535:
		return invalid("INVALID_PORT", fmt.Sprintf("port %d is outside 1..65535", g.Port))
	case g.ClientIDBase < 0 || g.ClientIDBase > 1<<30:
		return invalid("INVALID_CLIENT_ID_BASE", fmt.Sprintf("client_id_base %d is outside 0..%d", g.ClientIDBase, 1<<30))
	}
	return nil
}

func invalid(code, msg string) error {
	return &Error{Kind: ErrInvalid, Code: code, Message: msg}
}

// Health runs the live check, or returns one less than HealthTTL old. Many
// concurrent callers share one check, so load on the health endpoint
// never becomes load on the gateway. The check has its own deadline
// (CheckTimeout); a caller whose ctx ends first gets a timeout result.
func (s *IB) Health(ctx context.Context) Health {
	s.healthMu.Lock()
	if s.last != nil && time.Since(s.last.CheckedAt) < s.opts.HealthTTL {
		h := *s.last
		s.healthMu.Unlock()
		h.Cached = true
		return h
	}
	ch := s.inflight
	if ch == nil {
		ch = make(chan struct{})
		s.inflight = ch
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			h := s.check()
			s.healthMu.Lock()
			s.last, s.inflight = &h, nil
			s.healthMu.Unlock()
			close(ch)
		}()
	}
	s.healthMu.Unlock()
	select {
	case <-ch:
		s.healthMu.Lock()
		h := *s.last
		s.healthMu.Unlock()
		return h
	case <-ctx.Done():
		return Health{CheckedAt: time.Now(), Stage: "waiting for the health check",
			ErrorMessage: "the health check did not finish before the request's deadline: " + ctx.Err().Error()}
	}
}

// check acquires a validated connection and makes one data request on it.
func (s *IB) check() Health {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CheckTimeout)
	defer cancel()
	start := time.Now()
	p := s.Pool()
	h := Health{CheckedAt: start, Degraded: p.Stats().Degraded}
	lease, err := p.Acquire(ctx, "health-check")
	if err != nil {
		h.ErrorMessage, h.Stage = err.Error(), "acquire"
		var ae *pool.AcquireError
		if errors.As(err, &ae) {
			h.Stage = string(ae.Stage)
		}
		h.LatencyMS = msSince(start)
		s.recordData(false, err)
		h.LastSuccessfulRequest = s.lastSuccess()
		return h
	}
	defer lease.Release()
	h.ConnectionOK = true
	s.observeConn(lease)
	// The data request gets the validation timeout, not the whole check's
	// budget: a connection that skipped validation (proven alive within the
	// bypass window) on a gateway gone silent must not hold the check.
	dctx, dcancel := context.WithTimeout(ctx, p.Config().ValidationTimeout)
	_, err = lease.Conn().ContractDetails(dctx, s.opts.DataCheck)
	dcancel()
	h.LatencyMS = msSince(start)
	if err != nil {
		h.ErrorMessage, h.Stage = err.Error(), "data request"
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			lease.DestroySilent() // silent: never hand it out again
		case errors.Is(err, client.ErrConnectionLost):
			lease.Destroy()
		}
		s.recordData(false, err)
		h.LastSuccessfulRequest = s.lastSuccess()
		return h
	}
	s.recordData(true, nil)
	h.DataFetchingOK, h.Healthy = true, true
	h.LastSuccessfulRequest = s.lastSuccess()
	return h
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// observeConn records what a live connection tells about the gateway.
func (s *IB) observeConn(l *pool.Lease) {
	c := l.Conn()
	s.infoMu.Lock()
	defer s.infoMu.Unlock()
	s.info.ServerVersion, s.info.Accounts, s.info.ConnectionTime = c.ServerVersion(), c.Accounts(), c.ConnectionTime()
	s.info.AccountType = client.AccountType(c.Accounts())
	for _, ev := range c.RecentEvents() {
		s.addEventLocked(ConnEvent{Time: ev.Time, Code: ev.Code, Text: ev.Text, ClientID: c.ClientID()})
	}
}

// addEventLocked keeps the last maxEvents distinct events, oldest first.
func (s *IB) addEventLocked(ev ConnEvent) {
	for _, e := range s.events {
		if e.Time.Equal(ev.Time) && e.Code == ev.Code && e.ClientID == ev.ClientID {
			return
		}
	}
	s.events = append(s.events, ev)
	if len(s.events) > maxEvents {
		s.events = s.events[len(s.events)-maxEvents:]
	}
}

func (s *IB) recordData(ok bool, err error) {
	now := time.Now()
	s.infoMu.Lock()
	defer s.infoMu.Unlock()
	s.data.Requests++
	if ok {
		s.data.LastSuccess = &now
		return
	}
	s.data.RequestFailures++
	s.data.LastFailure = &now
	s.data.LastError = err.Error()
}

func (s *IB) lastSuccess() *time.Time {
	s.infoMu.Lock()
	defer s.infoMu.Unlock()
	return s.data.LastSuccess
}

// Status describes the gateway, the pool and recent events. It makes no
// gateway request: it reports what the pool and the last checks saw.
func (s *IB) Status() Status {
	st := s.Pool().Stats()
	s.mu.RLock()
	gw := s.gw
	s.mu.RUnlock()
	s.infoMu.Lock()
	info := s.info
	info.Accounts = append([]string{}, s.info.Accounts...)
	events := append([]ConnEvent{}, s.events...)
	data := s.data
	s.infoMu.Unlock()
	info.Host, info.Port = gw.Host, gw.Port
	// Connected since the oldest live connection opened.
	for _, c := range st.Connections {
		if info.ConnectedSince == nil || c.Created.Before(*info.ConnectedSince) {
			created := c.Created
			info.ConnectedSince = &created
		}
	}
	s.healthMu.Lock()
	last := s.last
	s.healthMu.Unlock()
	return Status{
		Gateway: info, ClientIDsInUse: nonNil(st.ClientIDsInUse),
		Connection: ConnMetrics{Connects: st.Connects, ConnectAttempts: st.ConnectAttempts,
			ConnectFailures: st.ConnectFailures, ClientIDConflicts: st.ClientIDConflicts, Degraded: st.Degraded},
		Data: data, Pool: poolStats(st), Events: events, Breaker: breakerInfo(st, s.Pool().Config()),
		Config: gw, Health: last, Uptime: time.Since(s.started).Seconds(),
	}
}

func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func durMS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func poolStats(st pool.Stats) PoolStats {
	ps := PoolStats{Total: st.Total, Idle: st.Idle, InUse: st.InUse, Connecting: st.Connecting, Waiting: st.Waiting,
		MaxConns: st.MaxConns, MinIdle: st.MinIdle, ClientIDsInUse: nonNil(st.ClientIDsInUse),
		ClientIDsResting: nonNil(st.ClientIDsResting), LowestClientIDInUse: st.LowestClientIDInUse,
		LowestFreeClientID: st.LowestFreeClientID, Acquires: st.Acquires, AcquireFailures: st.AcquireFailures,
		AcquireWaitP50MS: durMS(st.AcquireWaitP50), AcquireWaitP99MS: durMS(st.AcquireWaitP99),
		Validations: st.Validations, ValidationFailures: st.ValidationFailures, ValidationsBypassed: st.ValidationsBypassed,
		ValidationLastMS: durMS(st.ValidationLast), ValidationP50MS: durMS(st.ValidationP50), ValidationP99MS: durMS(st.ValidationP99),
		LastValidationOK: timePtr(st.LastValidationOK), SilentDetected: st.SilentDetected, Removals: map[string]int64{},
		HealthRuns: st.HealthRuns, HealthLastRun: timePtr(st.HealthLastRun), HealthLastChecked: st.HealthLastChecked,
		HealthLastFailed: st.HealthLastFailed, Degraded: st.Degraded, DegradedSince: timePtr(st.DegradedSince),
		Connections: []PoolConn{}, Leaks: []PoolLeak{}, UptimeSeconds: st.Uptime.Seconds()}
	for r, n := range st.Removals {
		ps.Removals[string(r)] = n
	}
	for _, c := range st.Connections {
		ps.Connections = append(ps.Connections, PoolConn{ClientID: c.ClientID, InUse: c.InUse, Label: c.Label,
			AgeSeconds: time.Since(c.Created).Seconds(), LastAlive: timePtr(c.LastAlive)})
	}
	for _, l := range st.Leaks {
		ps.Leaks = append(ps.Leaks, PoolLeak{ClientID: l.ClientID, Label: l.Label, HeldSeconds: l.HeldFor.Seconds()})
	}
	return ps
}

func breakerInfo(st pool.Stats, cfg pool.Config) BreakerInfo {
	return BreakerInfo{Name: "gateway-connect", State: st.BreakerState, ConsecutiveFailures: st.BreakerConsecutiveKO,
		FailureThreshold: cfg.BreakerFailures, Transitions: st.BreakerTransitions, LastTransition: timePtr(st.BreakerLastChange),
		LastFrom: st.BreakerLastFrom, LastTo: st.BreakerLastTo, ProbeIntervalMS: durMS(cfg.BreakerProbeInterval)}
}

// CircuitBreakers lists the breakers (one: connects and validations to the gateway).
func (s *IB) CircuitBreakers() []BreakerInfo {
	p := s.Pool()
	return []BreakerInfo{breakerInfo(p.Stats(), p.Config())}
}

// GatewayConfig returns the current gateway settings.
func (s *IB) GatewayConfig() GatewayConfig {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gw
}

// drainTimeout bounds how long a reconfiguration waits for leases on the
// old pool to come back before closing it.
const drainTimeout = 5 * time.Second

// UpdateGatewayConfig validates and applies a change by building a new
// pool, switching to it, draining the old one (waiting for its leases up to
// drainTimeout) and closing it; then it tries a validated connection to the
// new gateway within ctx.
func (s *IB) UpdateGatewayConfig(ctx context.Context, u GatewayConfigUpdate) (ConfigChange, error) {
	s.mu.Lock()
	prev := s.gw
	next := prev
	if u.Host != nil {
		next.Host = strings.TrimSpace(*u.Host)
	}
	if u.Port != nil {
		next.Port = *u.Port
	}
	if u.ClientIDBase != nil {
		next.ClientIDBase = *u.ClientIDBase
	}
	if err := validateGateway(next); err != nil {
		s.mu.Unlock()
		return ConfigChange{}, err
	}
	change := ConfigChange{Previous: prev, Current: next, Changed: next != prev}
	if !change.Changed {
		s.mu.Unlock()
		return change, nil
	}
	np, err := s.newPool(next)
	if err != nil {
		s.mu.Unlock()
		return ConfigChange{}, invalid("INVALID_CONFIG", err.Error())
	}
	old := s.pool
	s.pool, s.gw = np, next
	s.mu.Unlock()

	s.healthMu.Lock()
	s.last = nil // results about the old gateway say nothing of the new one
	s.healthMu.Unlock()
	s.infoMu.Lock()
	s.info = GatewayInfo{Host: next.Host, Port: next.Port, Accounts: []string{}, AccountType: "unknown"}
	s.events = nil
	s.infoMu.Unlock()

	deadline := time.Now().Add(drainTimeout)
	for old.Stats().InUse > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	old.Close()
	s.log.Info("gateway configuration changed", "from", prev, "to", next)

	lease, err := np.Acquire(ctx, "config-change")
	if err != nil {
		change.Error = err.Error()
		return change, nil
	}
	s.observeConn(lease)
	lease.Release()
	change.Reconnected = true
	return change, nil
}

// Cleanup closes idle connections, or every connection with force.
func (s *IB) Cleanup(force bool) CleanupResult {
	p := s.Pool()
	before := poolStats(p.Stats())
	var ids []int
	if force {
		ids = p.CloseAll()
	} else {
		ids = p.CloseIdle()
	}
	return CleanupResult{Force: force, ClosedClientIDs: nonNil(ids), Closed: len(ids), Before: before, After: poolStats(p.Stats())}
}
