package loader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Mode says which part of a range a load fetches.
type Mode string

// Load modes.
const (
	// ModeTail continues from the last stored bar to the end.
	ModeTail Mode = "tail"
	// ModeBackfill fills from the start up to the first stored bar.
	ModeBackfill Mode = "backfill"
	// ModeFull covers the whole range, fetching only the segments with
	// bars missing.
	ModeFull Mode = "full"
)

// ParseMode accepts tail, backfill and full; empty means tail.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModeTail, nil
	case ModeTail, ModeBackfill, ModeFull:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: want tail, backfill or full", s)
}

// Status is an operation's state.
type Status string

// Operation states. Only running changes.
const (
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Operation is a load as the API reports it.
type Operation struct {
	ID        string `json:"id"`
	Type      string `json:"type"` // "data_load"
	Status    Status `json:"status"`
	Symbol    string `json:"symbol"` // the series key (EUR.USD for EURUSD)
	Timeframe string `json:"timeframe"`
	BarSize   string `json:"bar_size"`
	Mode      Mode   `json:"mode"`
	UseRTH    bool   `json:"use_rth"`
	// Requested* are the dates asked for (null: the default); Start and End
	// the range actually loaded, once planned.
	RequestedStart *time.Time `json:"requested_start"`
	RequestedEnd   *time.Time `json:"requested_end"`
	Start          *time.Time `json:"start"`
	End            *time.Time `json:"end"`
	CreatedAt      time.Time  `json:"created_at"`
	FinishedAt     *time.Time `json:"finished_at"`
	Progress       Progress   `json:"progress"`
	// Errors lists the failures met on the way (retried or not), the
	// last maxOpErrors of them.
	Errors []OpError `json:"errors"`
	// Error says why the operation failed or was cancelled.
	Error string `json:"error,omitempty"`
	// Note explains an operation that had nothing to do, or a template
	// assumed for want of trading hours.
	Note string `json:"note,omitempty"`
}

// Progress counts an operation's work.
type Progress struct {
	SegmentsTotal   int `json:"segments_total"`
	SegmentsDone    int `json:"segments_done"`    // skipped, empty or fetched
	SegmentsSkipped int `json:"segments_skipped"` // every bar already stored
	SegmentsEmpty   int `json:"segments_empty"`   // IB had no data (a holiday, before the first bar)
	BarsExpected    int `json:"bars_expected"`    // what the trading hours promise in the range
	BarsFetched     int `json:"bars_fetched"`
	BarsStored      int `json:"bars_stored"` // new or changed in the store
	Requests        int `json:"requests"`
	Retries         int `json:"retries"`
	// Pacing: the requests that had to wait for the scheduler, and for how
	// long in all; violations are 162 pacing answers met anyway.
	PacingWaits       int     `json:"pacing_waits"`
	PacingWaitSeconds float64 `json:"pacing_wait_seconds"`
	PacingViolations  int     `json:"pacing_violations"`
	// PacingWaiting is true while a request waits for its pacing slot.
	PacingWaiting  bool    `json:"pacing_waiting"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// ETASeconds estimates the time left from the pace of the segments
	// fetched so far; null until one is.
	ETASeconds *float64 `json:"eta_seconds"`
	Percent    float64  `json:"percent"`
	// Current is the segment being fetched.
	Current *Segment `json:"current_segment,omitempty"`
}

// OpError is one failure during an operation.
type OpError struct {
	Time    time.Time `json:"time"`
	Segment string    `json:"segment,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	Kind    string    `json:"kind"` // transient, permanent, pacing
	Message string    `json:"message"`
}

// maxOpErrors bounds the errors an operation keeps.
const maxOpErrors = 20

// op is a running or finished operation. Its fields change under mu; the
// API reads snapshots.
type op struct {
	mu      sync.Mutex
	o       Operation
	started time.Time
	// fetchTime is the time spent on segments that were fetched, for the ETA.
	fetchTime time.Duration
	fetched   int // segments fetched (not skipped)
	toFetch   int
	cancel    context.CancelCauseFunc
	done      chan struct{}
}

func newOpID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "op_" + hex.EncodeToString(b[:])
}

// snapshot copies the operation for readers.
func (p *op) snapshot(now time.Time) Operation {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.o
	o.Errors = append([]OpError{}, p.o.Errors...)
	if cur := p.o.Progress.Current; cur != nil {
		c := *cur
		o.Progress.Current = &c
	}
	end := now
	if o.FinishedAt != nil {
		end = *o.FinishedAt
	}
	o.Progress.ElapsedSeconds = end.Sub(p.started).Seconds()
	if o.Status == StatusRunning && p.fetched > 0 {
		eta := (p.fetchTime / time.Duration(p.fetched) * time.Duration(max(p.toFetch-p.fetched, 0))).Seconds()
		o.Progress.ETASeconds = &eta
	} else if o.Status != StatusRunning {
		zero := 0.0
		o.Progress.ETASeconds = &zero
	}
	if t := o.Progress.SegmentsTotal; t > 0 {
		o.Progress.Percent = float64(o.Progress.SegmentsDone) / float64(t) * 100
	} else if o.Status == StatusCompleted {
		o.Progress.Percent = 100
	}
	return o
}

func (p *op) update(f func(o *Operation)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.o)
}

func (p *op) addError(e OpError) {
	p.update(func(o *Operation) {
		o.Errors = append(o.Errors, e)
		if len(o.Errors) > maxOpErrors {
			o.Errors = o.Errors[len(o.Errors)-maxOpErrors:]
		}
	})
}

// registry keeps running operations and the last finished ones.
type registry struct {
	mu       sync.Mutex
	ops      map[string]*op
	finished []string // ids, oldest first
	keep     int
}

func newRegistry(keep int) *registry {
	return &registry{ops: map[string]*op{}, keep: keep}
}

func (r *registry) add(p *op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops[p.o.ID] = p
}

// running returns the running operation on the series, if any.
func (r *registry) running(symbol, timeframe string) *op {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.ops {
		p.mu.Lock()
		same := p.o.Status == StatusRunning && p.o.Symbol == symbol && p.o.Timeframe == timeframe
		p.mu.Unlock()
		if same {
			return p
		}
	}
	return nil
}

// finish records that p ended and forgets the oldest finished operations
// beyond keep.
func (r *registry) finish(p *op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = append(r.finished, p.o.ID)
	for len(r.finished) > r.keep {
		delete(r.ops, r.finished[0])
		r.finished = r.finished[1:]
	}
}

func (r *registry) get(id string) *op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ops[id]
}

func (r *registry) all() []*op {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*op, 0, len(r.ops))
	for _, p := range r.ops {
		out = append(out, p)
	}
	return out
}
