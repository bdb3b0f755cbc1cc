package pool_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/pool"
	"github.com/ktrdr/ktrdr/tws"
)

var aapl = tws.Contract{Symbol: "AAPL", SecType: "STK", Exchange: "SMART", Currency: "USD"}

// waitUntil polls cond until it holds or within passes.
func waitUntil(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mustAcquire(t testing.TB, p *pool.Pool, label string) *pool.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := p.Acquire(ctx, label)
	if err != nil {
		t.Fatalf("acquire %q: %v", label, err)
	}
	return l
}

func mustFault(t testing.TB, srv *ibsim.Server, f ibsim.Fault, opts ...ibsim.FaultOption) string {
	t.Helper()
	id, err := srv.AddFault(f, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// messagesIn is how many messages the simulator has read from the started
// session with this client id (-1 when there is none).
func messagesIn(srv *ibsim.Server, clientID int) int64 {
	for _, c := range srv.State().Clients {
		if c.ClientID == clientID && c.Started {
			return c.MessagesIn
		}
	}
	return -1
}

// eventLog collects a subscription's events until it is stopped.
type eventLog struct {
	sub  *pool.Subscription
	done chan struct{}
	mu   sync.Mutex
	evs  []pool.Event
}

func followEvents(t testing.TB, p *pool.Pool) *eventLog {
	l := &eventLog{sub: p.Subscribe(), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ev := range l.sub.C {
			l.mu.Lock()
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(l.stop)
	return l
}

func (l *eventLog) stop() { l.sub.Close(); <-l.done }

func (l *eventLog) has(match func(pool.Event) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.evs, match)
}

func TestConcurrentLoadStaysWithinMaxConnsWithDistinctIDs(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MaxConns: 4})
	const workers, rounds = 64, 4
	var (
		mu       sync.Mutex
		held     = map[int]string{} // client id -> holder, for leases out now
		problems []string
		wg       sync.WaitGroup
	)
	report := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	stopSampling := make(chan struct{})
	sampled := make(chan int)
	go func() { // watch the pool from outside while the load runs
		most := 0
		for {
			st := p.Stats()
			most = max(most, st.Total, st.Total+st.Connecting, len(st.ClientIDsInUse))
			select {
			case <-stopSampling:
				sampled <- most
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("worker-%d", g)
			for i := range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				l, err := p.Acquire(ctx, name)
				if err != nil {
					cancel()
					report("%s: acquire: %v", name, err)
					return
				}
				id := l.ClientID()
				mu.Lock()
				if other, dup := held[id]; dup {
					problems = append(problems, fmt.Sprintf("client id %d leased to %s and %s at once", id, other, name))
				}
				held[id] = name
				n := len(held)
				mu.Unlock()
				if n > 4 {
					report("%d leases out at once", n)
				}
				if (g+i)%2 == 0 {
					_, err = l.Conn().CurrentTime(ctx)
				} else {
					_, err = l.Conn().ContractDetails(ctx, aapl)
				}
				if err != nil {
					report("%s: request on client id %d: %v", name, id, err)
				}
				mu.Lock()
				delete(held, id)
				mu.Unlock()
				l.Release()
				cancel()
			}
		}()
	}
	wg.Wait()
	close(stopSampling)
	most := <-sampled
	for _, p := range problems {
		t.Error(p)
	}
	st := p.Stats()
	if most > 4 || st.Total > 4 || st.Connects > 4 {
		t.Errorf("connections: at most %d seen, total %d, connects %d; want <= 4", most, st.Total, st.Connects)
	}
	if st.AcquireFailures != 0 || st.Acquires != workers*rounds {
		t.Errorf("acquires %d, failures %d", st.Acquires, st.AcquireFailures)
	}
	ids := map[int]bool{}
	for _, c := range st.Connections {
		if ids[c.ClientID] {
			t.Errorf("two live connections with client id %d", c.ClientID)
		}
		ids[c.ClientID] = true
	}
}

func TestWaitQueueIsFIFO(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MaxConns: 1, MinIdle: -1})
	hold := mustAcquire(t, p, "holder")
	const waiters = 4
	order := make(chan int, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			l, err := p.Acquire(ctx, fmt.Sprintf("waiter-%d", i))
			if err != nil {
				order <- -1
				return
			}
			order <- i // before releasing: the next waiter cannot be served yet
			l.Release()
		}()
		waitUntil(t, 2*time.Second, "waiter queued", func() bool { return p.Stats().Waiting == i+1 })
	}
	hold.Release()
	for want := range waiters {
		if got := <-order; got != want {
			t.Fatalf("served waiter %d, want %d (FIFO)", got, want)
		}
	}
	wg.Wait()
	if st := p.Stats(); st.AcquireWaits != waiters || st.Total != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWaiterWhoseContextEndsLeavesAtOnce(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MaxConns: 1, MinIdle: -1})
	hold := mustAcquire(t, p, "holder")

	const short = 150 * time.Millisecond
	type result struct {
		l    *pool.Lease
		err  error
		late time.Duration // how long after the deadline it returned
	}
	shortDone := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), short)
		defer cancel()
		dl, _ := ctx.Deadline()
		l, err := p.Acquire(ctx, "impatient")
		shortDone <- result{l, err, time.Since(dl)}
	}()
	waitUntil(t, 2*time.Second, "first waiter queued", func() bool { return p.Stats().Waiting == 1 })
	longDone := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := p.Acquire(ctx, "patient")
		longDone <- result{l, err, 0}
	}()
	waitUntil(t, 2*time.Second, "second waiter queued", func() bool { return p.Stats().Waiting == 2 })

	r := <-shortDone
	var ae *pool.AcquireError
	if !errors.As(r.err, &ae) || !errors.Is(r.err, context.DeadlineExceeded) || ae.Stage != pool.StageWaiting {
		t.Fatalf("impatient waiter: %v", r.err)
	}
	if r.late > 100*time.Millisecond {
		t.Fatalf("impatient waiter returned %v after its deadline", r.late)
	}
	if n := p.Stats().Waiting; n != 1 {
		t.Fatalf("%d waiting after the impatient one left, want 1", n)
	}
	id := hold.ClientID()
	hold.Release()
	select {
	case r := <-longDone:
		if r.err != nil || r.l.ClientID() != id {
			t.Fatalf("patient waiter: %v", r.err)
		}
		r.l.Release()
	case <-time.After(3 * time.Second):
		t.Fatal("the release did not reach the next waiter")
	}
}

func TestConnectUnderWayIsNotWasted(t *testing.T) {
	srv := startSim(t)
	fid := mustFault(t, srv, &ibsim.Latency{LatencyMS: 400}) // handshake and startApi answers: ~800ms
	p := newPool(t, srv, pool.Config{MinIdle: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Acquire(ctx, "hasty")
	var ae *pool.AcquireError
	if !errors.As(err, &ae) || ae.Stage != pool.StageConnecting || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hasty acquire: %v", err)
	}
	waitUntil(t, 5*time.Second, "the abandoned connect joins the pool", func() bool {
		st := p.Stats()
		return st.Total == 1 && st.Idle == 1
	})
	if err := srv.RemoveFault(fid); err != nil {
		t.Fatal(err)
	}
	l := mustAcquire(t, p, "next")
	defer l.Release()
	if st := p.Stats(); st.Connects != 1 || st.ConnectAttempts != 1 {
		t.Fatalf("connects %d attempts %d, want the abandoned connect reused", st.Connects, st.ConnectAttempts)
	}
}

func TestValidationBypassedWithinWindowOnly(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: -1})
	l := mustAcquire(t, p, "first")
	id := l.ClientID()
	l.Release()
	if st := p.Stats(); st.Validations != 1 || st.ValidationsBypassed != 0 {
		t.Fatalf("first acquire: validations %d bypassed %d", st.Validations, st.ValidationsBypassed)
	}
	in := messagesIn(srv, id)

	l = mustAcquire(t, p, "within the window")
	l.Release()
	if st := p.Stats(); st.Validations != 1 || st.ValidationsBypassed != 1 {
		t.Fatalf("within the window: validations %d bypassed %d", st.Validations, st.ValidationsBypassed)
	}
	if got := messagesIn(srv, id); got != in {
		t.Fatalf("the gateway read %d messages during a bypassed acquire", got-in)
	}

	time.Sleep(1100 * time.Millisecond) // let the one-second bypass window pass
	l = mustAcquire(t, p, "after the window")
	l.Release()
	if st := p.Stats(); st.Validations != 2 || st.ValidationsBypassed != 1 {
		t.Fatalf("after the window: validations %d bypassed %d", st.Validations, st.ValidationsBypassed)
	}
	if got := messagesIn(srv, id); got != in+1 {
		t.Fatalf("the gateway read %d messages for a validation, want 1 (reqCurrentTime)", got-in)
	}
}

func TestClosedSocketRemovedAtOnce(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: -1})
	evs := followEvents(t, p)
	mustAcquire(t, p, "idle soon").Release()

	mustFault(t, srv, &ibsim.Drop{})
	waitUntil(t, time.Second, "dropped idle connection removed", func() bool { return p.Stats().Total == 0 })
	if n := p.Stats().Removals[pool.ReasonClosedByGateway]; n != 1 {
		t.Fatalf("closed_by_gateway removals %d", n)
	}
	waitUntil(t, time.Second, "removal event", func() bool {
		return evs.has(func(ev pool.Event) bool {
			return ev.Kind == pool.EventRemoved && ev.Detail == string(pool.ReasonClosedByGateway)
		})
	})
	l := mustAcquire(t, p, "after drop")
	if st := p.Stats(); st.Connects != 2 || st.AcquireFailures != 0 {
		t.Fatalf("connects %d failures %d", st.Connects, st.AcquireFailures)
	}

	// Dropped while leased: gone at once, and Release does not bring it back.
	mustFault(t, srv, &ibsim.Drop{})
	waitUntil(t, time.Second, "leased dropped connection removed", func() bool { return p.Stats().Total == 0 })
	l.Release()
	if st := p.Stats(); st.Total != 0 || st.Idle != 0 || st.Removals[pool.ReasonClosedByGateway] != 2 {
		t.Fatalf("after release of a dropped lease: %+v", st)
	}

	// A waiter is woken by the removal and served by a new connection.
	p1 := newPool(t, srv, pool.Config{MaxConns: 1, MinIdle: -1})
	hold := mustAcquire(t, p1, "holder")
	served := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := p1.Acquire(ctx, "waiter")
		if err == nil {
			l.Release()
		}
		served <- err
	}()
	waitUntil(t, 2*time.Second, "waiter queued", func() bool { return p1.Stats().Waiting == 1 })
	mustFault(t, srv, &ibsim.Drop{})
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("waiter not woken by the removal")
	}
	hold.Release()
}

func TestIdleConnectionsCollectedDownToMinIdle(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: 1, IdleTimeout: time.Second, HealthInterval: 100 * time.Millisecond})
	var ls []*pool.Lease
	for i := range 3 {
		ls = append(ls, mustAcquire(t, p, fmt.Sprint("l", i)))
	}
	for _, l := range ls {
		l.Release()
	}
	if n := p.Stats().Total; n != 3 {
		t.Fatalf("total %d, want 3", n)
	}
	waitUntil(t, 5*time.Second, "idle connections collected", func() bool { return p.Stats().Total == 1 })
	st := p.Stats()
	if st.Removals[pool.ReasonIdle] != 2 || len(st.Removals) != 1 || st.HealthProbes == 0 {
		t.Fatalf("removals %v health probes %d", st.Removals, st.HealthProbes)
	}
	// The survivor stays: MinIdle is kept warm.
	runs := st.HealthRuns
	waitUntil(t, 5*time.Second, "more health runs", func() bool { return p.Stats().HealthRuns >= runs+3 })
	if st := p.Stats(); st.Total != 1 {
		t.Fatalf("total %d after more health runs, want MinIdle 1", st.Total)
	}
}

func TestHealthLoopRemovesSilentIdleButNeverProbesLeased(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: -1, HealthInterval: 100 * time.Millisecond,
		ValidationTimeout: 250 * time.Millisecond, BreakerFailures: 100})
	leased := mustAcquire(t, p, "leased")
	idle := mustAcquire(t, p, "idle")
	leasedID, idleID := leased.ClientID(), idle.ClientID()
	idle.Release()
	// Both are silent: probing the leased one would remove it as well.
	mustFault(t, srv, &ibsim.Silent{}, ibsim.ForClients(leasedID, idleID))
	in := messagesIn(srv, leasedID)

	waitUntil(t, 5*time.Second, "silent idle connection removed", func() bool {
		return p.Stats().Removals[pool.ReasonFailedHealth] == 1
	})
	runs := p.Stats().HealthRuns
	waitUntil(t, 5*time.Second, "more health runs", func() bool { return p.Stats().HealthRuns >= runs+3 })
	st := p.Stats()
	if st.Total != 1 || len(st.Connections) != 1 || st.Connections[0].ClientID != leasedID || !st.Connections[0].InUse {
		t.Fatalf("connections %+v", st.Connections)
	}
	if got := messagesIn(srv, leasedID); got != in {
		t.Fatalf("the health loop sent %d messages on a leased connection", got-in)
	}
	if !leased.Conn().IsConnected() {
		t.Fatal("leased connection closed")
	}
	srv.ClearFaults()
	leased.Release()
}

func TestWarmMinimumWithoutAcquire(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: 2})
	waitUntil(t, 5*time.Second, "MinIdle warm connections", func() bool {
		st := p.Stats()
		return st.Total == 2 && st.Idle == 2
	})
	if st := p.Stats(); st.Acquires != 0 || st.Connects != 2 {
		t.Fatalf("acquires %d connects %d", st.Acquires, st.Connects)
	}
}

func TestBreakerFailsFastProbesGentlyAndRecovers(t *testing.T) {
	srv := startSim(t)
	var attempts atomic.Int64 // every dial and probe the pool makes
	p := newPool(t, srv, pool.Config{MinIdle: -1,
		Dial: func(ctx context.Context, cfg client.Config) (*client.Conn, error) {
			attempts.Add(1)
			return client.Dial(ctx, cfg)
		},
		Probe: func(ctx context.Context, addr string) (int, error) {
			attempts.Add(1)
			return client.ProbeHandshake(ctx, addr)
		},
	})
	fid := mustFault(t, srv, &ibsim.Refuse{})
	for i := range 3 {
		if _, err := p.Acquire(ctxFor(t, 2*time.Second), "refused"); err == nil || errors.Is(err, pool.ErrCircuitOpen) {
			t.Fatalf("acquire %d on a refusing gateway: %v", i, err)
		}
	}
	start := time.Now()
	_, err := p.Acquire(ctxFor(t, 2*time.Second), "fast fail")
	var ae *pool.AcquireError
	if took := time.Since(start); !errors.Is(err, pool.ErrCircuitOpen) || !errors.As(err, &ae) || took > 50*time.Millisecond {
		t.Fatalf("with the breaker open: %v after %v", err, took)
	}
	if st := p.Stats(); st.BreakerState != "open" {
		t.Fatalf("breaker %s", st.BreakerState)
	}

	// While the gateway stays down, callers keep asking every 50ms.
	const outage = 3 * time.Second
	before := attempts.Load()
	tick := time.NewTicker(50 * time.Millisecond)
	for t0 := time.Now(); time.Since(t0) < outage; <-tick.C {
		if l, err := p.Acquire(ctxFor(t, time.Second), "down"); err == nil {
			l.Release()
			t.Fatal("acquire succeeded while the gateway refuses")
		}
	}
	tick.Stop()
	if n := attempts.Load() - before; n > 4 || n < 1 {
		t.Fatalf("%d connection attempts in %v of outage, want 1..4 (about one a second)", n, outage)
	}

	if err := srv.RemoveFault(fid); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for {
		l, err := p.Acquire(ctxFor(t, time.Second), "recovering")
		if err == nil {
			l.Release()
			break
		}
		if time.Since(back) > 3*time.Second {
			t.Fatalf("no acquire within 3s of recovery: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the caller's retry pace
	}
	if took := time.Since(back); took > 1500*time.Millisecond {
		t.Fatalf("first acquire %v after the gateway came back, want <= 1.5s", took)
	}
	if st := p.Stats(); st.BreakerState != "closed" {
		t.Fatalf("breaker %s after recovery", st.BreakerState)
	}
}

// loader acquires in a loop with short deadlines and checks what it gets.
type loader struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	bad      []string
}

func startLoad(t *testing.T, p *pool.Pool, workers int) *loader {
	ld := &loader{stop: make(chan struct{})}
	t.Cleanup(ld.halt) // also when the test fails early
	for range workers {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			pace := time.NewTicker(20 * time.Millisecond)
			defer pace.Stop()
			for {
				select {
				case <-ld.stop:
					return
				case <-pace.C:
				}
				ld.once(p)
			}
		}()
	}
	return ld
}

func (ld *loader) once(p *pool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	l, err := p.Acquire(ctx, "load")
	if err != nil {
		ld.fail.Add(1)
		if ae := (*pool.AcquireError)(nil); !errors.As(err, &ae) {
			ld.report("untyped acquire error: %v", err)
		}
		return
	}
	ld.ok.Add(1)
	// The pool closes what it removes: a lease on a closed connection
	// is one whose validation failed, or that was otherwise discarded.
	if errors.Is(l.Conn().Err(), client.ErrClosed) {
		ld.report("leased a connection the pool had closed: %v", l.Conn().Err())
	}
	if _, err := l.Conn().CurrentTime(ctx); err != nil {
		l.Destroy()
		return
	}
	l.Release()
}

func (ld *loader) report(format string, args ...any) {
	ld.mu.Lock()
	ld.bad = append(ld.bad, fmt.Sprintf(format, args...))
	ld.mu.Unlock()
}

func (ld *loader) halt() {
	ld.stopOnce.Do(func() { close(ld.stop) })
	ld.wg.Wait()
}

func (ld *loader) finish(t *testing.T) {
	t.Helper()
	ld.halt()
	for _, b := range ld.bad {
		t.Error(b)
	}
	if ld.ok.Load()+ld.fail.Load() == 0 {
		t.Error("the load made no acquires")
	}
}

func TestEveryFaultKindRecovers(t *testing.T) {
	cases := []struct {
		name  string
		fault func() ibsim.Fault
	}{
		{"silent_handshake", func() ibsim.Fault { return &ibsim.SilentHandshake{} }},
		{"silent", func() ibsim.Fault { return &ibsim.Silent{} }},
		{"latency_below_validation", func() ibsim.Fault { return &ibsim.Latency{LatencyMS: 60, JitterMS: 40} }},
		{"latency_above_validation", func() ibsim.Fault { return &ibsim.Latency{LatencyMS: 400} }},
		{"drop", func() ibsim.Fault { return &ibsim.Drop{} }},
		{"refuse", func() ibsim.Fault { return &ibsim.Refuse{} }},
		{"restart", func() ibsim.Fault { return &ibsim.Restart{DownMS: 300} }},
		{"connectivity_loss", func() ibsim.Fault { return &ibsim.ConnectivityLoss{DataLost: true} }},
		{"farm_broken", func() ibsim.Fault { return &ibsim.FarmBroken{Farm: "secdef"} }},
		{"client_id_in_use", func() ibsim.Fault { return &ibsim.ClientIDInUse{ClientIDs: []int{1, 2, 3}} }},
		{"current_time_quirk", func() ibsim.Fault { return &ibsim.CurrentTimeQuirk{} }},
		{"garbage_oversize", func() ibsim.Fault { return &ibsim.Garbage{Mode: "oversize"} }},
		{"garbage_fields", func() ibsim.Fault { return &ibsim.Garbage{Mode: "fields"} }},
	}
	for _, tc := range cases {
		for _, withLoad := range []bool{false, true} {
			name := tc.name
			if withLoad {
				name += "/load"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				faultScenario(t, tc.fault(), withLoad)
			})
		}
	}
}

func faultScenario(t *testing.T, fault ibsim.Fault, withLoad bool) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{
		MaxConns: 4, MinIdle: 1,
		ConnectTimeout: 500 * time.Millisecond, ValidationTimeout: 250 * time.Millisecond,
		IdleTimeout: time.Second, HealthInterval: 100 * time.Millisecond,
		BreakerProbeInterval: 100 * time.Millisecond,
		ClientIDCooldown:     time.Second, ClientIDPause: 20 * time.Millisecond,
	})
	evs := followEvents(t, p)
	mustAcquire(t, p, "warm").Release()
	var ld *loader
	if withLoad {
		ld = startLoad(t, p, 3)
	}
	mustFault(t, srv, fault)
	degrading := fault.Kind() == "connectivity_loss"
	if degrading {
		waitUntil(t, 2*time.Second, "pool degraded on 1100", func() bool { return p.Stats().Degraded })
	}
	time.Sleep(300 * time.Millisecond) // the fault acts for a while
	srv.ClearFaults()
	cleared := time.Now()

	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l, err := p.Acquire(ctx, "after the fault")
		if err == nil {
			// Served again: a fresh request on it is answered.
			_, err = l.Conn().ContractDetails(ctx, aapl)
			if err == nil {
				l.Release()
			} else {
				l.Destroy()
			}
		}
		cancel()
		if err == nil {
			break
		}
		lastErr = err
		if time.Since(cleared) > 5*time.Second {
			t.Fatalf("not served within 5s of the fault's end; last error: %v; stats %+v", lastErr, p.Stats())
		}
		time.Sleep(20 * time.Millisecond) // the caller's retry pace
	}
	if ld != nil {
		ld.finish(t)
	}
	if degrading {
		waitUntil(t, 2*time.Second, "degraded cleared on 1101", func() bool { return !p.Stats().Degraded })
		for _, on := range []bool{true, false} {
			waitUntil(t, time.Second, fmt.Sprintf("degraded=%v event", on), func() bool {
				return evs.has(func(ev pool.Event) bool { return ev.Kind == pool.EventDegraded && ev.Degraded == on })
			})
		}
	}
	st := p.Stats()
	if st.Total > st.MaxConns {
		t.Errorf("total %d above max %d", st.Total, st.MaxConns)
	}
	ids := map[int]bool{}
	for _, c := range st.Connections {
		if ids[c.ClientID] {
			t.Errorf("two live connections with client id %d", c.ClientID)
		}
		ids[c.ClientID] = true
	}
}

func TestClientIDFallbackHonoursPause(t *testing.T) {
	srv := startSim(t)
	mustFault(t, srv, &ibsim.ClientIDInUse{ClientIDs: []int{1, 2}})
	const pause = 100 * time.Millisecond
	p := newPool(t, srv, pool.Config{MinIdle: -1, ClientIDPause: pause, ClientIDCooldown: time.Second})
	start := time.Now()
	l := mustAcquire(t, p, "fallback")
	took := time.Since(start)
	defer l.Release()
	if l.ClientID() != 3 {
		t.Fatalf("client id %d, want 3", l.ClientID())
	}
	if took < 2*pause {
		t.Fatalf("three attempts in %v, want >= %v (two pauses)", took, 2*pause)
	}
	st := p.Stats()
	if st.ClientIDConflicts != 2 || st.ConnectAttempts != 3 || !slices.Equal(st.ClientIDsResting, []int{1, 2}) ||
		st.Removals[pool.Reason326] != 0 {
		t.Fatalf("conflicts %d attempts %d resting %v", st.ClientIDConflicts, st.ConnectAttempts, st.ClientIDsResting)
	}
}

func TestLeakReportedWithLabel(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: -1, LeakThreshold: 200 * time.Millisecond, BreakerProbeInterval: 100 * time.Millisecond})
	evs := followEvents(t, p)
	l := mustAcquire(t, p, "leaky")
	waitUntil(t, 3*time.Second, "leak in stats", func() bool {
		leaks := p.Stats().Leaks
		return len(leaks) == 1 && leaks[0].Label == "leaky" && leaks[0].ClientID == l.ClientID() && leaks[0].HeldFor >= 200*time.Millisecond
	})
	waitUntil(t, time.Second, "leak event", func() bool {
		return evs.has(func(ev pool.Event) bool { return ev.Kind == pool.EventLeak && ev.Detail == "leaky" })
	})
	l.Release()
	waitUntil(t, 3*time.Second, "leak cleared after release", func() bool { return len(p.Stats().Leaks) == 0 })
	if n := p.Stats().LeaksReported; n != 1 {
		t.Fatalf("leaks reported %d, want 1", n)
	}
}

func TestCloseWithWaitersAndLeasesOut(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MaxConns: 1, MinIdle: -1})
	l := mustAcquire(t, p, "out")
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			l, err := p.Acquire(ctx, "waiting")
			if err == nil {
				l.Release()
			}
			errs <- err
		}()
		waitUntil(t, 2*time.Second, "waiter queued", func() bool { return p.Stats().Waiting == i+1 })
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-errs:
			var ae *pool.AcquireError
			if !errors.Is(err, pool.ErrClosed) || !errors.As(err, &ae) {
				t.Fatalf("waiter after Close: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("waiter not released by Close")
		}
	}
	l.Release() // no-op
	l.Destroy() // no-op
	if _, err := p.Acquire(ctxFor(t, time.Second), "late"); !errors.Is(err, pool.ErrClosed) {
		t.Fatalf("acquire after Close: %v", err)
	}
	st := p.Stats()
	if !st.Closed || st.Total != 0 || st.Idle != 0 || st.Removals[pool.ReasonPoolClosed] != 1 || len(st.Removals) != 1 {
		t.Fatalf("after Close: %+v", st)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	goleak.VerifyNone(t)
}

func TestBreakerProbesOnItsOwnOncePerInterval(t *testing.T) {
	srv := startSim(t)
	var probes atomic.Int64
	p := newPool(t, srv, pool.Config{MinIdle: -1, BreakerProbeInterval: time.Second,
		Probe: func(ctx context.Context, addr string) (int, error) {
			probes.Add(1)
			return client.ProbeHandshake(ctx, addr)
		},
	})
	fid := mustFault(t, srv, &ibsim.Refuse{})
	for range 3 {
		p.Acquire(ctxFor(t, 2*time.Second), "refused")
	}
	if st := p.Stats(); st.BreakerState != "open" {
		t.Fatalf("breaker %s", st.BreakerState)
	}
	// No caller asks: the pool alone probes, once per interval.
	time.Sleep(3300 * time.Millisecond) // an outage of a few intervals
	if n := probes.Load(); n < 3 || n > 4 {
		t.Fatalf("%d probes in 3.3s of outage with a 1s interval, want 3..4", n)
	}
	if err := srv.RemoveFault(fid); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 1300*time.Millisecond, "breaker closed by a probe", func() bool { return p.Stats().BreakerState == "closed" })
	mustAcquire(t, p, "after").Release()
}

func TestCallerLeavingMidValidationDoesNotCostTheConnection(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{MinIdle: -1, ValidationTimeout: time.Second})
	mustAcquire(t, p, "first").Release()
	time.Sleep(1100 * time.Millisecond) // let the bypass window pass: the next acquire validates
	mustFault(t, srv, &ibsim.Latency{LatencyMS: 300})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Acquire(ctx, "hasty")
	var ae *pool.AcquireError
	if !errors.As(err, &ae) || ae.Stage != pool.StageValidating || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hasty acquire: %v", err)
	}
	// The round trip goes on without the caller and its connection returns.
	waitUntil(t, 2*time.Second, "validated connection back in the pool", func() bool {
		st := p.Stats()
		return st.Idle == 1 && st.Validations == 2
	})
	srv.ClearFaults()
	st := p.Stats()
	if st.ValidationFailures != 0 || len(st.Removals) != 0 || st.BreakerConsecutiveKO != 0 || st.SilentDetected != 0 {
		t.Fatalf("a caller's deadline counted against the gateway: %+v", st)
	}
	l := mustAcquire(t, p, "next")
	l.Release()
	if st := p.Stats(); st.Connects != 1 || st.ValidationsBypassed != 1 {
		t.Fatalf("connects %d bypassed %d: want the same connection, proven alive", st.Connects, st.ValidationsBypassed)
	}
}

func TestConnectionOpenedDuringOutageMarksDegraded(t *testing.T) {
	srv := startSim(t)
	fid := mustFault(t, srv, &ibsim.ConnectivityLoss{})
	p := newPool(t, srv, pool.Config{MinIdle: -1})
	l := mustAcquire(t, p, "mid-outage") // its greeting carries 1100
	defer l.Release()
	waitUntil(t, 2*time.Second, "degraded from the greeting's 1100", func() bool { return p.Stats().Degraded })
	if err := srv.RemoveFault(fid); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, "restored on 1102", func() bool {
		st := p.Stats()
		return !st.Degraded && st.LastConnEvent.Code == client.CodeRestoredDataKept
	})
}
