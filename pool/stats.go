package pool

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/ktrdr/ktrdr/client"
)

// Reason is why a connection left the pool.
type Reason string

// Removal reasons, each counted.
const (
	ReasonIdle             Reason = "idle"
	ReasonFailedValidation Reason = "failed_validation"
	ReasonFailedHealth     Reason = "failed_health_check"
	ReasonBrokenByCaller   Reason = "broken_by_caller"
	ReasonClosedByGateway  Reason = "closed_by_gateway"
	Reason326              Reason = "client_id_in_use"
	ReasonPoolClosed       Reason = "pool_closed"
	ReasonSilentRequest    Reason = "silent_request" // a caller's request got no answer in time
)

// latencyWindow is how many recent latencies percentiles are computed over.
const latencyWindow = 1024

// latencies keeps the last latencyWindow observations.
type latencies struct {
	mu   sync.Mutex
	ring []time.Duration
	next int
	last time.Duration
}

func (l *latencies) observe(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = d
	if len(l.ring) < latencyWindow {
		l.ring = append(l.ring, d)
		return
	}
	l.ring[l.next] = d
	l.next = (l.next + 1) % latencyWindow
}

// summary returns the last, p50 and p99 of the window.
func (l *latencies) summary() (last, p50, p99 time.Duration) {
	l.mu.Lock()
	s := slices.Clone(l.ring)
	last = l.last
	l.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, 0
	}
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return last, at(0.50), at(0.99)
}

type stats struct {
	start time.Time

	acquires, acquireFailures, waits                 atomic.Int64
	connects, connectAttempts, connectFailures       atomic.Int64
	idConflicts, silentDetected, validationsBypassed atomic.Int64
	validations, validationFailures, healthProbes    atomic.Int64
	leaksReported                                    atomic.Int64
	idFallbacks, idFallbacksExhausted                atomic.Int64
	lastConnect, lastFallbackExhausted               atomic.Int64 // unix nanos
	acquireWait, validation                          latencies
	mu                                               sync.Mutex
	removals                                         map[Reason]int64
	breakerTransitions                               int64
	breakerLast                                      time.Time
	breakerLastFrom, breakerLastTo                   string
	degraded                                         bool
	degradedSince                                    time.Time
	lastConnEvent                                    client.Event
	healthLastRun                                    time.Time
	healthLastDuration                               time.Duration
	healthLastChecked, healthLastFailed, healthRuns  int64
	healthLastRemovedIdle                            int64
	lastValidationOK                                 time.Time
	leaks                                            []Leak
}

func newStats() *stats {
	return &stats{start: time.Now(), removals: map[Reason]int64{}}
}

func (s *stats) removed(r Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removals[r]++
}

func (s *stats) validated(d time.Duration, ok bool) {
	s.validations.Add(1)
	s.validation.observe(d)
	if !ok {
		s.validationFailures.Add(1)
		return
	}
	s.mu.Lock()
	s.lastValidationOK = time.Now()
	s.mu.Unlock()
}

func (s *stats) breakerChanged(from, to gobreaker.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakerTransitions++
	s.breakerLast = time.Now()
	s.breakerLastFrom, s.breakerLastTo = from.String(), to.String()
}

// setDegraded records a connectivity change; it reports whether the flag changed.
func (s *stats) setDegraded(on bool, ev client.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastConnEvent = ev
	if s.degraded == on {
		return false
	}
	s.degraded = on
	if on {
		s.degradedSince = ev.Time
	} else {
		s.degradedSince = time.Time{}
	}
	return true
}

// Leak is a connection held longer than the leak threshold.
type Leak struct {
	ClientID int           `json:"client_id"`
	Label    string        `json:"label"`
	HeldFor  time.Duration `json:"held_for_ns"`
	Since    time.Time     `json:"since"`
}

// ConnInfo describes one pooled connection.
type ConnInfo struct {
	ClientID  int       `json:"client_id"`
	InUse     bool      `json:"in_use"`
	Label     string    `json:"label,omitempty"`
	Created   time.Time `json:"created"`
	LastAlive time.Time `json:"last_alive"`
	IdleSince time.Time `json:"idle_since,omitempty"`
}

// Stats is a snapshot that explains every connection's fate.
type Stats struct {
	Total, Idle, InUse, Connecting int
	Waiting                        int
	MaxConns, MinIdle              int
	Connections                    []ConnInfo
	ClientIDsInUse                 []int
	ClientIDsResting               []int // refused with 326, cooling down
	LowestClientIDInUse            int   // 0 when none
	LowestFreeClientID             int   // the id the next connect tries first
	ClientIDConflicts              int64 // 326 answers met while connecting
	ClientIDBase                   int   // the preferred (lowest) id
	IDFallbacks                    int64 // connects that succeeded on a later id after 326
	IDFallbacksExhausted           int64 // connects whose every id attempt got 326
	LastConnect                    time.Time
	LastFallbackExhausted          time.Time

	Acquires, AcquireFailures, AcquireWaits int64
	AcquireWaitP50, AcquireWaitP99          time.Duration

	Connects, ConnectAttempts, ConnectFailures int64

	Validations, ValidationFailures, ValidationsBypassed int64
	ValidationLast, ValidationP50, ValidationP99         time.Duration
	LastValidationOK                                     time.Time
	SilentDetected                                       int64

	Removals map[Reason]int64

	BreakerState         string
	BreakerTransitions   int64
	BreakerLastChange    time.Time
	BreakerLastFrom      string
	BreakerLastTo        string
	BreakerConsecutiveKO uint32

	HealthRuns, HealthLastChecked, HealthLastFailed, HealthLastRemovedIdle int64
	HealthProbes                                                           int64 // round trips the health loop ran, all runs
	HealthLastRun                                                          time.Time
	HealthLastDuration                                                     time.Duration
	HealthInterval                                                         time.Duration

	Degraded      bool
	DegradedSince time.Time
	LastConnEvent client.Event

	Leaks         []Leak
	LeaksReported int64

	Uptime time.Duration
	Closed bool
}

// Stats returns a consistent-enough snapshot: each group is read under its
// own lock, so counters from different groups may be a moment apart.
func (p *Pool) Stats() Stats {
	st := Stats{MaxConns: p.cfg.MaxConns, MinIdle: p.cfg.MinIdle, HealthInterval: p.cfg.HealthInterval}
	p.mu.Lock()
	st.Total, st.Idle, st.Connecting, st.Waiting, st.Closed = len(p.all), len(p.idle), p.pending, p.waiters.Len(), p.closed
	for e := range p.all {
		ci := ConnInfo{ClientID: e.clientID, InUse: e.inUse, Label: e.label, Created: e.created, LastAlive: e.lastAlive}
		if !e.inUse {
			ci.IdleSince = e.released
		}
		st.Connections = append(st.Connections, ci)
	}
	p.mu.Unlock()
	st.InUse = st.Total - st.Idle
	sort.Slice(st.Connections, func(i, j int) bool { return st.Connections[i].ClientID < st.Connections[j].ClientID })
	st.ClientIDsInUse, st.ClientIDsResting = p.ids.snapshot()
	if len(st.ClientIDsInUse) > 0 {
		st.LowestClientIDInUse = st.ClientIDsInUse[0]
	}
	st.LowestFreeClientID = p.ids.lowestFree()

	s := p.stats
	st.Acquires, st.AcquireFailures, st.AcquireWaits = s.acquires.Load(), s.acquireFailures.Load(), s.waits.Load()
	_, st.AcquireWaitP50, st.AcquireWaitP99 = s.acquireWait.summary()
	st.Connects, st.ConnectAttempts, st.ConnectFailures = s.connects.Load(), s.connectAttempts.Load(), s.connectFailures.Load()
	st.ClientIDConflicts = s.idConflicts.Load()
	st.ClientIDBase = p.cfg.ClientIDBase
	st.IDFallbacks, st.IDFallbacksExhausted = s.idFallbacks.Load(), s.idFallbacksExhausted.Load()
	st.LastConnect, st.LastFallbackExhausted = unixNano(s.lastConnect.Load()), unixNano(s.lastFallbackExhausted.Load())
	st.Validations, st.ValidationFailures, st.ValidationsBypassed = s.validations.Load(), s.validationFailures.Load(), s.validationsBypassed.Load()
	st.ValidationLast, st.ValidationP50, st.ValidationP99 = s.validation.summary()
	st.SilentDetected = s.silentDetected.Load()
	st.LeaksReported = s.leaksReported.Load()
	st.HealthProbes = s.healthProbes.Load()
	s.mu.Lock()
	st.Removals = make(map[Reason]int64, len(s.removals))
	for k, v := range s.removals {
		st.Removals[k] = v
	}
	st.BreakerTransitions, st.BreakerLastChange = s.breakerTransitions, s.breakerLast
	st.BreakerLastFrom, st.BreakerLastTo = s.breakerLastFrom, s.breakerLastTo
	st.Degraded, st.DegradedSince, st.LastConnEvent = s.degraded, s.degradedSince, s.lastConnEvent
	st.HealthRuns, st.HealthLastRun, st.HealthLastDuration = s.healthRuns, s.healthLastRun, s.healthLastDuration
	st.HealthLastChecked, st.HealthLastFailed, st.HealthLastRemovedIdle = s.healthLastChecked, s.healthLastFailed, s.healthLastRemovedIdle
	st.LastValidationOK = s.lastValidationOK
	st.Leaks = slices.Clone(s.leaks)
	s.mu.Unlock()
	st.BreakerState = p.breaker.State().String()
	st.BreakerConsecutiveKO = p.breaker.Counts().ConsecutiveFailures
	st.Uptime = time.Since(s.start)
	return st
}

func sortInts(s []int) { slices.Sort(s) }

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
