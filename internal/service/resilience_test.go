package service

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/pool"
)

func healthyInputs(now time.Time) (pool.Stats, pool.Config, Health) {
	cfg := pool.Config{HealthInterval: time.Minute, IdleTimeout: 5 * time.Minute, ValidationTimeout: 3 * time.Second,
		ValidationBypass: time.Second, BreakerFailures: 3}
	st := pool.Stats{Total: 1, Idle: 1, MinIdle: 1, ClientIDsInUse: []int{1}, LowestClientIDInUse: 1, LowestFreeClientID: 2,
		ClientIDBase: 1, Validations: 10, ValidationP99: 2 * time.Millisecond, LastValidationOK: now.Add(-10 * time.Second),
		HealthRuns: 3, HealthLastRun: now.Add(-20 * time.Second), Removals: map[pool.Reason]int64{},
		Connections:  []pool.ConnInfo{{ClientID: 1, LastAlive: now.Add(-10 * time.Second), IdleSince: now.Add(-time.Second)}},
		BreakerState: "closed", Uptime: time.Hour}
	h := Health{Healthy: true, ConnectionOK: true, DataFetchingOK: true, LatencyMS: 2, CheckedAt: now}
	return st, cfg, h
}

func TestScoreHealthyIs100AndPhasesWork(t *testing.T) {
	now := time.Now()
	st, cfg, h := healthyInputs(now)
	r := evaluate(st, cfg, h, now)
	if r.Score != 100 {
		t.Fatalf("score %v: %+v", r.Score, r.Phases)
	}
	for k, p := range r.Phases {
		if p.Status != Working || len(p.Evidence) == 0 {
			t.Errorf("%s: %+v", k, p)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	p1 := m[PhaseValidation].(map[string]any)
	p2 := m[PhaseCollection].(map[string]any)
	p3 := m[PhaseClientIDs].(map[string]any)
	if p1["validation_enabled"] != true || p2["max_idle_time_seconds"] != 300.0 || p2["health_check_interval"] != 60.0 ||
		p3["lowest_client_id_used"] != 1.0 || m["overall_resilience_score"] != 100.0 {
		t.Fatalf("original fields missing: %s", b)
	}
	if m["connection_pool_health"].(map[string]any)["healthy_connections"] != 1.0 {
		t.Fatalf("pool health: %s", b)
	}
}

func TestScoreDropsBelow75WhenGatewayFails(t *testing.T) {
	now := time.Now()
	st, cfg, h := healthyInputs(now)
	h = Health{ConnectionOK: false, ErrorMessage: "circuit open", CheckedAt: now}
	r := evaluate(st, cfg, h, now)
	if r.Score >= 75 || r.Phases[PhaseLive].Status != Failing {
		t.Fatalf("score %v live %+v", r.Score, r.Phases[PhaseLive])
	}
}

func TestPhaseRules(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		mutate func(*pool.Stats, *Health)
		phase  string
		want   string
	}{
		{"no validation ever", func(s *pool.Stats, _ *Health) { s.LastValidationOK = time.Time{} }, PhaseValidation, Degraded},
		{"stale validation", func(s *pool.Stats, _ *Health) { s.LastValidationOK = now.Add(-5 * time.Minute) }, PhaseValidation, Failing},
		{"silent not discarded", func(s *pool.Stats, _ *Health) { s.SilentDetected = 1 }, PhaseValidation, Degraded},
		{"silent discarded", func(s *pool.Stats, _ *Health) {
			s.SilentDetected = 1
			s.Removals[pool.ReasonFailedValidation] = 1
		}, PhaseValidation, Working},
		{"loop never ran", func(s *pool.Stats, _ *Health) { s.HealthLastRun = time.Time{} }, PhaseCollection, Degraded},
		{"loop missed two intervals", func(s *pool.Stats, _ *Health) { s.HealthLastRun = now.Add(-3 * time.Minute) }, PhaseCollection, Failing},
		{"idle overdue", func(s *pool.Stats, _ *Health) {
			s.MinIdle = 0
			s.Connections[0].IdleSince = now.Add(-10 * time.Minute)
		}, PhaseCollection, Degraded},
		{"no connections", func(s *pool.Stats, _ *Health) { s.Total = 0; s.ClientIDsInUse = nil }, PhaseClientIDs, Degraded},
		{"lower id free", func(s *pool.Stats, _ *Health) { s.LowestClientIDInUse = 3; s.LowestFreeClientID = 1 }, PhaseClientIDs, Degraded},
		{"fallback after 326", func(s *pool.Stats, _ *Health) {
			s.LowestClientIDInUse, s.LowestFreeClientID, s.ClientIDConflicts, s.IDFallbacks = 3, 4, 2, 1
		}, PhaseClientIDs, Working},
		{"ids exhausted", func(s *pool.Stats, _ *Health) {
			s.IDFallbacksExhausted, s.LastFallbackExhausted, s.LastConnect = 1, now, now.Add(-time.Minute)
		}, PhaseClientIDs, Failing},
		{"data failing", func(_ *pool.Stats, h *Health) { h.DataFetchingOK, h.Healthy = false, false }, PhaseLive, Degraded},
		{"1100", func(s *pool.Stats, _ *Health) { s.Degraded = true }, PhaseLive, Degraded},
	}
	for _, c := range cases {
		st, cfg, h := healthyInputs(now)
		c.mutate(&st, &h)
		r := evaluate(st, cfg, h, now)
		if got := r.Phases[c.phase]; got.Status != c.want || (c.want != Working && got.Reason == "") {
			t.Errorf("%s: %s = %+v, want %s", c.name, c.phase, got, c.want)
		}
		if want := Score(r.Phases); r.Score != want {
			t.Errorf("%s: score %v != formula %v", c.name, r.Score, want)
		}
	}
}
