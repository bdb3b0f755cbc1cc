package api

import (
	"context"
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ktrdr/ktrdr/internal/loader"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/pool"
)

// resilienceScrapeTimeout bounds the live check a scrape may wait for; past
// it the check counts as failed, so a silent gateway shows in the score
// instead of stalling the scrape.
const resilienceScrapeTimeout = 2 * time.Second

// knownReasons are exported even at zero, so each removal series exists
// from the first scrape and rate() sees its first increase.
var knownReasons = []pool.Reason{
	pool.ReasonIdle, pool.ReasonFailedValidation, pool.ReasonFailedHealth, pool.ReasonBrokenByCaller,
	pool.ReasonClosedByGateway, pool.Reason326, pool.ReasonPoolClosed, pool.ReasonCleanup, pool.ReasonSilentRequest,
}

// phaseKeys are the phases exported as ktrdr_resilience_phase_status.
var phaseKeys = []string{service.PhaseValidation, service.PhaseCollection, service.PhaseClientIDs, service.PhaseLive}

// ibCollector reads the pool's statistics and the resilience report at
// scrape time, so the metrics are never older than the scrape. The pool is
// looked up at each scrape because a gateway reconfiguration replaces it;
// its counters then restart from zero, which Prometheus reads as a reset.
type ibCollector struct {
	svc *service.IB

	total, idle, inUse, connecting, waiting, maxConns *prometheus.Desc
	validations, validationFailures, removals         *prometheus.Desc
	conflicts, silent, acquires, acquireFailures      *prometheus.Desc
	connects, connectFailures                         *prometheus.Desc
	breaker, degraded, validationSec, validationLast  *prometheus.Desc
	score, phase                                      *prometheus.Desc
	lastValidationOK                                  *prometheus.Desc
}

func newIBCollector(svc *service.IB) *ibCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &ibCollector{
		svc:                svc,
		total:              d("ktrdr_pool_connections", "Open gateway connections (idle plus in use)."),
		idle:               d("ktrdr_pool_connections_idle", "Idle gateway connections."),
		inUse:              d("ktrdr_pool_connections_in_use", "Gateway connections leased out (or held by the health loop)."),
		connecting:         d("ktrdr_pool_connections_connecting", "Connects under way."),
		waiting:            d("ktrdr_pool_acquires_waiting", "Acquires queued for a free connection."),
		maxConns:           d("ktrdr_pool_connections_max", "The pool's connection cap."),
		validations:        d("ktrdr_pool_validations_total", "Validation round trips (reqCurrentTime) before handoff or in the health loop."),
		validationFailures: d("ktrdr_pool_validation_failures_total", "Validation round trips that failed or timed out."),
		removals:           d("ktrdr_pool_removals_total", "Connections removed from the pool, by reason.", "reason"),
		conflicts:          d("ktrdr_pool_client_id_conflicts_total", "Error 326 (client id already in use) answers met while connecting."),
		silent:             d("ktrdr_pool_silent_connections_detected_total", "Connections that accepted a request and never answered it."),
		acquires:           d("ktrdr_pool_acquires_total", "Acquire calls."),
		acquireFailures:    d("ktrdr_pool_acquire_failures_total", "Acquire calls that returned an error."),
		connects:           d("ktrdr_pool_connects_total", "Connections opened."),
		connectFailures:    d("ktrdr_pool_connect_failures_total", "Connects that failed."),
		breaker:            d("ktrdr_pool_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open."),
		degraded:           d("ktrdr_pool_degraded", "1 while the gateway reports lost connectivity to IB (1100 without 1101/1102 since)."),
		// The pool keeps the latencies of its last 1024 validations, not a
		// histogram, so this is a summary over that window; _count is the
		// lifetime count and _sum, which the pool does not track, is NaN.
		validationSec:  d("ktrdr_pool_validation_seconds", "Validation round-trip latency quantiles over the last 1024 validations; _sum is not tracked (NaN)."),
		validationLast: d("ktrdr_pool_validation_last_seconds", "Latency of the most recent validation round trip."),
		lastValidationOK: d("ktrdr_pool_last_validation_success_timestamp_seconds",
			"Unix time of the last successful validation round trip (0 before the first)."),
		score: d("ktrdr_resilience_score", "Overall resilience score, 0 to 100, as GET /api/v1/ib/resilience reports it."),
		phase: d("ktrdr_resilience_phase_status", "Resilience phase status: 1 working, 0.5 degraded, 0 failing.", "phase"),
	}
}

// Describe implements prometheus.Collector.
func (c *ibCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.idle, c.inUse, c.connecting, c.waiting, c.maxConns,
		c.validations, c.validationFailures, c.removals, c.conflicts, c.silent, c.acquires, c.acquireFailures,
		c.connects, c.connectFailures, c.breaker, c.degraded, c.validationSec, c.validationLast, c.score, c.phase,
		c.lastValidationOK} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *ibCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.Pool().Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.total, float64(st.Total))
	gauge(c.idle, float64(st.Idle))
	gauge(c.inUse, float64(st.InUse))
	gauge(c.connecting, float64(st.Connecting))
	gauge(c.waiting, float64(st.Waiting))
	gauge(c.maxConns, float64(st.MaxConns))
	counter(c.validations, st.Validations)
	counter(c.validationFailures, st.ValidationFailures)
	counter(c.conflicts, st.ClientIDConflicts)
	counter(c.silent, st.SilentDetected)
	counter(c.acquires, st.Acquires)
	counter(c.acquireFailures, st.AcquireFailures)
	counter(c.connects, st.Connects)
	counter(c.connectFailures, st.ConnectFailures)
	for _, r := range removalReasons(st.Removals) {
		counter(c.removals, st.Removals[r], string(r))
	}
	gauge(c.breaker, breakerValue(st.BreakerState))
	gauge(c.degraded, boolValue(st.Degraded))
	ch <- prometheus.MustNewConstSummary(c.validationSec, uint64(max(st.Validations, 0)), math.NaN(), map[float64]float64{
		0.5: st.ValidationP50.Seconds(), 0.99: st.ValidationP99.Seconds()})
	gauge(c.validationLast, st.ValidationLast.Seconds())
	if st.LastValidationOK.IsZero() {
		gauge(c.lastValidationOK, 0)
	} else {
		gauge(c.lastValidationOK, float64(st.LastValidationOK.UnixNano())/1e9)
	}

	ctx, cancel := context.WithTimeout(context.Background(), resilienceScrapeTimeout)
	defer cancel()
	res := c.svc.Resilience(ctx)
	gauge(c.score, res.Score)
	for _, k := range phaseKeys {
		gauge(c.phase, phaseValue(res.Phases[k].Status), k)
	}
}

// removalReasons is the known reasons plus any others the pool reported, sorted.
func removalReasons(m map[pool.Reason]int64) []pool.Reason {
	out := append([]pool.Reason(nil), knownReasons...)
	seen := map[pool.Reason]bool{}
	for _, r := range knownReasons {
		seen[r] = true
	}
	for r := range m {
		if !seen[r] {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func breakerValue(state string) float64 {
	switch state {
	case "closed":
		return 0
	case "half-open":
		return 1
	}
	return 2 // open, or a state this code does not know: treat it as not closed
}

func phaseValue(status string) float64 {
	switch status {
	case service.Working:
		return 1
	case service.Degraded:
		return 0.5
	}
	return 0
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// dataCollector reads the loader's and the pacing scheduler's counters at
// scrape time.
type dataCollector struct {
	ld *loader.Loader

	violations, requests, waits, waitSeconds, penalties, pending *prometheus.Desc
	running, operations, dataRequests, retries, barsStored       *prometheus.Desc
}

func newDataCollector(ld *loader.Loader) *dataCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &dataCollector{
		ld:           ld,
		violations:   d("ktrdr_pacing_violations_total", "Historical requests the gateway refused for pacing (error 162) although the scheduler let them through."),
		requests:     d("ktrdr_pacing_requests_total", "Requests the pacing scheduler granted."),
		waits:        d("ktrdr_pacing_waits_total", "Historical requests that had to wait for a pacing rule (the scheduler's, or the loader's spacing of one contract's requests)."),
		waitSeconds:  d("ktrdr_pacing_wait_seconds_total", "Time historical requests spent waiting for the pacing rules."),
		penalties:    d("ktrdr_pacing_penalties_total", "Back-offs imposed on the scheduler after pacing violations."),
		pending:      d("ktrdr_pacing_pending", "Requests waiting on the pacing scheduler now."),
		running:      d("ktrdr_data_operations_running", "Data loads running now."),
		operations:   d("ktrdr_data_operations_total", "Data loads finished, by final status.", "status"),
		dataRequests: d("ktrdr_data_requests_total", "Historical data requests sent by data loads."),
		retries:      d("ktrdr_data_retries_total", "Historical data requests retried after a transient failure or a pacing violation."),
		barsStored:   d("ktrdr_data_bars_stored_total", "Bars written to the store (new or changed) by data loads."),
	}
}

// Describe implements prometheus.Collector.
func (c *dataCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.violations, c.requests, c.waits, c.waitSeconds, c.penalties, c.pending,
		c.running, c.operations, c.dataRequests, c.retries, c.barsStored} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *dataCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.ld.Stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.violations, float64(st.PacingViolations))
	counter(c.requests, float64(st.Pacing.Requests))
	counter(c.waits, float64(st.Pacing.Waits+st.SpacingWaits))
	counter(c.waitSeconds, (st.Pacing.WaitTotal + st.SpacingWaitTotal).Seconds())
	counter(c.penalties, float64(st.Pacing.Penalties))
	gauge(c.pending, float64(st.Pacing.Pending))
	gauge(c.running, float64(st.Running))
	counter(c.operations, float64(st.Completed), string(loader.StatusCompleted))
	counter(c.operations, float64(st.Failed), string(loader.StatusFailed))
	counter(c.operations, float64(st.Cancelled), string(loader.StatusCancelled))
	counter(c.dataRequests, float64(st.Requests))
	counter(c.retries, float64(st.Retries))
	counter(c.barsStored, float64(st.BarsStored))
}
