package pool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPool(t *testing.T, srv *ibsim.Server, cfg pool.Config) *pool.Pool {
	t.Helper()
	cfg.Addr = srv.Addr()
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func startSim(t *testing.T) *ibsim.Server {
	t.Helper()
	srv, err := ibsim.Start(ibsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestAcquireValidatesAndReuses(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{})
	l, err := p.Acquire(ctxFor(t, 5*time.Second), "test")
	if err != nil {
		t.Fatal(err)
	}
	if l.ClientID() != 1 {
		t.Fatalf("client id %d, want 1", l.ClientID())
	}
	if _, err := l.Conn().CurrentTime(ctxFor(t, 3*time.Second)); err != nil {
		t.Fatal(err)
	}
	l.Release()
	l.Release() // idempotent
	l2, err := p.Acquire(ctxFor(t, 5*time.Second), "again")
	if err != nil || l2.ClientID() != 1 {
		t.Fatalf("reacquire: %v", err)
	}
	l2.Release()
	st := p.Stats()
	if st.Total != 1 || st.Validations < 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSilentGatewayNeverHandedOut(t *testing.T) {
	srv := startSim(t)
	p := newPool(t, srv, pool.Config{ValidationTimeout: 300 * time.Millisecond, ValidationBypass: time.Second})
	l, err := p.Acquire(ctxFor(t, 5*time.Second), "warm")
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	time.Sleep(1100 * time.Millisecond) // outlive the bypass window so validation runs
	if _, err := srv.AddFault(&ibsim.Silent{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = p.Acquire(ctxFor(t, 10*time.Second), "silent")
	took := time.Since(start)
	if !errors.Is(err, pool.ErrSilentGateway) {
		t.Fatalf("acquire on silent gateway: %v", err)
	}
	if took > 300*time.Millisecond+500*time.Millisecond {
		t.Fatalf("took %v", took)
	}
	if st := p.Stats(); st.SilentDetected != 1 || st.Removals[pool.ReasonFailedValidation] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestClientIDFallbackAndReuse(t *testing.T) {
	srv := startSim(t)
	fid, err := srv.AddFault(&ibsim.ClientIDInUse{ClientIDs: []int{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, srv, pool.Config{MinIdle: -1, ClientIDCooldown: time.Second, ClientIDPause: 10 * time.Millisecond})
	l, err := p.Acquire(ctxFor(t, 5*time.Second), "a")
	if err != nil || l.ClientID() != 3 {
		t.Fatalf("got %v %v, want id 3", l, err)
	}
	if st := p.Stats(); st.ClientIDConflicts != 2 {
		t.Fatalf("conflicts %d", st.ClientIDConflicts)
	}
	l.Destroy()
	if err := srv.RemoveFault(fid); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the cool-down of ids 1 and 2
	l, err = p.Acquire(ctxFor(t, 5*time.Second), "b")
	if err != nil || l.ClientID() != 1 {
		t.Fatalf("after cool-down got %v %v, want id 1", l, err)
	}
	l.Release()
}
