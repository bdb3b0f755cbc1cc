package service

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ktrdr/ktrdr/pool"
)

// Phase statuses.
const (
	Working  = "working"
	Degraded = "degraded"
	Failing  = "failing"
)

// Phase keys, as the original response names them, and their weights in
// the score. The weights sum to 100.
const (
	PhaseValidation = "phase_1_systematic_validation"
	PhaseCollection = "phase_2_garbage_collection"
	PhaseClientIDs  = "phase_3_client_id_preference"
	PhaseLive       = "phase_4_live_validation"
)

var phaseWeights = []struct {
	key    string
	weight float64
}{{PhaseValidation, 30}, {PhaseCollection, 20}, {PhaseClientIDs, 20}, {PhaseLive, 30}}

// ScoreFormula is the score's definition, reported with every score.
const ScoreFormula = "score = sum over phases of weight x credit; weights: validation 30, collection 20, " +
	"client ids 20, live validation 30; credit: working 1, degraded 0.5, failing 0"

// Score computes the overall score from phase statuses.
func Score(phases map[string]Phase) float64 {
	total := 0.0
	for _, w := range phaseWeights {
		switch phases[w.key].Status {
		case Working:
			total += w.weight
		case Degraded:
			total += w.weight / 2
		}
	}
	return total
}

// MarshalJSON merges a phase's own fields with its status and evidence.
func (p Phase) MarshalJSON() ([]byte, error) {
	m := map[string]any{"status": p.Status, "evidence": p.Evidence}
	if p.Evidence == nil {
		m["evidence"] = []string{}
	}
	if p.Reason != "" {
		m["reason"] = p.Reason
	}
	for k, v := range p.Fields {
		m[k] = v
	}
	return json.Marshal(m)
}

// MarshalJSON lays the phases out as top-level keys beside the score.
func (r Resilience) MarshalJSON() ([]byte, error) {
	m := map[string]any{
		"overall_resilience_score": r.Score,
		"score_formula":            r.ScoreFormula,
		"connection_pool_health":   r.PoolHealth,
		"checked_at":               r.CheckedAt,
	}
	for k, v := range r.Phases {
		m[k] = v
	}
	return json.Marshal(m)
}

// Resilience measures each phase from live evidence: the pool's counters
// and timestamps and a live check (Health, shared with the health endpoint).
func (s *IB) Resilience(ctx context.Context) Resilience {
	h := s.Health(ctx)
	p := s.Pool()
	return evaluate(p.Stats(), p.Config(), h, time.Now())
}

// evaluate is the pure scoring function, tested on constructed inputs.
func evaluate(st pool.Stats, cfg pool.Config, h Health, now time.Time) Resilience {
	// The health loop runs every interval ±10%; a round trip "in the last
	// health interval" may therefore be up to 1.1 intervals old, plus the
	// time the round trip itself may take.
	interval := cfg.HealthInterval + cfg.HealthInterval/10
	phases := map[string]Phase{
		PhaseValidation: validationPhase(st, cfg, interval, now),
		PhaseCollection: collectionPhase(st, cfg, interval, now),
		PhaseClientIDs:  clientIDPhase(st, cfg),
		PhaseLive:       livePhase(st, cfg, h),
	}
	healthy := 0
	for _, c := range st.Connections {
		if !c.LastAlive.IsZero() && now.Sub(c.LastAlive) <= interval+cfg.ValidationTimeout {
			healthy++
		}
	}
	return Resilience{Phases: phases, Score: Score(phases), ScoreFormula: ScoreFormula, CheckedAt: now,
		PoolHealth: PoolHealth{TotalConnections: st.Total, HealthyConnections: healthy, PoolUptimeSeconds: st.Uptime.Seconds()}}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Millisecond).String() + " ago"
}

func validationPhase(st pool.Stats, cfg pool.Config, interval time.Duration, now time.Time) Phase {
	ph := Phase{Fields: map[string]any{
		"validation_enabled":          true,
		"validation_method_exists":    true, // kept for the original response's consumers
		"validation_method":           "isConnected + reqCurrentTime round trip",
		"validation_timeout_seconds":  cfg.ValidationTimeout.Seconds(),
		"connect_timeout_seconds":     cfg.ConnectTimeout.Seconds(),
		"bypass_window_seconds":       cfg.ValidationBypass.Seconds(),
		"validations":                 st.Validations,
		"validation_failures":         st.ValidationFailures,
		"validations_bypassed":        st.ValidationsBypassed,
		"last_validation_ms":          durMS(st.ValidationLast),
		"p50_validation_ms":           durMS(st.ValidationP50),
		"p99_validation_ms":           durMS(st.ValidationP99),
		"last_successful_validation":  timePtr(st.LastValidationOK),
		"silent_connections_detected": st.SilentDetected,
	}}
	discarded := st.Removals[pool.ReasonFailedValidation] + st.Removals[pool.ReasonFailedHealth] + st.Removals[pool.ReasonSilentRequest]
	ph.Evidence = []string{
		fmt.Sprintf("last successful round trip %s (window %s)", ago(now, st.LastValidationOK), (interval + cfg.ValidationTimeout).Round(time.Millisecond)),
		fmt.Sprintf("%d validations, %d failed, p99 %s against a %s timeout", st.Validations, st.ValidationFailures, st.ValidationP99.Round(time.Microsecond), cfg.ValidationTimeout),
		fmt.Sprintf("%d silent connections detected, %d connections discarded after a failed round trip", st.SilentDetected, discarded),
	}
	switch {
	case st.LastValidationOK.IsZero():
		ph.Status, ph.Reason = Degraded, "no validation round trip has succeeded yet"
	case now.Sub(st.LastValidationOK) > interval+cfg.ValidationTimeout:
		ph.Status, ph.Reason = Failing, "no successful validation round trip in the last health interval"
	case discarded < st.SilentDetected:
		ph.Status, ph.Reason = Degraded, "a silent connection was detected but not discarded"
	default:
		// The p99 is evidence, not a rule: it spans the last 1024 round
		// trips, failed ones included, so it would keep a recovered pool
		// degraded for hours after a silent spell.
		ph.Status = Working
	}
	return ph
}

func collectionPhase(st pool.Stats, cfg pool.Config, interval time.Duration, now time.Time) Phase {
	ph := Phase{Fields: map[string]any{
		"max_idle_time_seconds":   cfg.IdleTimeout.Seconds(),
		"health_check_interval":   cfg.HealthInterval.Seconds(),
		"health_loop_runs":        st.HealthRuns,
		"health_loop_last_run":    timePtr(st.HealthLastRun),
		"health_loop_last_failed": st.HealthLastFailed,
		"idle_connections":        st.Idle,
		"min_idle":                st.MinIdle,
		"removed_idle":            st.Removals[pool.ReasonIdle],
		"removed_failed_health":   st.Removals[pool.ReasonFailedHealth],
	}}
	// An idle connection older than the idle timeout plus one loop period
	// should have been collected (unless it is one of the MinIdle kept warm).
	overdue := 0
	for _, c := range st.Connections {
		if !c.InUse && !c.IdleSince.IsZero() && now.Sub(c.IdleSince) > cfg.IdleTimeout+interval {
			overdue++
		}
	}
	overdue = max(0, overdue-st.MinIdle)
	ph.Evidence = []string{
		fmt.Sprintf("health loop last ran %s (every %s ±10%%), %d runs", ago(now, st.HealthLastRun), cfg.HealthInterval, st.HealthRuns),
		fmt.Sprintf("%d idle connections, %d overdue for collection, %d collected so far", st.Idle, overdue, st.Removals[pool.ReasonIdle]),
	}
	switch {
	case st.HealthLastRun.IsZero():
		ph.Status, ph.Reason = Degraded, "the health loop has not run yet"
	case now.Sub(st.HealthLastRun) > 2*interval+cfg.ValidationTimeout+cfg.ConnectTimeout:
		// Runs start an interval after the previous one ended; a run may
		// take a validation timeout, and the warm-up before it a connect.
		ph.Status, ph.Reason = Failing, "the health loop missed two intervals"
	case overdue > 0:
		ph.Status, ph.Reason = Degraded, fmt.Sprintf("%d idle connections outlived the idle timeout", overdue)
	default:
		ph.Status = Working
	}
	return ph
}

func clientIDPhase(st pool.Stats, cfg pool.Config) Phase {
	ph := Phase{Fields: map[string]any{
		"client_ids_in_use":          nonNil(st.ClientIDsInUse),
		"lowest_client_id_used":      st.LowestClientIDInUse,
		"lowest_free_client_id":      st.LowestFreeClientID,
		"client_ids_resting":         nonNil(st.ClientIDsResting),
		"client_id_conflicts":        st.ClientIDConflicts,
		"fallbacks_succeeded":        st.IDFallbacks,
		"fallbacks_exhausted":        st.IDFallbacksExhausted,
		"preferred_client_id":        st.ClientIDBase,
		"client_id_cooldown_seconds": cfg.ClientIDCooldown.Seconds(),
	}}
	ph.Evidence = []string{
		fmt.Sprintf("ids in use %v, lowest free %d, resting after 326 %v", nonNil(st.ClientIDsInUse), st.LowestFreeClientID, nonNil(st.ClientIDsResting)),
		fmt.Sprintf("%d client-id conflicts (326), %d connects succeeded on a fallback id, %d exhausted their attempts", st.ClientIDConflicts, st.IDFallbacks, st.IDFallbacksExhausted),
	}
	switch {
	case st.IDFallbacksExhausted > 0 && st.LastFallbackExhausted.After(st.LastConnect):
		ph.Status, ph.Reason = Failing, "the last connect ran out of client ids (every id tried was refused with 326)"
	case st.Total == 0:
		ph.Status, ph.Reason = Degraded, "no connection open: preference not shown"
	case st.LowestClientIDInUse > st.LowestFreeClientID:
		ph.Status, ph.Reason = Degraded, fmt.Sprintf("id %d is free but the lowest id in use is %d", st.LowestFreeClientID, st.LowestClientIDInUse)
	default:
		ph.Status = Working
	}
	return ph
}

func livePhase(st pool.Stats, cfg pool.Config, h Health) Phase {
	ph := Phase{Fields: map[string]any{
		"healthy":          h.Healthy,
		"connection_ok":    h.ConnectionOK,
		"data_fetching_ok": h.DataFetchingOK,
		"latency_ms":       h.LatencyMS,
		"checked_at":       h.CheckedAt,
		"error":            h.ErrorMessage,
		"breaker_state":    st.BreakerState,
		"degraded":         st.Degraded,
	}}
	ph.Evidence = []string{fmt.Sprintf("live check %s: acquire+validate %t, data request %t, %.1f ms",
		h.CheckedAt.Format(time.RFC3339Nano), h.ConnectionOK, h.DataFetchingOK, h.LatencyMS)}
	if st.Degraded {
		ph.Evidence = append(ph.Evidence, "gateway reported 1100 (connectivity to IB lost) without 1101/1102 since")
	}
	switch {
	case !h.ConnectionOK:
		ph.Status, ph.Reason = Failing, "no validated connection: "+h.ErrorMessage
	case !h.DataFetchingOK:
		ph.Status, ph.Reason = Degraded, "connected, but a data request failed: "+h.ErrorMessage
	case st.Degraded:
		ph.Status, ph.Reason = Degraded, "the gateway lost connectivity to IB (1100)"
	case h.LatencyMS > float64(cfg.ValidationTimeout.Milliseconds()):
		ph.Status, ph.Reason = Degraded, "the live check took longer than the validation timeout"
	default:
		ph.Status = Working
	}
	return ph
}
