package pacing

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when a test tells it to, so every boundary can be
// hit to the nanosecond.
type fakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t0 time.Time) *fakeClock {
	c := &fakeClock{now: t0}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	c.cond.Broadcast()
	return ch
}

// Set moves the clock to t and fires every timer due by then.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(t)
}

func (c *fakeClock) setLocked(t time.Time) {
	if t.After(c.now) {
		c.now = t
	}
	c.timers = slices.DeleteFunc(c.timers, func(ft fakeTimer) bool {
		if ft.at.After(c.now) {
			return false
		}
		ft.ch <- ft.at
		return true
	})
}

// waitTimer blocks until someone waits for a timer due exactly at at,
// failing the test if none does within a generous real-time bound.
func (c *fakeClock) waitTimer(t *testing.T, at time.Time) {
	t.Helper()
	if !c.waitFor(func() bool {
		return slices.ContainsFunc(c.timers, func(ft fakeTimer) bool { return ft.at.Equal(at) })
	}) {
		c.mu.Lock()
		ats := make([]time.Time, 0, len(c.timers))
		for _, ft := range c.timers {
			ats = append(ats, ft.at)
		}
		c.mu.Unlock()
		t.Fatalf("no timer due at %s; timers: %v", at, ats)
	}
}

// waitFor waits for cond, evaluated under the clock's lock, to hold; it
// gives up after 10 s of real time so a broken scheduler fails instead of
// hanging the suite.
func (c *fakeClock) waitFor(cond func() bool) bool {
	var expired bool
	stop := time.AfterFunc(10*time.Second, func() {
		c.mu.Lock()
		expired = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !cond() {
		if expired {
			return false
		}
		c.cond.Wait()
	}
	return true
}
