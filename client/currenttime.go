package client

import (
	"context"
	"sync"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// ServerTime is the answer to reqCurrentTime, with the round trip it took.
type ServerTime struct {
	Time     time.Time     // the gateway's clock (one-second resolution)
	Sent     time.Time     // when the request was queued
	Received time.Time     // when the answer arrived
	RTT      time.Duration // Received - Sent
}

// ctFlight is the one reqCurrentTime in flight; every caller waits on it.
type ctFlight struct {
	sent time.Time
	done chan struct{}
	once sync.Once
	res  ServerTime
	err  error
}

func (f *ctFlight) finish(t time.Time, err error) {
	f.once.Do(func() {
		now := time.Now()
		f.res = ServerTime{Time: t, Sent: f.sent, Received: now, RTT: now.Sub(f.sent)}
		f.err = err
		close(f.done)
	})
}

// minCurrentTimeGap keeps reqCurrentTime requests at least this far apart:
// a gateway may never answer a second one sent sooner.
const minCurrentTimeGap = time.Second

// CurrentTime asks the gateway for its clock: the round trip that proves a
// connection alive. Never more than one request is outstanding per
// connection and never two reach the gateway within a second (a gateway may
// never answer the second): concurrent callers share the answer in flight,
// and a caller arriving within a second of the last answer gets that answer
// (its Received time says how fresh it is). An unanswered request stays the
// one in flight: a silent gateway makes every caller time out rather than
// stacking requests it will not answer.
func (c *Conn) CurrentTime(ctx context.Context) (ServerTime, error) {
	start := time.Now()
	c.mu.Lock()
	if c.closeErr != nil {
		err := c.closeErr
		c.mu.Unlock()
		return ServerTime{}, err
	}
	f := c.ct
	if f == nil {
		if last := c.lastCT; last != nil && time.Since(last.Received) < minCurrentTimeGap {
			c.mu.Unlock()
			return *last, nil
		}
		f = &ctFlight{sent: time.Now(), done: make(chan struct{})}
		c.ct = f
		c.mu.Unlock()
		// Detached from the caller's context: the flight is shared, so
		// once queued it must be sent even if this caller gives up.
		if err := c.out.send(ctx, &tws.ReqCurrentTime{}, true); err != nil {
			c.mu.Lock()
			if c.ct == f {
				c.ct = nil
			}
			c.mu.Unlock()
			f.finish(time.Time{}, err)
			return ServerTime{}, c.ctxError("reqCurrentTime", start, err)
		}
	} else {
		c.mu.Unlock()
	}
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return ServerTime{}, &TimeoutError{Op: "reqCurrentTime", After: time.Since(start), Err: ctx.Err()}
	}
}
