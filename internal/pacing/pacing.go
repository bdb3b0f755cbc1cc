// Package pacing schedules requests to an IB gateway so that they keep to
// IB's historical-data pacing rules and message rate, instead of finding the
// limits through error 162 (the request is dropped and must be sent again,
// later) or error 100.
//
// One Scheduler serves a whole process: the limits are per gateway, so two
// schedulers would each believe they had the whole budget.
//
// Every caller reserves its slot when it calls Wait: the earliest moment all
// rules allow given the history and the slots reserved before it. Slots are
// therefore handed out in arrival order among callers that compete for the
// same rule, a caller is never overtaken forever, and a caller on another
// contract is not held behind one waiting out its own contract's limit.
package pacing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Clock is the time source. Tests inject a fake; production uses the
// system clock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a Scheduler. The zero value is IB's production limits
// on the system clock.
type Config struct {
	// Clock defaults to the system clock.
	Clock Clock
	// MessagesPerSecond caps all messages through the scheduler, historical
	// or not. Default 45: the gateway answers error 100 past 50 per second,
	// and the margin leaves room for messages sent without asking the
	// scheduler (cancels, the pool's health probes).
	MessagesPerSecond int
	// Scale divides every window (and every penalty), to match a gateway
	// simulator running with a time scale. Default 1.
	Scale float64
}

// Stats counts what the scheduler has done since it was created.
type Stats struct {
	Requests    int64          `json:"requests"`      // requests granted
	Waits       int64          `json:"waits"`         // of those, how many had to wait
	WaitTotal   time.Duration  `json:"wait_total_ns"` // time spent waiting by granted requests
	MaxWait     time.Duration  `json:"max_wait_ns"`
	WaitsByRule map[Rule]int64 `json:"waits_by_rule"` // which rule set each wait's end
	Cancelled   int64          `json:"cancelled"`     // callers whose context ended first
	Penalties   int64          `json:"penalties"`
	Penalized   map[Rule]int64 `json:"penalized"`
	Pending     int            `json:"pending"` // callers waiting now
}

// waiter is one caller blocked in Wait.
type waiter struct {
	id     uint64
	ls     []limit
	at     time.Time     // reserved slot
	rule   Rule          // rule that set the slot
	moved  chan struct{} // closed when the slot is re-planned
	arrive time.Time
}

// Scheduler enforces the pacing rules for every caller in a process. It is
// safe for concurrent use and holds no goroutine of its own.
type Scheduler struct {
	clock Clock

	mu      sync.Mutex
	plan    *plan
	pending []*waiter // in arrival order
	nextID  uint64
	pruned  time.Time
	stats   Stats
}

// New returns a Scheduler for cfg.
func New(cfg Config) *Scheduler {
	c := cfg.Clock
	if c == nil {
		c = systemClock{}
	}
	return &Scheduler{
		clock: c,
		plan:  newPlan(newWindows(cfg)),
		stats: Stats{WaitsByRule: map[Rule]int64{}, Penalized: map[Rule]int64{}},
	}
}

// Wait blocks until r may be sent without breaking a rule, records it as
// sent at that moment, and returns how long it waited. The caller must send
// r right after: the slot is spent whether it does or not.
//
// If ctx ends first, the slot is given up (later callers move up into it)
// and the error wraps ctx.Err().
func (s *Scheduler) Wait(ctx context.Context, r Request) (time.Duration, error) {
	s.mu.Lock()
	if err := ctx.Err(); err != nil {
		s.stats.Cancelled++
		s.mu.Unlock()
		return 0, fmt.Errorf("pacing: %s not sent: %w", r, err)
	}
	now := s.clock.Now()
	s.maybePrune(now)
	ls := s.plan.ws.limits(r)
	at, rule := s.plan.earliest(ls, now)
	if !at.After(now) {
		s.plan.add(ls, now, 0)
		s.grantLocked(0, "")
		s.mu.Unlock()
		return 0, nil
	}
	s.nextID++
	w := &waiter{id: s.nextID, ls: ls, at: at, rule: rule, moved: make(chan struct{}), arrive: now}
	s.plan.add(ls, at, w.id)
	s.pending = append(s.pending, w)
	s.stats.Pending = len(s.pending)
	for {
		d := w.at.Sub(now)
		if d <= 0 {
			s.plan.settle(w.ls, w.id)
			s.dropPending(w)
			waited := now.Sub(w.arrive)
			s.grantLocked(waited, w.rule)
			s.mu.Unlock()
			return waited, nil
		}
		moved := w.moved
		s.mu.Unlock()
		select {
		case <-s.clock.After(d):
		case <-moved:
		case <-ctx.Done():
			s.mu.Lock()
			now = s.clock.Now()
			waited := now.Sub(w.arrive)
			s.plan.remove(w.ls, w.id)
			s.dropPending(w)
			s.stats.Cancelled++
			s.replanLocked(now)
			s.mu.Unlock()
			return waited, fmt.Errorf("pacing: %s not sent: gave up after waiting %s of the %s the %s rule required: %w",
				r, waited, w.at.Sub(w.arrive), w.rule, ctx.Err())
		}
		s.mu.Lock()
		now = s.clock.Now()
	}
}

// Penalize tells the scheduler a pacing violation happened anyway, because
// another application on the same gateway spends the same budget: requests
// under rule's key for r (for RuleTenMinutes and RuleMessageRate, every
// request those rules cover) are held back for d, divided by the scale like
// every window. Callers already waiting are re-planned around the block.
//
// Error 162 does not say which rule was broken; a caller that cannot tell
// should pass RuleTenMinutes, the one whose block covers the others' keys.
func (s *Scheduler) Penalize(r Request, rule Rule, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, ok := s.plan.ws.blockKey(r, rule)
	if !ok || d <= 0 {
		return
	}
	now := s.clock.Now()
	until := now.Add(time.Duration(float64(d) / s.plan.ws.scale))
	if until.After(s.plan.blocks[key]) {
		s.plan.blocks[key] = until
	}
	s.stats.Penalties++
	s.stats.Penalized[rule]++
	s.replanLocked(now)
}

// Stats returns a snapshot of the counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.WaitsByRule = cloneMap(s.stats.WaitsByRule)
	st.Penalized = cloneMap(s.stats.Penalized)
	return st
}

func cloneMap(m map[Rule]int64) map[Rule]int64 {
	c := make(map[Rule]int64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (s *Scheduler) grantLocked(waited time.Duration, rule Rule) {
	s.stats.Requests++
	if waited > 0 {
		s.stats.Waits++
		s.stats.WaitTotal += waited
		s.stats.MaxWait = max(s.stats.MaxWait, waited)
		s.stats.WaitsByRule[rule]++
	}
}

func (s *Scheduler) dropPending(w *waiter) {
	s.pending = slices.DeleteFunc(s.pending, func(p *waiter) bool { return p == w })
	s.stats.Pending = len(s.pending)
}

// replanLocked recomputes every reserved slot in arrival order, after a
// cancellation freed one or a penalty blocked some: each waiter again gets
// the earliest slot given the history and the waiters before it.
func (s *Scheduler) replanLocked(now time.Time) {
	for _, w := range s.pending {
		s.plan.remove(w.ls, w.id)
	}
	for _, w := range s.pending {
		at, rule := s.plan.earliest(w.ls, now)
		s.plan.add(w.ls, at, w.id)
		if !at.Equal(w.at) {
			w.at = at
			if rule != "" {
				w.rule = rule
			}
			close(w.moved)
			w.moved = make(chan struct{})
		}
	}
}

// maybePrune drops expired history once per identical-request window, so
// the cost is spread thin and the memory bounded.
func (s *Scheduler) maybePrune(now time.Time) {
	if now.Sub(s.pruned) < s.plan.ws.identical {
		return
	}
	s.pruned = now
	s.plan.prune(now)
}

// MinimumDuration returns the least time, from the first request to the
// last, in which reqs can be sent in order under cfg's rules: the floor a
// real load is measured against. It uses virtual time and returns at once.
func MinimumDuration(reqs []Request, cfg Config) time.Duration {
	if len(reqs) == 0 {
		return 0
	}
	p := newPlan(newWindows(cfg))
	start := time.Unix(0, 0)
	t, pruned := start, start
	for _, r := range reqs {
		if t.Sub(pruned) >= p.ws.identical {
			p.prune(t)
			pruned = t
		}
		ls := p.ws.limits(r)
		// Sent in order, each as early as the rules allow: moving a request
		// earlier never delays a later one, so greedy is optimal.
		t, _ = p.earliest(ls, t)
		p.add(ls, t, 0)
	}
	return t.Sub(start)
}
