package client

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// Event is a connection-level message from the gateway: connectivity
// (1100/1101/1102), socket reset (1300), farm status (2103..2158), rate
// limit (100) and any other error sent without a request id.
type Event struct {
	Time time.Time
	Code int
	Text string
}

// Connection-level codes with a meaning of their own.
const (
	CodeRateExceeded     = 100
	CodeClientIDInUse    = 326
	CodeConnectivityLost = 1100
	CodeRestoredDataLost = 1101
	CodeRestoredDataKept = 1102
	CodeSocketReset      = 1300
	CodeConnBroken       = 2110
)

// recentEvents is how many events a connection keeps for RecentEvents.
const recentEvents = 32

// Subscription receives connection-level events. The reader never blocks
// on a slow subscriber: an event that does not fit the buffer is dropped
// and counted.
type Subscription struct {
	C       <-chan Event
	ch      chan Event
	c       *Conn
	once    sync.Once
	dropped atomic.Int64
}

// Subscribe returns a subscription with room for buffer events (default
// DefaultEventBuffer when buffer <= 0). Its channel closes when the
// connection ends or Close is called.
func (c *Conn) Subscribe(buffer int) *Subscription {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	s := &Subscription{ch: make(chan Event, buffer), c: c}
	s.C = s.ch
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		s.closeChan()
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// Dropped counts events this subscriber missed because its buffer was full.
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Close stops the subscription and closes its channel.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	_, live := s.c.subs[s]
	delete(s.c.subs, s)
	s.c.mu.Unlock()
	if live {
		s.closeChan()
	}
}

func (s *Subscription) closeChan() { s.once.Do(func() { close(s.ch) }) }

// recordEvent keeps m in the recent-events ring and fans it out.
func (c *Conn) recordEvent(m *tws.ErrorMsg) {
	ev := Event{Time: time.Now(), Code: m.Code, Text: m.Text}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.recent) == recentEvents {
		copy(c.recent, c.recent[1:])
		c.recent = c.recent[:recentEvents-1]
	}
	c.recent = append(c.recent, ev)
	// Sending under c.mu is safe: the sends never block, and Close of a
	// subscription takes c.mu before closing the channel.
	for s := range c.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
			c.dropped++
		}
	}
}

// RecentEvents returns the last connection-level events, oldest first.
func (c *Conn) RecentEvents() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.recent...)
}

// DroppedEvents counts events dropped across all subscribers.
func (c *Conn) DroppedEvents() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}
