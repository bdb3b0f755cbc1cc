package e2e

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Operation kinds.
const (
	opAPI = "api"
	opCLI = "cli"
)

// op is one API call or CLI command the runner made.
type op struct {
	kind     string
	name     string
	took     time.Duration
	deadline time.Duration
	failed   bool   // no answer, a 5xx, a non-envelope, or a CLI crash
	status   int    // HTTP status or exit code
	err      string // why there was no answer
}

func (o op) hung() bool { return o.took > o.deadline }

// recorder keeps every operation of a run, so that hung operations and
// latencies are counted from everything the runner did, not from samples.
type recorder struct {
	mu  sync.Mutex
	ops []op
}

func (r *recorder) add(o op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// mark returns a position; since(mark) returns what was added after it.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

func (r *recorder) since(mark int) []op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops[mark:])
}

// opStats summarises operations of one kind.
type opStats struct {
	n, failed, hung int
	p50, p99, max   time.Duration
	slowest         op
	hungNames       []string
}

func summarize(ops []op, kind string) opStats {
	var s opStats
	var d []time.Duration
	seen := map[string]bool{}
	for _, o := range ops {
		if o.kind != kind {
			continue
		}
		s.n++
		d = append(d, o.took)
		if o.failed {
			s.failed++
		}
		if o.took > s.max {
			s.max, s.slowest = o.took, o
		}
		if o.hung() {
			s.hung++
			if !seen[o.name] {
				seen[o.name] = true
				s.hungNames = append(s.hungNames, fmt.Sprintf("%s (%s)", o.name, fmtDur(o.took)))
			}
		}
	}
	if len(d) > 0 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		s.p50, s.p99 = quantile(d, 0.50), quantile(d, 0.99)
	}
	return s
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (s opStats) describe() string {
	if s.n == 0 {
		return "no operations"
	}
	return fmt.Sprintf("%d ops, p50 %s, p99 %s, max %s, %d failed", s.n, fmtDur(s.p50), fmtDur(s.p99), fmtDur(s.max), s.failed)
}
