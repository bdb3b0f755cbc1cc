package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/ktrdr/ktrdr/client"
)

// connect opens one connection through the breaker, trying client ids from
// the lowest free one and moving on after each 326, with a pause between
// attempts. p.pending (and p.warming for a warm-up) counts it until it
// returns. On success the entry is registered, in use, with its monitor running.
func (p *Pool) connect(ctx context.Context, warm bool) (*entry, error) {
	var conn *client.Conn
	_, err := p.breaker.Execute(func() (struct{}, error) {
		var err error
		conn, err = p.dialWithIDFallback(ctx)
		return struct{}{}, err
	})
	p.mu.Lock()
	p.pending--
	if warm {
		p.warming--
	}
	if err != nil || p.closed {
		p.wakeOneLocked() // the capacity this connect held is free again
		closed := p.closed
		p.mu.Unlock()
		if conn != nil {
			p.ids.release(conn.ClientID())
			conn.Close()
		}
		switch {
		case closed:
			return nil, ErrClosed
		case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
			return nil, ErrCircuitOpen
		}
		p.stats.connectFailures.Add(1)
		p.poke()
		return nil, err
	}
	e := &entry{conn: conn, clientID: conn.ClientID(), created: time.Now(), inUse: true}
	p.all[e] = struct{}{}
	p.mu.Unlock()
	p.stats.connects.Add(1)
	p.stats.lastConnect.Store(time.Now().UnixNano())
	p.log.Info("connection opened", "client_id", e.clientID, "server_version", conn.ServerVersion())
	p.events.publish(Event{Kind: EventAdded, ClientID: e.clientID})
	p.wg.Add(1)
	go p.monitor(e)
	return e, nil
}

// dialWithIDFallback is one connect as the breaker sees it.
func (p *Pool) dialWithIDFallback(ctx context.Context) (*client.Conn, error) {
	tried := map[int]bool{}
	var last error
	for attempt := 0; attempt < p.cfg.ClientIDAttempts; attempt++ {
		if attempt > 0 {
			// Rapid reconnects with consecutive ids upset gateways.
			t := time.NewTimer(p.cfg.ClientIDPause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		id := p.ids.take(tried)
		tried[id] = true
		p.stats.connectAttempts.Add(1)
		conn, err := p.cfg.Dial(ctx, client.Config{Addr: p.cfg.Addr, ClientID: id,
			ConnectTimeout: p.cfg.ConnectTimeout, Logger: p.log})
		if err == nil {
			if attempt > 0 {
				p.stats.idFallbacks.Add(1)
			}
			return conn, nil
		}
		var inUse *client.ClientIDInUseError
		if !errors.As(err, &inUse) {
			p.ids.release(id)
			return nil, err
		}
		p.ids.rest(id)
		p.stats.idConflicts.Add(1)
		p.log.Warn("client id in use, trying the next", "client_id", id, "attempt", attempt+1)
		last = err
	}
	p.stats.idFallbacksExhausted.Add(1)
	p.stats.lastFallbackExhausted.Store(time.Now().UnixNano())
	return nil, fmt.Errorf("pool: %d client ids refused with 326 in one connect: %w", p.cfg.ClientIDAttempts, last)
}

// monitor follows one connection: a closed socket removes it at once;
// 1100 marks the pool degraded until 1101 or 1102.
func (p *Pool) monitor(e *entry) {
	defer p.wg.Done()
	sub := e.conn.Subscribe(p.cfg.EventBuffer)
	defer sub.Close()
	// A connection opened during an outage hears 1100 in its greeting,
	// before this subscription: the latest connectivity word counts.
	recent := e.conn.RecentEvents()
	for i := len(recent) - 1; i >= 0; i-- {
		if p.connectivity(recent[i]) {
			break
		}
	}
	for {
		select {
		case <-e.conn.Done():
			p.remove(e, reasonForClosed(e.conn))
			return
		case ev, ok := <-sub.C:
			if !ok {
				p.remove(e, reasonForClosed(e.conn))
				return
			}
			p.connectivity(ev)
		}
	}
}

// connectivity applies a 1100/1101/1102 event; it reports whether ev was one.
func (p *Pool) connectivity(ev client.Event) bool {
	switch ev.Code {
	case client.CodeConnectivityLost:
		p.setDegraded(true, ev)
	case client.CodeRestoredDataKept, client.CodeRestoredDataLost:
		p.setDegraded(false, ev)
	default:
		return false
	}
	return true
}

// reasonForClosed tells a gateway that closed the socket from one that
// refused the client id.
func reasonForClosed(c *client.Conn) Reason {
	var inUse *client.ClientIDInUseError
	if errors.As(c.Err(), &inUse) {
		return Reason326
	}
	if errors.Is(c.Err(), client.ErrClosed) {
		return ReasonPoolClosed
	}
	return ReasonClosedByGateway
}

func (p *Pool) setDegraded(on bool, ev client.Event) {
	if p.stats.setDegraded(on, ev) {
		p.log.Warn("gateway connectivity", "code", ev.Code, "text", ev.Text, "degraded", on)
		p.events.publish(Event{Kind: EventDegraded, Detail: ev.Text, Degraded: on})
	}
}
