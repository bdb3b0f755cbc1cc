// Package pool is the resilient connection pool in front of the TWS client:
// the only way the rest of ktrdr reaches the gateway. It validates every
// connection before handing it out (isConnected plus a reqCurrentTime round
// trip with a deadline), collects idle connections, runs a health loop,
// prefers low client ids with fallback on error 326, fails fast behind a
// circuit breaker while the gateway is down and recovers on its own.
package pool

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/ktrdr/ktrdr/client"
)

// entry is one pooled connection.
type entry struct {
	conn     *client.Conn
	clientID int
	created  time.Time

	// Guarded by Pool.mu.
	inUse      bool
	label      string    // the current acquirer's label
	acquiredAt time.Time // when the current lease began
	released   time.Time // when it last became idle
	lastAlive  time.Time // last successful validation round trip
	leakLogged bool
	removed    bool
}

// waiter is an Acquire queued for a connection. It receives an entry, or
// nil meaning "capacity freed: try again".
type waiter struct {
	ch       chan *entry // buffered 1
	dequeued bool        // guarded by Pool.mu: someone removed it and sent on ch
}

// Pool is a set of validated gateway connections. Safe for concurrent use.
type Pool struct {
	cfg     Config
	log     *slog.Logger
	breaker *gobreaker.CircuitBreaker[struct{}]
	ids     *idSet
	stats   *stats
	events  *broadcaster

	ctx    context.Context // ends at Close; parent of background work
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the maintainer

	mu      sync.Mutex
	all     map[*entry]struct{}
	idle    []*entry // most recently released last
	waiters *list.List
	pending int // connects under way
	warming int // of which warm-up connects, not yet anyone's
	closed  bool

	breakerOpened atomic.Int64 // unix nanos of the breaker's last opening
}

// New starts a pool. It connects nothing synchronously: the maintainer
// opens the warm connections in the background.
func New(cfg Config) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		cfg: cfg, log: cfg.Logger, ids: newIDSet(cfg.ClientIDBase, cfg.ClientIDCooldown),
		stats: newStats(), events: newBroadcaster(cfg.EventBuffer),
		ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		all: map[*entry]struct{}{}, waiters: list.New(),
	}
	p.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "gateway",
		MaxRequests: 1,
		Timeout:     cfg.BreakerProbeInterval,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(cfg.BreakerFailures) },
		// A caller giving up or the pool closing says nothing of the gateway.
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				p.breakerOpened.Store(time.Now().UnixNano())
			}
			p.stats.breakerChanged(from, to)
			p.log.Warn("circuit breaker", "from", from.String(), "to", to.String())
			p.events.publish(Event{Kind: EventBreaker, Detail: to.String()})
		},
	})
	p.wg.Add(1)
	go p.maintain()
	return p, nil
}

// Config returns the effective configuration, defaults and floors applied.
func (p *Pool) Config() Config { return p.cfg }

// Lease is one acquired connection. Release it, or Destroy it if it
// misbehaved; both are idempotent and safe after Close.
type Lease struct {
	p    *Pool
	e    *entry
	once sync.Once
}

// Conn is the leased connection.
func (l *Lease) Conn() *client.Conn { return l.e.conn }

// ClientID is the leased connection's client id.
func (l *Lease) ClientID() int { return l.e.clientID }

// Release returns the connection to the pool.
func (l *Lease) Release() { l.once.Do(func() { l.p.release(l.e) }) }

// Destroy closes the connection and removes it from the pool: for a caller
// that saw it misbehave.
func (l *Lease) Destroy() { l.once.Do(func() { l.p.remove(l.e, ReasonBrokenByCaller) }) }

// DestroySilent removes the connection because a request on it got no
// answer in time: it counts as a silent connection detected.
func (l *Lease) DestroySilent() {
	l.once.Do(func() {
		l.p.stats.silentDetected.Add(1)
		l.p.remove(l.e, ReasonSilentRequest)
	})
}

// Acquire returns a validated connection, waiting at most until ctx ends.
// label names the acquirer in leak reports. Errors are *AcquireError
// wrapping ErrCircuitOpen, ErrSilentGateway, ErrClosed, a connect error or
// the context's error.
func (p *Pool) Acquire(ctx context.Context, label string) (*Lease, error) {
	start := time.Now()
	p.stats.acquires.Add(1)
	fail := func(stage AcquireStage, err error) (*Lease, error) {
		p.stats.acquireFailures.Add(1)
		return nil, &AcquireError{Stage: stage, Waited: time.Since(start), Err: err}
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(StageWaiting, err)
		}
		e, stage, err := p.get(ctx)
		if err != nil {
			return fail(stage, err)
		}
		if e == nil {
			continue // capacity freed while waiting: look again
		}
		if err := p.validate(ctx, e); err != nil {
			if errors.Is(err, client.ErrConnectionLost) || errors.Is(err, errNotConnected) {
				continue // a dead socket: cheap to replace, go on within the deadline
			}
			return fail(StageValidating, err)
		}
		p.mu.Lock()
		e.label, e.acquiredAt, e.leakLogged = label, time.Now(), false
		p.mu.Unlock()
		p.stats.acquireWait.observe(time.Since(start))
		return &Lease{p: p, e: e}, nil
	}
}

// get takes an idle connection, starts a new one, or queues. It returns an
// entry marked in use, or nil when the caller should look again.
func (p *Pool) get(ctx context.Context) (*entry, AcquireStage, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, StageWaiting, ErrClosed
	}
	if n := len(p.idle); n > 0 {
		e := p.idle[n-1] // the most recently used: warm, and lets the others age out
		p.idle = p.idle[:n-1]
		e.inUse = true
		p.mu.Unlock()
		return e, "", nil
	}
	// A warm-up connect under way that no waiter has claimed will be
	// handed to the first waiter: wait for it rather than dial another.
	if len(p.all)+p.pending < p.cfg.MaxConns && p.warming <= p.waiters.Len() {
		if p.breaker.State() == gobreaker.StateOpen {
			p.mu.Unlock()
			return nil, StageConnecting, ErrCircuitOpen
		}
		p.pending++
		// Counted under p.mu, where Close cannot have begun waiting.
		p.wg.Add(1)
		p.mu.Unlock()
		return p.connectFor(ctx)
	}
	w := &waiter{ch: make(chan *entry, 1)}
	el := p.waiters.PushBack(w)
	p.mu.Unlock()
	p.stats.waits.Add(1)
	select {
	case e := <-w.ch:
		return e, "", nil
	case <-ctx.Done():
		p.mu.Lock()
		if !w.dequeued {
			p.waiters.Remove(el)
			p.mu.Unlock()
		} else {
			// Handed something just as we gave up: pass it on, a
			// connection to the pool, a wake-up to the next waiter.
			p.mu.Unlock()
			if e := <-w.ch; e != nil {
				p.release(e)
			} else {
				p.mu.Lock()
				p.wakeOneLocked()
				p.mu.Unlock()
			}
		}
		return nil, StageWaiting, ctx.Err()
	}
}

// connectFor runs a connect (p.pending and p.wg already count it) for one caller.
// If the caller leaves first, the connect goes on and its connection
// joins the pool: a connect under way is never wasted.
func (p *Pool) connectFor(ctx context.Context) (*entry, AcquireStage, error) {
	type result struct {
		e   *entry
		err error
	}
	res := make(chan result, 1)
	var mu sync.Mutex
	abandoned := false
	go func() {
		defer p.wg.Done()
		e, err := p.connect(p.ctx, false)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if e != nil {
				p.release(e)
			}
			return
		}
		res <- result{e, err}
	}()
	select {
	case r := <-res:
		return r.e, StageConnecting, r.err
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		mu.Unlock()
		select {
		case r := <-res: // finished just now: keep its connection in the pool
			if r.e != nil {
				p.release(r.e)
			}
		default:
		}
		return nil, StageConnecting, ctx.Err()
	}
}

// release returns e to the pool: to the first waiter, else to the idle set.
func (p *Pool) release(e *entry) { p.releaseIdleSince(e, time.Time{}) }

// releaseIdleSince is release for an entry that was idle since then (zero:
// now): the health loop's probes do not restart a connection's idle clock.
// The idle set stays ordered by release time, oldest first.
func (p *Pool) releaseIdleSince(e *entry, since time.Time) {
	if !e.conn.IsConnected() {
		p.remove(e, reasonForClosed(e.conn))
		return
	}
	p.mu.Lock()
	if p.closed || e.removed {
		p.mu.Unlock()
		return
	}
	e.label, e.acquiredAt = "", time.Time{}
	if w := p.dequeueLocked(); w != nil {
		e.inUse = true
		p.mu.Unlock()
		w.ch <- e
		return
	}
	e.inUse = false
	if since.IsZero() {
		since = time.Now()
	}
	e.released = since
	i := len(p.idle)
	for i > 0 && p.idle[i-1].released.After(since) {
		i--
	}
	p.idle = slices.Insert(p.idle, i, e)
	p.mu.Unlock()
}

// remove closes e and forgets it, counting why; a waiter is woken to use
// the freed capacity.
func (p *Pool) remove(e *entry, reason Reason) {
	p.mu.Lock()
	if e.removed {
		p.mu.Unlock()
		return
	}
	e.removed = true
	delete(p.all, e)
	for i, x := range p.idle {
		if x == e {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			break
		}
	}
	p.wakeOneLocked()
	p.mu.Unlock()
	p.ids.release(e.clientID)
	p.stats.removed(reason)
	e.conn.Close()
	p.log.Info("connection removed", "client_id", e.clientID, "reason", string(reason))
	p.events.publish(Event{Kind: EventRemoved, ClientID: e.clientID, Detail: string(reason)})
	p.poke()
}

// wakeOneLocked tells the first waiter that capacity is free. Caller holds p.mu.
func (p *Pool) wakeOneLocked() {
	if w := p.dequeueLocked(); w != nil {
		w.ch <- nil
	}
}

// dequeueLocked takes the first waiter off the queue. Caller holds p.mu.
func (p *Pool) dequeueLocked() *waiter {
	el := p.waiters.Front()
	if el == nil {
		return nil
	}
	w := p.waiters.Remove(el).(*waiter)
	w.dequeued = true
	return w
}

// poke wakes the maintainer (refill warm connections, probe).
func (p *Pool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

var errNotConnected = errors.New("pool: connection closed")

// validate proves e alive before handoff: isConnected, then a
// reqCurrentTime round trip within ValidationTimeout, unless e proved
// itself within ValidationBypass. A failed connection is removed.
func (p *Pool) validate(ctx context.Context, e *entry) error {
	if !e.conn.IsConnected() {
		p.remove(e, reasonForClosed(e.conn))
		return errNotConnected
	}
	p.mu.Lock()
	fresh := time.Since(e.lastAlive) < p.cfg.ValidationBypass
	p.mu.Unlock()
	if fresh {
		p.stats.validationsBypassed.Add(1)
		return nil
	}
	return p.roundTrip(ctx, e, ReasonFailedValidation, time.Time{})
}

// roundTrip runs one validation round trip on e through the breaker; on
// failure it removes e with reason. A caller whose ctx ends first leaves at
// once, but the round trip runs on to its own deadline, so the breaker only
// counts what the gateway did and e is neither dropped nor handed back
// while a request is outstanding on it: on success it returns to the pool.
// idleSince is passed on when e goes back untried (see releaseIdleSince).
func (p *Pool) roundTrip(ctx context.Context, e *entry, reason Reason, idleSince time.Time) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.remove(e, ReasonPoolClosed)
		return ErrClosed
	}
	p.wg.Add(1)
	p.mu.Unlock()
	res := make(chan error, 1)
	var mu sync.Mutex
	left := false
	go func() {
		defer p.wg.Done()
		err := p.checkAlive(e, reason, idleSince)
		mu.Lock()
		defer mu.Unlock()
		if left {
			if err == nil {
				p.releaseIdleSince(e, idleSince)
			}
			return
		}
		res <- err
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		mu.Lock()
		left = true
		mu.Unlock()
		select {
		case err := <-res: // finished just now
			if err == nil {
				p.releaseIdleSince(e, idleSince)
			}
		default:
		}
		return ctx.Err()
	}
}

// checkAlive is the round trip itself, bounded by ValidationTimeout and the
// pool's life only. On failure e is removed; untried (breaker open) it goes
// back to the pool.
func (p *Pool) checkAlive(e *entry, reason Reason, idleSince time.Time) error {
	vctx, cancel := context.WithTimeout(p.ctx, p.cfg.ValidationTimeout)
	defer cancel()
	start := time.Now()
	_, err := p.breaker.Execute(func() (struct{}, error) {
		_, err := e.conn.CurrentTime(vctx)
		return struct{}{}, err
	})
	took := time.Since(start)
	switch {
	case err == nil:
		p.stats.validated(took, true)
		p.mu.Lock()
		e.lastAlive = time.Now()
		p.mu.Unlock()
		return nil
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		// Not tried: e is as good as before; put it back.
		p.releaseIdleSince(e, idleSince)
		return ErrCircuitOpen
	}
	if p.ctx.Err() != nil {
		p.remove(e, ReasonPoolClosed)
		return ErrClosed
	}
	p.stats.validated(took, false)
	if errors.Is(err, context.DeadlineExceeded) {
		p.stats.silentDetected.Add(1)
		p.log.Warn("silent connection detected", "client_id", e.clientID, "waited", took)
		err = errors.Join(ErrSilentGateway, err)
	}
	p.remove(e, reason)
	return err
}

// Close stops the pool: waiters fail with ErrClosed, every connection
// closes (leases still out become no-ops), background work stops.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for w := p.dequeueLocked(); w != nil; w = p.dequeueLocked() {
		w.ch <- nil
	}
	entries := make([]*entry, 0, len(p.all))
	for e := range p.all {
		entries = append(entries, e)
	}
	p.mu.Unlock()
	p.cancel()
	for _, e := range entries {
		p.remove(e, ReasonPoolClosed)
	}
	p.wg.Wait()
	p.events.close()
	return nil
}
