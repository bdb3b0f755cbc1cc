package pool

import (
	"sync"
	"sync/atomic"
	"time"
)

// EventKind classifies pool events.
type EventKind string

// Pool events subscribers can follow.
const (
	EventAdded    EventKind = "connection_added"
	EventRemoved  EventKind = "connection_removed"
	EventBreaker  EventKind = "breaker"  // Detail: the new state
	EventDegraded EventKind = "degraded" // Degraded: the new flag; Detail: IB's text
	EventLeak     EventKind = "leak"     // Detail: the acquirer's label
)

// Event is one change in the pool.
type Event struct {
	Time     time.Time
	Kind     EventKind
	ClientID int
	Detail   string
	Degraded bool
}

// Subscription receives pool events; a full buffer drops (and counts) them
// rather than ever blocking the pool.
type Subscription struct {
	C       <-chan Event
	ch      chan Event
	b       *broadcaster
	dropped atomic.Int64
}

// Dropped counts the events this subscriber missed.
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Close ends the subscription and closes C.
func (s *Subscription) Close() { s.b.unsubscribe(s) }

type broadcaster struct {
	mu     sync.Mutex
	size   int
	subs   map[*Subscription]struct{}
	closed bool
}

func newBroadcaster(size int) *broadcaster {
	return &broadcaster{size: size, subs: map[*Subscription]struct{}{}}
}

// Subscribe follows the pool's events until Close of the subscription or the pool.
func (p *Pool) Subscribe() *Subscription { return p.events.subscribe() }

func (b *broadcaster) subscribe() *Subscription {
	s := &Subscription{ch: make(chan Event, b.size), b: b}
	s.C = s.ch
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.ch)
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

func (b *broadcaster) unsubscribe(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.ch)
	}
}

func (b *broadcaster) publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		close(s.ch)
	}
	b.subs = map[*Subscription]struct{}{}
}
