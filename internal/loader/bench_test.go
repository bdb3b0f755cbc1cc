package loader

import (
	"context"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/internal/pacing"
)

// BenchmarkPacedLoad measures a load whose pace IB's rules set: 30 secs
// bars of AAPL, one request per session, 88 sessions, so that the
// ten-minute rule holds the 61st request back until the 1st has aged out.
// The simulator runs 50 times faster and the scheduler is scaled to match.
//
// It reports the load's wall time against pacing.MinimumDuration of the
// same request sequence (the fastest any client keeping to the rules
// could send them; the goal is within 5 %), the pacing violations the
// gateway answered (must be 0) and the bars per second into the store.
//
//	go test -run '^$' -bench BenchmarkPacedLoad -benchtime 1x ./internal/loader/
func BenchmarkPacedLoad(b *testing.B) {
	const scale = 50
	req := Request{Symbol: "AAPL", Timeframe: "30s", Mode: ModeFull, Start: day(2024, 1, 8), End: day(2024, 5, 11)}
	var elapsed, floor time.Duration
	var bars, violations int64
	var requests int
	for range b.N {
		b.StopTimer()
		e := newEnv(b, envOptions{scale: scale})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		pl, err := e.ld.Plan(ctx, req) // also warms the symbol cache
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		op, err := e.ld.Load(ctx, req)
		took := time.Since(t0)
		b.StopTimer()
		cancel()
		if err != nil || op.Status != StatusCompleted {
			b.Fatalf("load: %v %+v", err, op)
		}
		if op.Progress.Requests != len(pl.Requests) {
			b.Fatalf("the load made %d requests, the plan %d: %+v", op.Progress.Requests, len(pl.Requests), op)
		}
		elapsed += took
		floor += pacing.MinimumDuration(pl.Requests, pacing.Config{Scale: scale})
		bars += int64(op.Progress.BarsStored)
		violations += e.sim.State().Counters.PacingViolations
		requests += op.Progress.Requests
	}
	b.ReportMetric(elapsed.Seconds()/floor.Seconds(), "elapsed/min")
	b.ReportMetric(elapsed.Seconds()/float64(b.N), "elapsed_s")
	b.ReportMetric(floor.Seconds()/float64(b.N), "min_s")
	b.ReportMetric(float64(violations), "violations")
	b.ReportMetric(float64(requests)/float64(b.N), "requests")
	b.ReportMetric(float64(bars)/elapsed.Seconds(), "bars/s")
}
