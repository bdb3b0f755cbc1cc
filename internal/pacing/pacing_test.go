package pacing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2024, 3, 4, 15, 0, 0, 0, time.UTC)

// req is a 5-second-bar request; n makes it distinct from others of the
// same contract (IB compares the whole request for the identical rule).
func req(contract, what string, n int) Request {
	return Request{Contract: contract, Exchange: "SMART", WhatToShow: what,
		End: fmt.Sprintf("20240304 15:%02d:00 UTC", n), Duration: "1800 S", BarSize: "5 secs"}
}

func newTest(cfg Config) (*Scheduler, *fakeClock) {
	clk := newFakeClock(t0)
	cfg.Clock = clk
	return New(cfg), clk
}

// mustPass asserts r is granted without waiting.
func mustPass(t *testing.T, s *Scheduler, r Request) {
	t.Helper()
	waited, err := s.Wait(context.Background(), r)
	if err != nil || waited != 0 {
		t.Fatalf("%s: waited %s, err %v; want immediate", r, waited, err)
	}
}

type result struct {
	waited time.Duration
	err    error
}

func waitAsync(ctx context.Context, s *Scheduler, r Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		w, err := s.Wait(ctx, r)
		ch <- result{w, err}
	}()
	return ch
}

// expectSlot checks that a caller blocked on ch is released exactly at
// slot: still blocked a nanosecond before, granted at it.
func expectSlot(t *testing.T, clk *fakeClock, ch <-chan result, arrived, slot time.Time) {
	t.Helper()
	clk.waitTimer(t, slot)
	clk.Set(slot.Add(-time.Nanosecond))
	select {
	case r := <-ch:
		t.Fatalf("released before %s: %+v", slot, r)
	default:
	}
	clk.Set(slot)
	r := <-ch
	if r.err != nil || r.waited != slot.Sub(arrived) {
		t.Fatalf("got waited %s err %v; want %s", r.waited, r.err, slot.Sub(arrived))
	}
}

func TestIdenticalRequestsWait15Seconds(t *testing.T) {
	s, clk := newTest(Config{})
	mustPass(t, s, req("AAPL", "TRADES", 0))
	clk.Set(t0.Add(time.Second))
	// Differing only in End is not identical.
	mustPass(t, s, req("AAPL", "TRADES", 1))
	// The identical request waits until exactly 15 s after the first.
	ch := waitAsync(context.Background(), s, req("AAPL", "TRADES", 0))
	expectSlot(t, clk, ch, t0.Add(time.Second), t0.Add(IdenticalWindow))
	// useRTH is part of the identity.
	rth := req("AAPL", "TRADES", 0)
	rth.UseRTH = true
	mustPass(t, s, rth)
	if st := s.Stats(); st.WaitsByRule[RuleIdentical] != 1 || st.Waits != 1 || st.Requests != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSixthSameContractWithin2sWaits(t *testing.T) {
	s, clk := newTest(Config{})
	for i := range 5 {
		mustPass(t, s, req("AAPL", "TRADES", i))
	}
	clk.Set(t0.Add(500 * time.Millisecond))
	// Another contract, or another tick type of the same contract, is not held.
	mustPass(t, s, req("MSFT", "TRADES", 0))
	mustPass(t, s, req("AAPL", "MIDPOINT", 0))
	ch := waitAsync(context.Background(), s, req("AAPL", "TRADES", 5))
	expectSlot(t, clk, ch, t0.Add(500*time.Millisecond), t0.Add(SameContractWin))
	// The window slides: the five at t0 left together, so four more fit at t0+2s.
	for i := 6; i < 10; i++ {
		mustPass(t, s, req("AAPL", "TRADES", i))
	}
	ch = waitAsync(context.Background(), s, req("AAPL", "TRADES", 10))
	expectSlot(t, clk, ch, t0.Add(SameContractWin), t0.Add(2*SameContractWin))
}

func TestSixtyFirstInTenMinutesWaitsForFirstToAgeOut(t *testing.T) {
	s, clk := newTest(Config{})
	// 60 requests on 60 contracts, one every 5 s: no other rule binds.
	for i := range 60 {
		clk.Set(t0.Add(time.Duration(i) * 5 * time.Second))
		mustPass(t, s, req(fmt.Sprintf("C%02d", i), "TRADES", 0))
	}
	arrived := t0.Add(5 * time.Minute)
	clk.Set(arrived)
	ch := waitAsync(context.Background(), s, req("NEW", "TRADES", 0))
	expectSlot(t, clk, ch, arrived, t0.Add(TenMinuteWin))
	// The next one waits for the second to age out.
	ch = waitAsync(context.Background(), s, req("NEW2", "TRADES", 0))
	expectSlot(t, clk, ch, t0.Add(TenMinuteWin), t0.Add(TenMinuteWin+5*time.Second))
	if st := s.Stats(); st.WaitsByRule[RuleTenMinutes] != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBidAskCountsTwice(t *testing.T) {
	t.Run("same contract", func(t *testing.T) {
		s, clk := newTest(Config{})
		// Two BID_ASK count 4 of 5; a third would make 6.
		mustPass(t, s, req("AAPL", "BID_ASK", 0))
		mustPass(t, s, req("AAPL", "BID_ASK", 1))
		ch := waitAsync(context.Background(), s, req("AAPL", "BID_ASK", 2))
		expectSlot(t, clk, ch, t0, t0.Add(SameContractWin))
	})
	t.Run("ten minutes", func(t *testing.T) {
		s, clk := newTest(Config{})
		for i := range 30 {
			clk.Set(t0.Add(time.Duration(i) * time.Second))
			mustPass(t, s, req(fmt.Sprintf("C%02d", i), "BID_ASK", 0))
		}
		ch := waitAsync(context.Background(), s, req("NEW", "TRADES", 0))
		expectSlot(t, clk, ch, t0.Add(29*time.Second), t0.Add(TenMinuteWin))
	})
	t.Run("one message", func(t *testing.T) {
		// The message rate counts messages: 45 BID_ASK requests are 45
		// messages, not 90.
		s, clk := newTest(Config{})
		long := Request{Contract: "AAPL", WhatToShow: "BID_ASK", BarSize: "1 hour"}
		for range DefaultMessagesPerSecond {
			mustPass(t, s, long)
		}
		ch := waitAsync(context.Background(), s, long)
		expectSlot(t, clk, ch, t0, t0.Add(time.Second))
	})
}

func TestLongBarsAreOnlyRateLimited(t *testing.T) {
	s, clk := newTest(Config{MessagesPerSecond: 45})
	long := Request{Contract: "AAPL", Exchange: "SMART", WhatToShow: "BID_ASK", End: "", Duration: "1 D", BarSize: "1 min"}
	// 45 identical one-minute-bar requests in one instant: no historical rule applies.
	for range 45 {
		mustPass(t, s, long)
	}
	// The 46th message in the same second waits for the first to be a second old.
	ch := waitAsync(context.Background(), s, long)
	expectSlot(t, clk, ch, t0, t0.Add(time.Second))

	// BarSeconds wins over BarSize; 31 s is over the limit.
	s, clk = newTest(Config{MessagesPerSecond: 3})
	odd := Request{Contract: "AAPL", WhatToShow: "TRADES", BarSize: "5 secs", BarSeconds: 31}
	mustPass(t, s, odd)
	mustPass(t, s, odd)
	// A non-historical message shares the rate.
	mustPass(t, s, Request{})
	ch = waitAsync(context.Background(), s, Request{})
	expectSlot(t, clk, ch, t0, t0.Add(time.Second))
}

func TestThirtySecondBarsArePaced(t *testing.T) {
	s, clk := newTest(Config{})
	r := Request{Contract: "AAPL", WhatToShow: "TRADES", BarSize: "30 secs"}
	mustPass(t, s, r)
	ch := waitAsync(context.Background(), s, r)
	expectSlot(t, clk, ch, t0, t0.Add(IdenticalWindow))
}

func TestScaleDividesEveryWindow(t *testing.T) {
	s, clk := newTest(Config{Scale: 10})
	for i := range 5 {
		mustPass(t, s, req("AAPL", "TRADES", i))
	}
	ch := waitAsync(context.Background(), s, req("AAPL", "TRADES", 5))
	expectSlot(t, clk, ch, t0, t0.Add(SameContractWin/10))
	ch = waitAsync(context.Background(), s, req("AAPL", "TRADES", 0))
	expectSlot(t, clk, ch, t0.Add(SameContractWin/10), t0.Add(IdenticalWindow/10))
}

func TestContextCancellation(t *testing.T) {
	s, clk := newTest(Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Already cancelled: returns at once and spends no slot.
	if _, err := s.Wait(ctx, req("AAPL", "TRADES", 0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	mustPass(t, s, req("AAPL", "TRADES", 0))

	// Cancelled while waiting: returns at once, with the clock not moved.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	ch := waitAsync(ctx, s, req("AAPL", "TRADES", 0))
	clk.waitTimer(t, t0.Add(IdenticalWindow))
	cancel()
	r := <-ch
	if !errors.Is(r.err, context.Canceled) || r.waited != 0 {
		t.Fatalf("got %+v", r)
	}
	if st := s.Stats(); st.Cancelled != 2 || st.Requests != 1 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFIFOAndCancelledSlotIsReused(t *testing.T) {
	s, clk := newTest(Config{})
	r := req("AAPL", "TRADES", 0)
	mustPass(t, s, r)
	// Three identical callers arrive in order and queue 15 s apart.
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	a := waitAsync(context.Background(), s, r)
	clk.waitTimer(t, t0.Add(IdenticalWindow))
	b := waitAsync(ctxB, s, r)
	clk.waitTimer(t, t0.Add(2*IdenticalWindow))
	c := waitAsync(context.Background(), s, r)
	clk.waitTimer(t, t0.Add(3*IdenticalWindow))
	// B gives up: C moves into its slot.
	cancelB()
	if res := <-b; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("b: %+v", res)
	}
	expectSlot(t, clk, a, t0, t0.Add(IdenticalWindow))
	expectSlot(t, clk, c, t0, t0.Add(2*IdenticalWindow))
}

func TestPenalize(t *testing.T) {
	s, clk := newTest(Config{})
	aapl := req("AAPL", "TRADES", 0)
	s.Penalize(aapl, RuleSameContract, time.Minute)
	// Other contracts, and long bars of the same one, are not held.
	mustPass(t, s, req("MSFT", "TRADES", 0))
	mustPass(t, s, Request{Contract: "AAPL", WhatToShow: "TRADES", BarSize: "1 hour"})
	ch := waitAsync(context.Background(), s, aapl)
	expectSlot(t, clk, ch, t0, t0.Add(time.Minute))

	// A penalty re-plans a caller already waiting.
	now := t0.Add(time.Minute)
	ch = waitAsync(context.Background(), s, aapl)
	clk.waitTimer(t, now.Add(IdenticalWindow))
	s.Penalize(aapl, RuleTenMinutes, 2*time.Minute) // blocks every paced request
	expectSlot(t, clk, ch, now, now.Add(2*time.Minute))
	if st := s.Stats(); st.Penalties != 2 || st.Penalized[RuleTenMinutes] != 1 || st.WaitsByRule[RuleTenMinutes] != 1 {
		t.Fatalf("stats %+v", st)
	}

	// The message-rate penalty holds everything, divided by the scale.
	s, clk = newTest(Config{Scale: 4})
	s.Penalize(Request{}, RuleMessageRate, 4*time.Second)
	ch = waitAsync(context.Background(), s, Request{BarSize: "1 day"})
	expectSlot(t, clk, ch, t0, t0.Add(time.Second))
}

func TestMinimumDuration(t *testing.T) {
	same := func(n int, what string) []Request {
		var rs []Request
		for i := range n {
			rs = append(rs, req("AAPL", what, i))
		}
		return rs
	}
	many := func(n int) []Request {
		var rs []Request
		for i := range n {
			rs = append(rs, req(fmt.Sprintf("C%03d", i), "TRADES", 0))
		}
		return rs
	}
	long := func(n int) []Request {
		var rs []Request
		for range n {
			rs = append(rs, Request{Contract: "AAPL", BarSize: "1 day"})
		}
		return rs
	}
	tests := []struct {
		name string
		reqs []Request
		cfg  Config
		want time.Duration
	}{
		{"empty", nil, Config{}, 0},
		{"five same contract", same(5, "TRADES"), Config{}, 0},
		{"six same contract", same(6, "TRADES"), Config{}, 2 * time.Second},
		{"eleven same contract", same(11, "TRADES"), Config{}, 4 * time.Second},
		{"three BID_ASK", same(3, "BID_ASK"), Config{}, 2 * time.Second},
		{"sixty contracts", many(60), Config{}, time.Second}, // 45 messages per second
		{"sixty-one contracts", many(61), Config{}, TenMinuteWin},
		{"121 contracts", many(121), Config{}, 2 * TenMinuteWin},
		{"identical twice", []Request{req("A", "TRADES", 0), req("A", "TRADES", 0)}, Config{}, IdenticalWindow},
		{"long bars", long(91), Config{}, 2 * time.Second},
		{"long bars, 10/s", long(11), Config{MessagesPerSecond: 10}, time.Second},
		{"scaled", many(61), Config{Scale: 100}, TenMinuteWin / 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MinimumDuration(tt.reqs, tt.cfg); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseBarSize(t *testing.T) {
	for in, want := range map[string]int{"1 sec": 1, "5 secs": 5, "30 secs": 30, "1 min": 60, "2 mins": 120,
		"1 hour": 3600, "4 hours": 14400, "1 day": 86400, "1 week": 604800, "1 month": 2592000, " 15 SECS ": 15} {
		if got, err := ParseBarSize(in); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "5", "x secs", "0 secs", "5 fortnights", "1 2 3"} {
		if _, err := ParseBarSize(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestConcurrentCallers runs many callers against one scheduler while a
// driver moves the fake clock to each due timer, some callers giving up,
// then checks every granted request against the rules from scratch.
func TestConcurrentCallers(t *testing.T) {
	s, clk := newTest(Config{MessagesPerSecond: 20})
	s.pruned = t0.Add(24 * time.Hour) // keep the whole history to check it

	const workers, each = 12, 25
	var (
		mu      sync.Mutex
		granted []Request
		wg      sync.WaitGroup
		done    = make(chan struct{})
	)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range each {
				r := req(fmt.Sprintf("C%d", rng.IntN(4)), []string{"TRADES", "BID_ASK", "MIDPOINT"}[rng.IntN(3)], rng.IntN(3))
				if i%7 == 0 {
					r = Request{BarSize: "1 day", Contract: "D"}
				}
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(10) == 0 {
					go cancel() // gives up before Wait or while in it
				}
				_, err := s.Wait(ctx, r)
				cancel()
				if err == nil {
					mu.Lock()
					granted = append(granted, r)
					mu.Unlock()
				}
			}
		})
	}
	go func() {
		wg.Wait()
		clk.mu.Lock()
		close(done)
		clk.cond.Broadcast()
		clk.mu.Unlock()
	}()
	// Drive: move the clock to the earliest timer whenever one is set,
	// until every caller has returned.
	for {
		var finished bool
		if !clk.waitFor(func() bool {
			select {
			case <-done:
				finished = true
			default:
			}
			return finished || len(clk.timers) > 0
		}) {
			t.Fatal("callers stuck with no timer set")
		}
		if finished {
			break
		}
		clk.mu.Lock()
		next := clk.timers[0].at
		for _, ft := range clk.timers[1:] {
			if ft.at.Before(next) {
				next = ft.at
			}
		}
		clk.setLocked(next)
		clk.mu.Unlock()
	}

	st := s.Stats()
	if st.Requests != int64(len(granted)) || st.Requests+st.Cancelled != workers*each || st.Pending != 0 {
		t.Fatalf("stats %+v, granted %d", st, len(granted))
	}
	t.Logf("granted %d, cancelled %d, waits %v, fake time %s", st.Requests, st.Cancelled, st.WaitsByRule, clk.Now().Sub(t0))
	// Every rule key's history must satisfy its rule in every window.
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int
	for key, h := range s.plan.keys {
		max := map[byte]int{'i': 1, 'c': SameContractLimit, 't': TenMinuteLimit, 'm': 20}[key[0]]
		for i, e := range h.entries {
			if e.owner != 0 {
				t.Fatalf("%q: reservation left behind", key)
			}
			sum := 0
			for _, o := range h.entries[:i+1] {
				if e.at.Sub(o.at) < h.win {
					sum += o.w
				}
			}
			if sum > max {
				t.Fatalf("%q: %d in the window ending %s, limit %d", key, sum, e.at.Sub(t0), max)
			}
		}
		if key == "m" {
			total = len(h.entries)
		}
	}
	if total != len(granted) {
		t.Fatalf("message history %d, granted %d", total, len(granted))
	}
}
