package loader

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/internal/pacing"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/internal/store"
	"github.com/ktrdr/ktrdr/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// simNow is the simulator's and the loader's clock in these tests: a
// Friday evening after the US close, so every range is history and the
// bars are a pure function of the seed.
var simNow = time.Date(2024, 6, 14, 21, 30, 0, 0, time.UTC)

const testSeed = 3

type envOptions struct {
	// scale is the simulator's time scale and the scheduler's; default 1.
	scale float64
	// wrap wraps the store the loader writes to.
	wrap func(store.Store) store.Store
	cfg  func(*Config)
}

// env is a loader in front of a real simulator, a real pool and a real
// SQLite file.
type env struct {
	sim   *ibsim.Server
	svc   *service.IB
	st    store.Store
	sched *pacing.Scheduler
	ld    *Loader
	scale float64
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.scale <= 0 {
		o.scale = 1
	}
	sim, err := ibsim.Start(ibsim.Config{Seed: testSeed, TimeScale: o.scale, Now: func() time.Time { return simNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	rate := int(float64(client.DefaultMaxRate) * o.scale)
	svc, err := service.New(service.Options{
		Gateway: service.GatewayConfig{Host: "127.0.0.1", Port: sim.Port(), ClientIDBase: 1},
		Pool: pool.Config{
			HealthInterval: 200 * time.Millisecond, ValidationTimeout: 250 * time.Millisecond, ConnectTimeout: 500 * time.Millisecond,
			BreakerProbeInterval: 100 * time.Millisecond, ClientIDPause: 10 * time.Millisecond, ClientIDCooldown: time.Second,
			// The client's own message pacing is real time; the simulator's
			// is divided by its scale, and so must the client's be.
			Dial: func(ctx context.Context, c client.Config) (*client.Conn, error) {
				c.MaxRate = rate
				return client.Dial(ctx, c)
			},
		},
		DataDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	sq, err := store.OpenSQLite(filepath.Join(t.TempDir(), "bars.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	var st store.Store = sq
	if o.wrap != nil {
		st = o.wrap(sq)
	}
	sched := pacing.New(pacing.Config{Scale: o.scale, Clock: PacingClock(PacingMargin(o.scale))})
	cfg := Config{Gateway: svc, Store: st, Pacing: sched, Scale: o.scale, Now: func() time.Time { return simNow },
		RequestTimeout: 2 * time.Second, MaxAttempts: 8, BackoffBase: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	ld, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Close() })
	return &env{sim: sim, svc: svc, st: sq, sched: sched, ld: ld, scale: o.scale}
}

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// load runs a load to its end and fails the test unless it completed.
func (e *env) load(t testing.TB, r Request) Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op, err := e.ld.Load(ctx, r)
	if err != nil {
		t.Fatalf("load %+v: %v", r, err)
	}
	if op.Status != StatusCompleted {
		t.Fatalf("load %+v: %s: %s\nerrors %+v", r, op.Status, op.Error, op.Errors)
	}
	return op
}

// oracle is what the simulator defines for [start, end): its history,
// asked in windows of its own choosing (aligned on UTC midnight, as long
// as the step-size table allows), not the loader's segments.
func oracle(t testing.TB, conID int64, tf Timeframe, start, end time.Time) []store.Bar {
	t.Helper()
	in := catalogInstrument(t, conID)
	what := "TRADES"
	if in.SecType == "CASH" {
		what = "MIDPOINT"
	}
	bs, err := ibsim.ParseBarSize(tf.BarSize)
	if err != nil {
		t.Fatal(err)
	}
	window := time.Duration(min(tf.maxS, 86400)) * time.Second
	duration := func(w0, w1 time.Time) string { return fmt.Sprintf("%d S", int(w1.Sub(w0).Seconds())) }
	if tf.Daily {
		window = end.Sub(start)
		duration = func(w0, w1 time.Time) string { return fmt.Sprintf("%d D", int(w1.Sub(w0).Hours()/24)+2) }
	}
	var out []store.Bar
	for w0 := start; w0.Before(end); w0 = w0.Add(window) {
		w1 := earlier(w0.Add(window), end)
		res, err := ibsim.History{Seed: testSeed}.Bars(ibsim.HistoryQuery{Inst: in, End: w1, Now: simNow,
			Duration: duration(w0, w1), BarSize: tf.BarSize, WhatToShow: what, UseRTH: true})
		var re *ibsim.RequestError
		if errors.As(err, &re) && strings.Contains(re.Msg, "returned no data") {
			continue
		}
		if err != nil {
			t.Fatalf("oracle %s..%s: %v", w0, w1, err)
		}
		for _, b := range res.Bars {
			k := b.Time
			if tf.Daily {
				if k, err = parseBarTime(ibsim.FormatBarTime(b.Time, bs, 2, in), true, in.Location()); err != nil {
					t.Fatal(err)
				}
			}
			if k.Before(w0) || !k.Before(w1) {
				continue
			}
			out = append(out, store.Bar{Time: k.UTC(), Open: b.Open, High: b.High, Low: b.Low, Close: b.Close,
				Volume: b.Volume, WAP: b.WAP, Count: b.Count})
		}
	}
	return out
}

// sameBars compares stored bars with the oracle's, bar by bar.
func sameBars(t testing.TB, what string, got, want []store.Bar) {
	t.Helper()
	for i := 1; i < len(got); i++ {
		if !got[i].Time.After(got[i-1].Time) {
			t.Fatalf("%s: bars %d and %d out of order or duplicated: %s, %s", what, i-1, i, got[i-1].Time, got[i].Time)
		}
	}
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			t.Fatalf("%s: bar %d differs:\n got %+v\nwant %+v", what, i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d bars stored, the simulator defines %d (first extra/missing at %d)", what, len(got), len(want), n)
	}
}

// consistent checks that every stored bar in [start, end) is the
// simulator's bar for that time, without requiring every bar to be there.
func consistent(t testing.TB, what string, got, want []store.Bar) {
	t.Helper()
	byTime := make(map[time.Time]store.Bar, len(want))
	for _, b := range want {
		byTime[b.Time] = b
	}
	for i, b := range got {
		if i > 0 && !b.Time.After(got[i-1].Time) {
			t.Fatalf("%s: bars out of order or duplicated at %s", what, b.Time)
		}
		if w, ok := byTime[b.Time]; !ok || w != b {
			t.Fatalf("%s: stored bar %+v is not the simulator's (%+v, %t)", what, b, w, ok)
		}
	}
}

func (e *env) stored(t testing.TB, key string, tf Timeframe, start, end time.Time) []store.Bar {
	t.Helper()
	bars, err := e.st.Bars(context.Background(), key, tf.Name, start, end, 0)
	if err != nil {
		t.Fatal(err)
	}
	return bars
}

func mustTF(t testing.TB, s string) Timeframe {
	t.Helper()
	tf, err := ParseTimeframe(s)
	if err != nil {
		t.Fatal(err)
	}
	return tf
}

func TestLoadStoresExactlyTheSimulatorsBars(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct {
		symbol, key string
		conID       int64
		tf          string
		start, end  time.Time
		minSegments int
	}{
		// Three months of hourly bars across the spring daylight-saving change: "1 M" requests.
		{"AAPL", "AAPL", conAAPL, "1h", day(2024, 3, 1), day(2024, 6, 1), 4},
		// Three weeks of 5 minute FX bars, sessions crossing midnight: "1 W" requests.
		{"EURUSD", "EUR.USD", conEURUSD, "5m", day(2024, 3, 4), day(2024, 3, 25), 3},
		// Two weeks of minute bars: one request per session.
		{"AAPL", "AAPL", conAAPL, "1 min", day(2024, 5, 27), day(2024, 6, 11), 10},
		// Eighteen months of daily bars: two "N D" requests.
		{"EUR.USD", "EUR.USD", conEURUSD, "1d", day(2023, 1, 1), day(2024, 6, 1), 2},
	}
	for _, c := range cases {
		t.Run(c.symbol+" "+c.tf, func(t *testing.T) {
			tf := mustTF(t, c.tf)
			op := e.load(t, Request{Symbol: c.symbol, Timeframe: c.tf, Mode: ModeFull, Start: c.start, End: c.end})
			pr := op.Progress
			if op.Symbol != c.key || pr.SegmentsTotal < c.minSegments || pr.SegmentsDone != pr.SegmentsTotal || pr.SegmentsSkipped != 0 ||
				pr.Requests != pr.SegmentsTotal || pr.Retries != 0 || pr.BarsStored != pr.BarsFetched || pr.BarsFetched != pr.BarsExpected {
				t.Fatalf("first load: %+v", op)
			}
			want := oracle(t, c.conID, tf, c.start, c.end)
			if len(want) < 100 {
				t.Fatalf("the simulator defines only %d bars", len(want))
			}
			t.Logf("%d segments, %d bars", pr.SegmentsTotal, len(want))
			sameBars(t, c.symbol+" "+c.tf, e.stored(t, c.key, tf, time.Time{}, time.Time{}), want)
			if len(want) != pr.BarsStored {
				t.Fatalf("stored %d bars, the simulator defines %d", pr.BarsStored, len(want))
			}

			// Everything is stored: a second load asks IB for nothing.
			again := e.load(t, Request{Symbol: c.symbol, Timeframe: c.tf, Mode: ModeFull, Start: c.start, End: c.end})
			if p := again.Progress; p.Requests != 0 || p.SegmentsSkipped != p.SegmentsTotal || p.SegmentsTotal != pr.SegmentsTotal || p.BarsStored != 0 {
				t.Fatalf("second load fetched again: %+v", p)
			}
		})
	}
}

func TestTailAndBackfill(t *testing.T) {
	e := newEnv(t, envOptions{})
	tf := mustTF(t, "1h")
	want := oracle(t, conAAPL, tf, day(2024, 3, 1), day(2024, 6, 1))
	in := func(from, to time.Time) int {
		n := 0
		for _, b := range want {
			if !b.Time.Before(from) && b.Time.Before(to) {
				n++
			}
		}
		return n
	}

	// An empty store: tail loads the range.
	op := e.load(t, Request{Symbol: "AAPL", Timeframe: "1h", Mode: ModeTail, Start: day(2024, 4, 1), End: day(2024, 5, 1)})
	if op.Progress.BarsStored != in(day(2024, 4, 1), day(2024, 5, 1)) {
		t.Fatalf("tail on an empty store: %+v", op.Progress)
	}
	last := e.stored(t, "AAPL", tf, time.Time{}, time.Time{})
	lastBar := last[len(last)-1].Time

	// Tail continues after the last bar, whatever start says.
	op = e.load(t, Request{Symbol: "AAPL", Timeframe: "1h", Mode: ModeTail, Start: day(2024, 3, 1), End: day(2024, 6, 1)})
	if op.Start == nil || !op.Start.Equal(lastBar.Add(time.Second)) {
		t.Fatalf("tail started at %v, want just after the last bar %s", op.Start, lastBar)
	}
	if op.Progress.BarsFetched != in(lastBar.Add(time.Second), day(2024, 6, 1)) || op.Progress.BarsStored != op.Progress.BarsFetched {
		t.Fatalf("tail fetched %d bars, %d stored; %d are after the last bar", op.Progress.BarsFetched, op.Progress.BarsStored,
			in(lastBar.Add(time.Second), day(2024, 6, 1)))
	}

	// Backfill fills before the first bar, and only that.
	op = e.load(t, Request{Symbol: "AAPL", Timeframe: "1h", Mode: ModeBackfill, Start: day(2024, 3, 1)})
	if op.End == nil || !op.End.Equal(day(2024, 4, 1).Add(13*time.Hour+30*time.Minute)) {
		t.Fatalf("backfill ended at %v, want the first stored bar (April 1 09:30 New York)", op.End)
	}
	if op.Progress.BarsFetched != in(day(2024, 3, 1), day(2024, 4, 1)) {
		t.Fatalf("backfill fetched %d bars, %d are before the first", op.Progress.BarsFetched, in(day(2024, 3, 1), day(2024, 4, 1)))
	}
	sameBars(t, "after tail and backfill", e.stored(t, "AAPL", tf, time.Time{}, time.Time{}), want)

	// Nothing left to do either way.
	for _, m := range []Mode{ModeTail, ModeBackfill} {
		op = e.load(t, Request{Symbol: "AAPL", Timeframe: "1h", Mode: m, Start: day(2024, 3, 1), End: day(2024, 6, 1)})
		if op.Progress.Requests != 0 {
			t.Fatalf("%s with everything stored made %d requests", m, op.Progress.Requests)
		}
	}

	// The range endpoint's view: no gaps in a series loaded whole.
	ri, err := e.ld.Range(context.Background(), "AAPL", "1h")
	if err != nil {
		t.Fatal(err)
	}
	if ri.Count != len(want) || ri.Gaps != 0 || ri.Missing != 0 || ri.Expected != len(want) || !ri.First.Equal(want[0].Time) {
		t.Fatalf("range %+v, want %d bars without gaps", ri, len(want))
	}
}

// gateStore blocks the upsert after the first n until released, so a test
// can act at a known point of a load.
type gateStore struct {
	store.Store
	n       int
	calls   atomic.Int32
	reached chan struct{}
	release chan struct{}
}

func newGate(n int) *gateStore {
	return &gateStore{n: n, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateStore) Upsert(ctx context.Context, symbol, timeframe string, bars []store.Bar) (int, error) {
	if int(g.calls.Add(1)) == g.n+1 {
		close(g.reached)
		select {
		case <-g.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return g.Store.Upsert(ctx, symbol, timeframe, bars)
}

func (g *gateStore) wait(t testing.TB) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the load never reached the gate")
	}
}

func TestLoadUnderFaults(t *testing.T) {
	tf := mustTF(t, "1m")
	start, end := day(2024, 6, 3), day(2024, 6, 13)
	want := oracle(t, conAAPL, tf, start, end)
	faults := []struct {
		name string
		add  func(*ibsim.Server) error
	}{
		{"silent", func(s *ibsim.Server) error {
			_, err := s.AddFault(&ibsim.Silent{}, ibsim.For(time.Second))
			return err
		}},
		{"drop", func(s *ibsim.Server) error { _, err := s.AddFault(&ibsim.Drop{}); return err }},
		{"restart", func(s *ibsim.Server) error { _, err := s.AddFault(&ibsim.Restart{DownMS: 700}); return err }},
		{"connectivity_loss", func(s *ibsim.Server) error {
			_, err := s.AddFault(&ibsim.ConnectivityLoss{}, ibsim.For(time.Second))
			return err
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			gate := newGate(2)
			e := newEnv(t, envOptions{wrap: func(s store.Store) store.Store { gate.Store = s; return gate },
				cfg: func(c *Config) { c.RequestTimeout = 700 * time.Millisecond }})
			done := make(chan Operation, 1)
			go func() {
				op, err := e.ld.Load(context.Background(), Request{Symbol: "AAPL", Timeframe: "1m", Mode: ModeFull, Start: start, End: end})
				if err != nil {
					t.Error(err)
				}
				done <- op
			}()
			gate.wait(t)
			if err := f.add(e.sim); err != nil {
				t.Fatal(err)
			}
			close(gate.release)
			var op Operation
			select {
			case op = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("the load did not end within 60s")
			}
			got := e.stored(t, "AAPL", tf, time.Time{}, time.Time{})
			consistent(t, f.name, got, want)
			switch op.Status {
			case StatusCompleted:
				sameBars(t, f.name, got, want)
			case StatusFailed:
				// Allowed, if it says why.
				if !strings.Contains(op.Error, "segment") || len(op.Errors) == 0 {
					t.Fatalf("failed without a clear error: %+v", op)
				}
			default:
				t.Fatalf("status %s: %+v", op.Status, op)
			}
			t.Logf("%s: %s after %d requests, %d retries; %d of %d bars; errors: %d", f.name, op.Status,
				op.Progress.Requests, op.Progress.Retries, len(got), len(want), len(op.Errors))
			for _, x := range op.Errors {
				t.Logf("  %s attempt %d: %s", x.Kind, x.Attempt, x.Message)
			}
			// A load repeated after the fault completes the series.
			if op.Status != StatusCompleted {
				e.load(t, Request{Symbol: "AAPL", Timeframe: "1m", Mode: ModeFull, Start: start, End: end})
				sameBars(t, f.name+", loaded again", e.stored(t, "AAPL", tf, time.Time{}, time.Time{}), want)
			}
		})
	}
}

func TestCancelMidLoad(t *testing.T) {
	tf := mustTF(t, "1m")
	start, end := day(2024, 6, 3), day(2024, 6, 13)
	gate := newGate(3)
	e := newEnv(t, envOptions{wrap: func(s store.Store) store.Store { gate.Store = s; return gate }})
	op, err := e.ld.Start(context.Background(), Request{Symbol: "AAPL", Timeframe: "1m", Mode: ModeFull, Start: start, End: end})
	if err != nil || op.Status != StatusRunning || op.ID == "" {
		t.Fatalf("start: %+v, %v", op, err)
	}
	gate.wait(t) // the fourth segment is fetched and waits to be stored
	if _, err := e.ld.Start(context.Background(), Request{Symbol: "AAPL", Timeframe: "1 min"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second load of the same series: %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	op, err = e.ld.Cancel(ctx, op.ID)
	if err != nil || op.Status != StatusCancelled || op.Error != "cancelled by request" || op.FinishedAt == nil {
		t.Fatalf("cancel: %+v, %v", op, err)
	}
	if op.Progress.SegmentsDone != 3 || op.Progress.Requests != 4 {
		t.Fatalf("cancelled after %d segments and %d requests, want 3 and 4", op.Progress.SegmentsDone, op.Progress.Requests)
	}
	// Three whole sessions stored, nothing of the fourth.
	got := e.stored(t, "AAPL", tf, time.Time{}, time.Time{})
	sameBars(t, "after cancel", got, oracle(t, conAAPL, tf, start, day(2024, 6, 6)))
	if again, _ := e.ld.Cancel(ctx, op.ID); again.Status != StatusCancelled {
		t.Fatalf("cancelling twice: %+v", again)
	}
	list := e.ld.Operations()
	if len(list) != 1 || list[0].ID != op.ID {
		t.Fatalf("operations: %+v", list)
	}
	if _, err := e.ld.Operation("op_nope"); !errors.Is(err, ErrNoOperation) {
		t.Fatalf("unknown operation: %v", err)
	}
	// The load can be finished later.
	e.load(t, Request{Symbol: "AAPL", Timeframe: "1m", Mode: ModeFull, Start: start, End: end})
	sameBars(t, "finished later", e.stored(t, "AAPL", tf, time.Time{}, time.Time{}), oracle(t, conAAPL, tf, start, end))
}

// TestCancelStopsAtOnce cancels a load whose request the gateway never
// answers: the cancellation must not wait for the request's timeout.
func TestCancelStopsAtOnce(t *testing.T) {
	e := newEnv(t, envOptions{cfg: func(c *Config) { c.RequestTimeout = 30 * time.Second }})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.svc.Discover(ctx, "AAPL", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.AddFault(&ibsim.Silent{}); err != nil {
		t.Fatal(err)
	}
	// The pool hands out a connection proven alive within the last second
	// without asking the gateway; the request itself then goes unanswered.
	op, err := e.ld.Start(ctx, Request{Symbol: "AAPL", Timeframe: "1h", Mode: ModeFull, Start: day(2024, 5, 1), End: day(2024, 6, 1)})
	if err != nil {
		t.Fatal(err)
	}
	for {
		cur, _ := e.ld.Operation(op.ID)
		if cur.Progress.Requests > 0 || cur.Status != StatusRunning {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no request sent: %+v", cur)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now()
	op, err = e.ld.Cancel(ctx, op.ID)
	if took := time.Since(t0); err != nil || op.Status != StatusCancelled || took > time.Second {
		t.Fatalf("cancel took %s: %+v, %v", took, op, err)
	}
	e.sim.ClearFaults()
}

// TestPacingKeepsTheGatewayHappy runs two small-bar loads of one contract
// at once, more requests between them than the ten-minute rule allows,
// with the simulator running 50 times faster and the scheduler scaled to
// match: the rules bind (requests wait) and the gateway never answers a
// pacing violation. (At 50 the scaled ten-minute window, 12 s, is long
// enough for the 61st request to come before it ends even when the race
// detector slows the store tenfold, so the rule binds in every build.)
func TestPacingKeepsTheGatewayHappy(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the scaled ten-minute window")
	}
	e := newEnv(t, envOptions{scale: 50})
	start, end := day(2024, 5, 1), day(2024, 5, 31) // 22 sessions
	loads := []struct {
		tf       string
		segments int
	}{{"30s", 22}, {"10s", 44}} // 30 secs: a session a request; 10 secs: half a session
	ops := make([]Operation, len(loads))
	errs := make(chan error, len(loads))
	for i, l := range loads {
		go func() {
			op, err := e.ld.Load(context.Background(), Request{Symbol: "AAPL", Timeframe: l.tf, Mode: ModeFull, Start: start, End: end})
			ops[i] = op
			errs <- err
		}()
	}
	for range loads {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	requests := 0
	for i, l := range loads {
		op := ops[i]
		if op.Status != StatusCompleted || op.Progress.Requests != l.segments || op.Progress.PacingViolations != 0 {
			t.Fatalf("%s: %s after %d requests (want %d), %d violations: %s", l.tf, op.Status, op.Progress.Requests, l.segments,
				op.Progress.PacingViolations, op.Error)
		}
		requests += op.Progress.Requests
		tf := mustTF(t, l.tf)
		sameBars(t, l.tf, e.stored(t, "AAPL", tf, time.Time{}, time.Time{}), oracle(t, conAAPL, tf, start, end))
		t.Logf("%s: %d requests in %.2fs, %d waited %.2fs in all", l.tf, op.Progress.Requests, op.Progress.ElapsedSeconds,
			op.Progress.PacingWaits, op.Progress.PacingWaitSeconds)
	}
	if v := e.sim.State().Counters.PacingViolations; v != 0 {
		t.Fatalf("the gateway answered %d pacing violations", v)
	}
	st := e.sched.Stats()
	t.Logf("scheduler waits by rule %v, longest %s; same-contract spacing waits %d", st.WaitsByRule, st.MaxWait, e.ld.Stats().SpacingWaits)
	if requests <= pacing.TenMinuteLimit {
		t.Fatalf("only %d requests: the ten-minute rule cannot bind", requests)
	}
	if st.WaitsByRule[pacing.RuleTenMinutes] == 0 {
		// Every request took so long (a machine busy with other work, the
		// race detector) that 61 never fell within the scaled window.
		t.Skipf("no violation, but the ten-minute rule did not bind: %d requests took %.1fs", requests, ops[1].Progress.ElapsedSeconds)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for _, c := range []struct {
		r     Request
		field string
	}{
		{Request{Timeframe: "1h"}, "symbol"},
		{Request{Symbol: "AAPL", Timeframe: "7m"}, "timeframe"},
		{Request{Symbol: "AAPL", Timeframe: "1h", Mode: "sideways"}, "mode"},
		{Request{Symbol: "AAPL", Timeframe: "1h", Start: day(2024, 2, 1), End: day(2024, 1, 1)}, "end_date"},
	} {
		_, err := e.ld.Start(ctx, c.r)
		var se *service.Error
		if !errors.As(err, &se) || !errors.Is(err, service.ErrInvalid) || se.Details["field"] != c.field {
			t.Errorf("%+v: %v, want invalid %s", c.r, err, c.field)
		}
	}
	if _, err := e.ld.Start(ctx, Request{Symbol: "ZZZZZZ", Timeframe: "1h"}); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("unknown symbol: %v", err)
	}
	// A range after the last complete bar, or before the head: nothing to do.
	op := e.load(t, Request{Symbol: "AAPL", Timeframe: "1h", Mode: ModeFull, Start: simNow.Add(-time.Minute)})
	if op.Progress.SegmentsTotal != 0 || op.Note == "" || op.Progress.Percent != 100 {
		t.Fatalf("empty range: %+v", op)
	}
}

func TestCloseStopsRunningLoads(t *testing.T) {
	e := newEnv(t, envOptions{cfg: func(c *Config) { c.RequestTimeout = 30 * time.Second }})
	ctx := context.Background()
	if _, err := e.svc.Discover(ctx, "AAPL", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.AddFault(&ibsim.Silent{}); err != nil {
		t.Fatal(err)
	}
	op, err := e.ld.Start(ctx, Request{Symbol: "AAPL", Timeframe: "1h", Mode: ModeFull, Start: day(2024, 5, 1), End: day(2024, 6, 1)})
	if err != nil {
		t.Fatal(err)
	}
	for {
		cur, _ := e.ld.Operation(op.ID)
		if cur.Progress.Requests > 0 || cur.Status != StatusRunning {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now()
	e.ld.Close()
	got, _ := e.ld.Operation(op.ID)
	if took := time.Since(t0); took > 2*time.Second || got.Status != StatusCancelled || !strings.Contains(got.Error, "shutting down") {
		t.Fatalf("close took %s: %+v", took, got)
	}
	if _, err := e.ld.Start(ctx, Request{Symbol: "AAPL", Timeframe: "1h"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("start after close: %v", err)
	}
	e.sim.ClearFaults()
}

func TestFinishedOperationsAreBounded(t *testing.T) {
	e := newEnv(t, envOptions{cfg: func(c *Config) { c.KeepFinished = 2 }})
	var ids []string
	for range 3 {
		op := e.load(t, Request{Symbol: "AAPL", Timeframe: "1d", Mode: ModeFull, Start: simNow.Add(-time.Hour)})
		ids = append(ids, op.ID)
	}
	list := e.ld.Operations()
	if len(list) != 2 || list[0].ID != ids[2] || list[1].ID != ids[1] {
		t.Fatalf("kept %+v, want the last two of %v, newest first", list, ids)
	}
	if _, err := e.ld.Operation(ids[0]); !errors.Is(err, ErrNoOperation) {
		t.Fatalf("the oldest is still there: %v", err)
	}
	for in, want := range map[string]Mode{"": ModeTail, "TAIL": ModeTail, "backfill": ModeBackfill, " full ": ModeFull} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, m, err)
		}
	}
}

func TestClassify(t *testing.T) {
	hmds := func(text string) error {
		return &client.IBError{Code: 162, Text: "Historical Market Data Service error message:" + text}
	}
	for _, c := range []struct {
		err  error
		want failKind
	}{
		{hmds("Historical data request pacing violation"), failPacing},
		{hmds("HMDS query returned no data: AAPL@SMART Last"), failNoData},
		{hmds("HMDS server disconnect occurred.  Attempting reconnection..."), failTransient},
		{hmds("HMDS data farm connection is broken:ushmds"), failTransient},
		{hmds("API historical data query cancelled: 7"), failTransient},
		{hmds("No market data permissions for NYSE STK"), failPermanent},
		{hmds("invalid step: 1"), failPermanent},
		{&client.IBError{Code: 200, Text: "No security definition has been found for the request"}, failPermanent},
		{&client.IBError{Code: 321, Text: "Error validating request"}, failPermanent},
		{&client.IBError{Code: 366, Text: "No historical data query found"}, failTransient},
		{fmt.Errorf("read: %w", client.ErrConnectionLost), failTransient},
		{&client.TimeoutError{Op: "reqHistoricalData", After: time.Second, Err: context.DeadlineExceeded}, failTransient},
		{&pool.AcquireError{Stage: pool.StageConnecting, Err: pool.ErrCircuitOpen}, failTransient},
		{&pool.AcquireError{Stage: pool.StageValidating, Err: pool.ErrSilentGateway}, failTransient},
		{pool.ErrClosed, failTransient},
		{errors.New("something else"), failPermanent},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// TestPacingViolationBacksOff runs a second loader with a scheduler of
// its own against the same gateway, as another application would: the
// gateway answers pacing violations, and each load backs off (the
// scheduler's penalty), counts them, retries and completes.
func TestPacingViolationBacksOff(t *testing.T) {
	e := newEnv(t, envOptions{scale: 50})
	sq, err := store.OpenSQLite(filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	otherSched := pacing.New(pacing.Config{Scale: 50, Clock: PacingClock(PacingMargin(50))})
	other, err := New(Config{Gateway: e.svc, Store: sq, Pacing: otherSched, Scale: 50, Now: func() time.Time { return simNow },
		RequestTimeout: 2 * time.Second, BackoffBase: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	if _, err := e.svc.Discover(ctx, "AAPL", false); err != nil { // once, before the two loads look it up
		t.Fatal(err)
	}
	req := Request{Symbol: "AAPL", Timeframe: "30s", Mode: ModeFull, Start: day(2024, 4, 1), End: day(2024, 4, 20)}
	var ops [2]Operation
	errs := make(chan error, 2)
	for i, ld := range []*Loader{e.ld, other} {
		go func() {
			var err error
			ops[i], err = ld.Load(ctx, req)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for i, op := range ops {
		if op.Status != StatusCompleted {
			t.Fatalf("load %d: %s: %s", i, op.Status, op.Error)
		}
		seen += op.Progress.PacingViolations
	}
	gateway := e.sim.State().Counters.PacingViolations
	if gateway == 0 {
		t.Skip("the two loads never collided")
	}
	if int64(seen) != gateway || e.sched.Stats().Penalties+otherSched.Stats().Penalties != gateway ||
		e.ld.Stats().PacingViolations+other.Stats().PacingViolations != gateway {
		t.Fatalf("gateway answered %d violations, the loads saw %d, penalties %d+%d", gateway, seen,
			e.sched.Stats().Penalties, otherSched.Stats().Penalties)
	}
	tf := mustTF(t, "30s")
	want := oracle(t, conAAPL, tf, req.Start, req.End)
	sameBars(t, "this application", e.stored(t, "AAPL", tf, time.Time{}, time.Time{}), want)
	got, err := sq.Bars(ctx, "AAPL", "30s", time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameBars(t, "the other application", got, want)
	t.Logf("%d violations, retried after the penalty; %d and %d requests", gateway, ops[0].Progress.Requests, ops[1].Progress.Requests)
}
