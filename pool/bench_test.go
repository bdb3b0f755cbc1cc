package pool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/pool"
)

func benchSim(b *testing.B) *ibsim.Server {
	b.Helper()
	srv, err := ibsim.Start(ibsim.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return srv
}

func benchPool(b *testing.B, srv *ibsim.Server, cfg pool.Config) *pool.Pool {
	b.Helper()
	cfg.Addr = srv.Addr()
	p, err := pool.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkAcquireReleaseBypass is the cost of a handoff of a connection
// proven alive within the bypass window: no network round trip. (Once a
// second the window lapses and one acquire validates; bypassed/op says how
// many did not.)
func BenchmarkAcquireReleaseBypass(b *testing.B) {
	srv := benchSim(b)
	p := benchPool(b, srv, pool.Config{MaxConns: 1, MinIdle: -1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	mustAcquire(b, p, "warm").Release()
	before := p.Stats().ValidationsBypassed
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		l, err := p.Acquire(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
	b.StopTimer()
	b.ReportMetric(float64(p.Stats().ValidationsBypassed-before)/float64(b.N), "bypassed/op")
}

// BenchmarkAcquireReleaseValidated is the cost of a handoff that validates
// with a real reqCurrentTime round trip. A connection answers at most one
// reqCurrentTime a second (the client shares answers younger than that and
// the pool bypasses within its window), so each iteration gets a fresh,
// never-validated connection: the warm-up connect happens with the timer
// stopped, only Acquire (with its round trip) and Release are timed.
// Compare with BenchmarkRawLoopbackRoundTrip. The untimed connect makes
// each iteration cost a few milliseconds of wall time: -benchtime=2s runs
// for about a minute, -benchtime=2000x is plenty for a figure.
func BenchmarkAcquireReleaseValidated(b *testing.B) {
	srv := benchSim(b)
	p := benchPool(b, srv, pool.Config{MaxConns: 1, MinIdle: 1, ClientIDPause: time.Millisecond,
		// Reuse the one client id only once the gateway has let its previous
		// session go, as a restarted client would find it.
		Dial: func(ctx context.Context, cfg client.Config) (*client.Conn, error) {
			for messagesIn(srv, cfg.ClientID) >= 0 && ctx.Err() == nil {
				time.Sleep(200 * time.Microsecond)
			}
			return client.Dial(ctx, cfg)
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	freshIdle := func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := p.Stats()
			if st.Idle == 1 && st.Connections[0].LastAlive.IsZero() {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("no fresh warm connection: %+v\nsim %+v", st, srv.State())
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	freshIdle()
	st0 := p.Stats()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l, err := p.Acquire(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
		b.StopTimer()
		mustAcquire(b, p, "retire").Destroy() // bypassed: it was just validated
		freshIdle()
		b.StartTimer()
	}
	b.StopTimer()
	st := p.Stats()
	validated := st.Validations - st0.Validations
	if validated != int64(b.N) || st.ValidationFailures != 0 {
		b.Fatalf("%d validations for %d acquires, %d failed", validated, b.N, st.ValidationFailures)
	}
	b.ReportMetric(float64(validated)/float64(b.N), "validations/op")
	b.ReportMetric(float64(st.ValidationP50.Microseconds()), "validation_p50_µs")
}

// BenchmarkRawLoopbackRoundTrip is a 16-byte TCP echo on loopback: the floor
// under any gateway round trip on this machine.
func BenchmarkRawLoopbackRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	msg, reply := make([]byte, 16), make([]byte, 16)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/roundtrip")
	c.Close()
	ln.Close()
	<-done
}

// BenchmarkSilentDetection is how long an Acquire takes to report a
// gateway that accepts a connection and never answers (ValidationTimeout 250ms).
func BenchmarkSilentDetection(b *testing.B) {
	srv := benchSim(b)
	if _, err := srv.AddFault(&ibsim.Silent{}); err != nil {
		b.Fatal(err)
	}
	p := benchPool(b, srv, pool.Config{MaxConns: 1, MinIdle: 1, ValidationTimeout: 250 * time.Millisecond,
		BreakerFailures: 1 << 20}) // keep the breaker out of it: each acquire meets the silence
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		waitUntil(b, 5*time.Second, "warm connection", func() bool { return p.Stats().Idle == 1 })
		b.StartTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		_, err := p.Acquire(ctx, "bench")
		total += time.Since(start)
		cancel()
		if !errors.Is(err, pool.ErrSilentGateway) {
			b.Fatalf("acquire on a silent gateway: %v", err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/detect")
}

// BenchmarkRecoveryAfterRestart restarts the gateway 20 times (down 500ms)
// while a caller retries Acquire every 10ms, and measures from the moment
// the gateway listens again to the first successful Acquire. Run with
// -benchtime=1x.
func BenchmarkRecoveryAfterRestart(b *testing.B) {
	const restarts = 20
	srv := benchSim(b)
	var attempts atomic.Int64
	p := benchPool(b, srv, pool.Config{
		Dial: func(ctx context.Context, cfg client.Config) (*client.Conn, error) {
			attempts.Add(1)
			return client.Dial(ctx, cfg)
		},
		Probe: func(ctx context.Context, addr string) (int, error) {
			attempts.Add(1)
			return client.ProbeHandshake(ctx, addr)
		},
	})
	mustAcquire(b, p, "warm").Release()
	var recov []time.Duration
	var downAttempts int64
	b.ResetTimer()
	for range b.N {
		for range restarts {
			a0 := attempts.Load()
			if _, err := srv.AddFault(&ibsim.Restart{DownMS: 500}); err != nil {
				b.Fatal(err)
			}
			// The dropped connections are gone from the pool before the
			// caller starts asking.
			waitUntil(b, time.Second, "dropped connections removed", func() bool { return p.Stats().Total == 0 })
			listening := make(chan time.Time, 1)
			go func() { // note the moment the gateway listens again
				for !srv.State().Listening {
					time.Sleep(200 * time.Microsecond)
				}
				listening <- time.Now()
			}()
			var back time.Time
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				l, err := p.Acquire(ctx, "bench")
				cancel()
				if back.IsZero() {
					select {
					case back = <-listening:
						downAttempts += attempts.Load() - a0
					default:
					}
				}
				if err == nil {
					l.Release()
					if back.IsZero() {
						back = <-listening
						downAttempts += attempts.Load() - a0
					}
					recov = append(recov, time.Since(back))
					break
				}
				time.Sleep(10 * time.Millisecond) // the caller's retry pace
			}
		}
	}
	b.StopTimer()
	slices.Sort(recov)
	at := func(q float64) float64 {
		return float64(recov[min(len(recov)-1, int(q*float64(len(recov))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50_ms")
	b.ReportMetric(at(0.95), "p95_ms")
	b.ReportMetric(float64(recov[len(recov)-1].Microseconds())/1000, "max_ms")
	b.ReportMetric(float64(downAttempts)/float64(len(recov)), "attempts/outage")
}
