package e2e

import (
	"context"
	"fmt"
	"os"
	"time"
)

// sample is the server's resource use at one moment.
type sample struct {
	at         time.Time
	goroutines int
	fds        int     // open file descriptors; -1 when they cannot be counted
	heap       float64 // bytes in use by the heap; -1 when not reported
	poolTotal  int
	poolInUse  int
}

// sample reads goroutines from /api/v1/health, descriptors from /proc for
// a local server (else from the process_open_fds metric), the heap from
// /metrics and the pool's size from the status.
func (e *env) sample(ctx context.Context) (sample, error) {
	s := sample{at: time.Now(), fds: -1, heap: -1}
	h, err := e.api.serviceHealth(ctx)
	if err != nil {
		return s, err
	}
	s.goroutines = h.Goroutines
	m, err := e.api.metrics(ctx)
	if err == nil {
		if v, ok := m["go_memstats_heap_inuse_bytes"]; ok {
			s.heap = v
		}
		if v, ok := m["process_open_fds"]; ok {
			s.fds = int(v)
		}
	}
	if e.pid > 0 {
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.pid)); err == nil {
			s.fds = len(ents)
		}
	}
	st, err := e.api.status(ctx)
	if err != nil {
		return s, err
	}
	s.poolTotal, s.poolInUse = st.Pool.Total, st.Pool.InUse
	return s, nil
}

// tolerance is how far above its baseline a count may settle without
// counting as a leak: background work (a health check, the health loop's
// probes, a connection being replaced) comes and goes.
func tolerance(base int) int { return max(3, base/10) }

// settleTimeout bounds the wait for the server to return to its baseline.
const settleTimeout = 20 * time.Second

// settle brings the server to a state comparable with another settled one:
// the runner's kept-alive sockets closed, idle pool connections closed
// and the pool back to wantPool connections, nothing in use; then it waits
// until the goroutine count holds still. If base is given it returns as
// soon as the counts are within tolerance of it.
func (e *env) settle(ctx context.Context, base *sample, wantPool int) (sample, error) {
	e.api.closeIdle()
	if err := e.api.cleanup(ctx, false); err != nil {
		return sample{}, err
	}
	e.api.closeIdle()
	var last sample
	steady := 0
	_, err := poll(ctx, settleTimeout, 300*time.Millisecond, func(ctx context.Context) error {
		s, err := e.sample(ctx)
		e.api.closeIdle()
		if err != nil {
			return err
		}
		if base != nil && s.goroutines <= base.goroutines+tolerance(base.goroutines) &&
			(s.fds < 0 || base.fds < 0 || s.fds <= base.fds+tolerance(base.fds)) && s.poolInUse == 0 && s.poolTotal == wantPool {
			last = s
			return nil
		}
		if s.goroutines == last.goroutines && s.fds == last.fds && s.poolInUse == 0 && s.poolTotal == wantPool {
			steady++
		} else {
			steady = 0
		}
		last = s
		if steady >= 3 {
			return nil
		}
		return errNotYet
	})
	if err != nil && last.at.IsZero() {
		return last, err
	}
	return last, nil
}

// leakFigure compares a settled sample with the baseline.
func leakFigure(base, now sample) (figure string, ok bool) {
	gTol := tolerance(base.goroutines)
	ok = now.goroutines <= base.goroutines+gTol
	figure = fmt.Sprintf("goroutines %d -> %d (%+d, tolerance +%d)", base.goroutines, now.goroutines, now.goroutines-base.goroutines, gTol)
	if base.fds >= 0 && now.fds >= 0 {
		fTol := tolerance(base.fds)
		ok = ok && now.fds <= base.fds+fTol
		figure += fmt.Sprintf("; open fds %d -> %d (%+d, tolerance +%d)", base.fds, now.fds, now.fds-base.fds, fTol)
	} else {
		figure += "; open fds not measurable"
	}
	return figure, ok
}
