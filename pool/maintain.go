package pool

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// maintain is the pool's one background goroutine: the health loop, warm
// connections, breaker probes and leak reports.
func (p *Pool) maintain() {
	defer p.wg.Done()
	health := time.NewTimer(p.jittered())
	defer health.Stop()
	tick := time.NewTicker(min(p.cfg.BreakerProbeInterval, time.Second))
	defer tick.Stop()
	// probeAt fires when the open breaker turns half-open, so the probe
	// runs then rather than at the next tick, up to a tick later.
	probeAt := time.NewTimer(time.Hour)
	probeAt.Stop()
	defer probeAt.Stop()
	var nextWarm time.Time // after a failed warm connect, wait before the next
	for {
		if p.ctx.Err() != nil {
			return
		}
		p.checkLeaks()
		if p.breaker.State() != gobreaker.StateClosed {
			p.probeGateway()
		} else if time.Now().After(nextWarm) && !p.warmUp() {
			nextWarm = time.Now().Add(p.cfg.BreakerProbeInterval)
		}
		var probeDue <-chan time.Time
		if p.breaker.State() == gobreaker.StateOpen {
			opened := time.Unix(0, p.breakerOpened.Load())
			probeAt.Reset(max(time.Until(opened.Add(p.cfg.BreakerProbeInterval)), 0) + time.Millisecond)
			probeDue = probeAt.C
		}
		select {
		case <-p.ctx.Done():
			return
		case <-health.C:
			p.healthCheck()
			health.Reset(p.jittered())
		case <-tick.C:
		case <-probeDue:
		case <-p.kick:
		}
	}
}

// jittered is the health interval ±10%.
func (p *Pool) jittered() time.Duration {
	j := p.cfg.HealthInterval / 10
	if j <= 0 {
		return p.cfg.HealthInterval
	}
	return p.cfg.HealthInterval - j + time.Duration(rand.Int64N(int64(2*j)+1))
}

// probeGateway runs the handshake-only probe through the breaker. While
// the breaker is open Execute refuses without touching the network, so
// the gateway sees at most one probe per BreakerProbeInterval.
func (p *Pool) probeGateway() {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ConnectTimeout)
	defer cancel()
	_, err := p.breaker.Execute(func() (struct{}, error) {
		_, err := p.cfg.Probe(ctx, p.cfg.Addr)
		return struct{}{}, err
	})
	if err == nil {
		p.log.Info("gateway probe succeeded: breaker closed")
	}
}

// warmUp opens connections until MinIdle are open. It reports false if a
// connect failed.
func (p *Pool) warmUp() bool {
	for {
		p.mu.Lock()
		need := !p.closed && len(p.all)+p.pending < p.cfg.MinIdle
		if need {
			p.pending++
			p.warming++
		}
		p.mu.Unlock()
		if !need {
			return true
		}
		e, err := p.connect(p.ctx, true)
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				p.log.Warn("warm connection failed", "err", err)
			}
			return false
		}
		p.release(e)
	}
}

// healthCheck closes connections idle beyond IdleTimeout (keeping MinIdle)
// and probes every other idle connection with a round trip; connections in
// use are never touched.
func (p *Pool) healthCheck() {
	start := time.Now()
	type held struct {
		e         *entry
		idleSince time.Time // a probe does not restart the idle clock
	}
	var expired []*entry
	var probe []held
	p.mu.Lock()
	live := len(p.all)
	for _, e := range p.idle { // oldest release first
		if time.Since(e.released) > p.cfg.IdleTimeout && live > p.cfg.MinIdle {
			expired = append(expired, e)
			live--
			continue
		}
		e.inUse = true // held by the health loop while probed
		probe = append(probe, held{e, e.released})
	}
	p.idle = p.idle[:0]
	p.mu.Unlock()
	for _, e := range expired {
		p.remove(e, ReasonIdle)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for _, h := range probe {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stats.healthProbes.Add(1)
			err := p.roundTrip(p.ctx, h.e, ReasonFailedHealth, h.idleSince)
			switch {
			case err == nil:
				p.releaseIdleSince(h.e, h.idleSince)
			case errors.Is(err, ErrCircuitOpen), errors.Is(err, ErrClosed):
				// returned to the pool untried, or the pool closed
			default:
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s := p.stats
	s.mu.Lock()
	s.healthRuns++
	s.healthLastRun, s.healthLastDuration = start, time.Since(start)
	s.healthLastChecked, s.healthLastFailed, s.healthLastRemovedIdle = int64(len(probe)), int64(failed), int64(len(expired))
	s.mu.Unlock()
	if failed > 0 || len(expired) > 0 {
		p.log.Info("health check", "probed", len(probe), "failed", failed, "idle_closed", len(expired), "took", time.Since(start))
	}
}

// checkLeaks reports connections held beyond LeakThreshold, once per lease.
func (p *Pool) checkLeaks() {
	if p.cfg.LeakThreshold <= 0 {
		return
	}
	var leaks, fresh []Leak
	now := time.Now()
	p.mu.Lock()
	for e := range p.all {
		if !e.inUse || e.acquiredAt.IsZero() || now.Sub(e.acquiredAt) < p.cfg.LeakThreshold {
			continue
		}
		l := Leak{ClientID: e.clientID, Label: e.label, HeldFor: now.Sub(e.acquiredAt), Since: e.acquiredAt}
		leaks = append(leaks, l)
		if !e.leakLogged {
			e.leakLogged = true
			fresh = append(fresh, l)
		}
	}
	p.mu.Unlock()
	p.stats.mu.Lock()
	p.stats.leaks = leaks
	p.stats.mu.Unlock()
	for _, l := range fresh {
		p.stats.leaksReported.Add(1)
		p.log.Warn("connection held longer than the leak threshold", "client_id", l.ClientID, "label", l.Label, "held", l.HeldFor.Round(time.Millisecond))
		p.events.publish(Event{Kind: EventLeak, ClientID: l.ClientID, Detail: l.Label})
	}
}
