// Package loader fetches historical bars from IB into the bar store.
//
// A load covers one series (symbol, timeframe) over a range. The range is
// cut into segments no longer than IB's step-size table allows for the bar
// size, each one historical request. Segments whose bars are all stored
// already are skipped, so loads are cheap to repeat; the rest are fetched
// one after the other through the connection pool, every request first
// waiting on the process's pacing scheduler, and stored as they arrive:
// a load stopped half-way keeps every segment it finished and can simply
// be run again.
//
// What counts as missing comes from the instrument's trading hours (see
// hours.go): nights, weekends and the FX daily break are never gaps.
package loader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/internal/pacing"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/internal/store"
	"github.com/ktrdr/ktrdr/pool"
	"github.com/ktrdr/ktrdr/tws"
)

// Gateway is what the loader needs of the IB service: symbol discovery
// (contract id, exchange, time zone, trading hours, head timestamp) and
// the current connection pool. *service.IB satisfies it.
type Gateway interface {
	Discover(ctx context.Context, symbol string, force bool) (service.Instrument, error)
	Pool() *pool.Pool
}

// Defaults of Config.
const (
	DefaultRequestTimeout   = 60 * time.Second
	DefaultMaxAttempts      = 5
	DefaultBackoffBase      = time.Second
	DefaultBackoffMax       = 30 * time.Second
	DefaultMaxPacingRetries = 6
	DefaultKeepFinished     = 100
	DefaultMaxRunning       = 16
)

// Config configures a Loader. Gateway, Store and Pacing are required.
type Config struct {
	Gateway Gateway
	Store   store.Store
	// Pacing is the process's one scheduler: every historical request
	// waits on it first.
	Pacing *pacing.Scheduler
	// Scale is the time scale Pacing was made with (pacing.Config.Scale);
	// the loader's own same-contract spacing (see request) divides IB's
	// window by it too. Default 1, a real gateway.
	Scale float64
	// Now is the clock that decides what "now" is for a range's end and
	// which bars are complete; default time.Now.
	Now func() time.Time
	// AllHours fetches bars outside regular trading hours too (useRTH
	// false, the instrument's trading hours instead of its liquid hours).
	// It is a setting of the whole store, not of a load, because RTH and
	// all-hours bars of the same size start at different times and must
	// not share a series.
	AllHours bool
	// RequestTimeout bounds acquiring a connection and, separately, one
	// historical request; default 60s, because IB can take tens of seconds
	// to answer a large request from cold storage.
	RequestTimeout time.Duration
	// MaxAttempts bounds the tries of one segment on transient failures
	// (connection lost, no answer, circuit open, data farm down); default 5.
	MaxAttempts int
	// BackoffBase is the pause after the first transient failure, doubling
	// with each further one up to BackoffMax; defaults 1s and 30s.
	BackoffBase, BackoffMax time.Duration
	// MaxPacingRetries bounds how often one segment may meet a pacing
	// violation (error 162) before the load fails; default 6.
	MaxPacingRetries int
	// KeepFinished is how many finished operations stay listed; default 100.
	KeepFinished int
	// MaxRunning caps concurrent loads; default 16. They share one pacing
	// budget, so more would only queue on the scheduler.
	MaxRunning int
	// Logger; default discards.
	Logger *slog.Logger
}

// Errors callers can test with errors.Is.
var (
	// ErrBusy: a load of the same series is already running.
	ErrBusy = errors.New("a load of this series is already running")
	// ErrTooMany: MaxRunning loads are running.
	ErrTooMany = errors.New("too many loads running")
	// ErrNoOperation: no operation has that id (or it was forgotten).
	ErrNoOperation = errors.New("no such operation")
	// ErrClosed: the loader was closed.
	ErrClosed = errors.New("loader closed")
	// errCancelled is the cause of a cancellation by request.
	errCancelled = errors.New("cancelled by request")
	// errShutdown is the cause of a cancellation by Close.
	errShutdown = errors.New("cancelled: the service is shutting down")
)

// Loader runs loads and answers bar queries. It owns the goroutines of the
// operations it starts; Close stops them. Safe for concurrent use.
type Loader struct {
	cfg Config
	log *slog.Logger
	reg *registry

	ctx  context.Context
	stop context.CancelCauseFunc
	wg   sync.WaitGroup

	mu     sync.Mutex // guards closed and wg.Add against Close
	closed bool

	// contracts holds, per contract (conId, exchange, tick type), the turn
	// and recent answers of paced requests; see request.
	contractsMu sync.Mutex
	contracts   map[string]*contractPace

	// discTurn makes the loader's symbol lookups one at a time: the
	// service publishes a new cache entry before it has finished writing
	// it, so two first lookups of one symbol at once would race.
	discTurn chan struct{}

	requests, retries, violations, barsStored atomic.Int64
	spacingWaits, spacingWaitNanos            atomic.Int64
	started, completed, failed, cancelled     atomic.Int64
}

// New returns a Loader for cfg.
func New(cfg Config) (*Loader, error) {
	if cfg.Gateway == nil || cfg.Store == nil || cfg.Pacing == nil {
		return nil, errors.New("loader: Gateway, Store and Pacing are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffBase)
	}
	if cfg.MaxPacingRetries <= 0 {
		cfg.MaxPacingRetries = DefaultMaxPacingRetries
	}
	if cfg.KeepFinished <= 0 {
		cfg.KeepFinished = DefaultKeepFinished
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = DefaultMaxRunning
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancelCause(context.Background())
	return &Loader{cfg: cfg, log: cfg.Logger, reg: newRegistry(cfg.KeepFinished), ctx: ctx, stop: stop,
		discTurn: make(chan struct{}, 1), contracts: map[string]*contractPace{}}, nil
}

// Close cancels every running load (each in-flight request is cancelled
// on the gateway too) and waits for them to end. Bars already stored stay.
func (l *Loader) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.stop(errShutdown)
	l.wg.Wait()
	return nil
}

// PacingClock is the clock to give the process's pacing scheduler: the
// system clock, slowed down by margin (0.01 is 1 %) so that every window
// the scheduler enforces lasts 1+margin times as long in real time, and
// waking a held-back request on time rather than when the runtime's timer
// gets round to it.
//
// The scheduler records a request at the slot it granted, but the gateway
// counts it when it arrives: later, by the timer's lateness in waking the
// request (up to a millisecond or so: the runtime's timers are not
// precise) and the time to send it. A request granted at once right after
// may then arrive exactly as many windows after the first as the rule
// requires by the scheduler's records and a little less by the gateway's,
// and be refused (error 162). Waking on time removes most of that
// lateness, and the margin absorbs the rest, the jitter of sending (see
// PacingMargin). It costs the same fraction on a load whose pace the rules
// set.
func PacingClock(margin float64) pacing.Clock {
	return marginClock{origin: time.Now(), k: 1 + max(margin, 0)}
}

// sendJitter is how much the time from a grant to the gateway's receipt
// may vary between two requests: a goroutine hand-off to the connection's
// writer, a socket write, the gateway's read, now and then a collection
// pause or a busy processor. A few milliseconds on a loaded machine.
const sendJitter = 3 * time.Millisecond

// PacingMargin is the margin for PacingClock with a gateway whose windows
// are divided by scale (1 for a real gateway): 1 %, or enough to cover
// sendJitter on the identical-request window (15 s / scale), whichever is
// more. The shorter same-contract window (2 s / scale) needs no share of
// it: request spaces a contract's requests from their answers, which no
// jitter can precede. A real gateway gets 1 % (150 ms on 15 s); a
// simulator running 50 times faster, whose identical window is 300 ms,
// gets 1 % too.
func PacingMargin(scale float64) float64 {
	if scale <= 0 {
		scale = 1
	}
	return max(0.01, float64(sendJitter)*scale/float64(pacing.IdenticalWindow))
}

// spinWindow is how much before a deadline a precise wake stops sleeping
// and starts polling the clock.
const spinWindow = 2 * time.Millisecond

type marginClock struct {
	origin time.Time
	k      float64
}

func (c marginClock) Now() time.Time {
	return c.origin.Add(time.Duration(float64(time.Since(c.origin)) / c.k))
}

// After sleeps most of d on a timer, then polls the clock, yielding the
// processor, for the last spinWindow. The timer holds no goroutine until
// it fires, and the channel is buffered, so an abandoned wait leaves
// nothing behind.
func (c marginClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	target := time.Now().Add(time.Duration(float64(d) * c.k))
	time.AfterFunc(time.Until(target)-spinWindow, func() {
		for time.Now().Before(target) {
			runtime.Gosched()
		}
		ch <- time.Now()
	})
	return ch
}

// Request asks for a load.
type Request struct {
	Symbol    string
	Timeframe string // see ParseTimeframe
	Mode      Mode   // empty: tail
	// Start defaults to the instrument's first bar (head timestamp) and is
	// never earlier; End defaults to now and is never later.
	Start, End time.Time
}

// job is a validated request with its instrument.
type job struct {
	req  Request
	tf   Timeframe
	mode Mode
	in   service.Instrument
	key  string
	rth  bool
	what string
}

func invalid(field, code, msg string) error {
	return &service.Error{Kind: service.ErrInvalid, Code: code, Message: msg, Details: map[string]any{"field": field}}
}

// prepare validates r and discovers its instrument.
func (l *Loader) prepare(ctx context.Context, r Request) (*job, error) {
	if strings.TrimSpace(r.Symbol) == "" {
		return nil, invalid("symbol", "INVALID_SYMBOL", "symbol is required")
	}
	tf, err := ParseTimeframe(r.Timeframe)
	if err != nil {
		return nil, invalid("timeframe", "INVALID_TIMEFRAME", err.Error())
	}
	mode, err := ParseMode(string(r.Mode))
	if err != nil {
		return nil, invalid("mode", "INVALID_MODE", err.Error())
	}
	if !r.Start.IsZero() && !r.End.IsZero() && !r.End.After(r.Start) {
		return nil, invalid("end_date", "INVALID_RANGE", fmt.Sprintf("end %s is not after start %s",
			r.End.UTC().Format(time.RFC3339), r.Start.UTC().Format(time.RFC3339)))
	}
	in, err := l.discover(ctx, r.Symbol)
	if err != nil {
		return nil, err
	}
	j := &job{req: r, tf: tf, mode: mode, in: in, key: seriesKey(in), rth: !l.cfg.AllHours, what: "TRADES"}
	if in.SecType == "CASH" {
		j.what = "MIDPOINT" // IDEALPRO has no trade prints
	}
	return j, nil
}

// discover looks a symbol up (from the service's cache when it can),
// giving up when ctx ends while another lookup has the turn.
func (l *Loader) discover(ctx context.Context, symbol string) (service.Instrument, error) {
	select {
	case l.discTurn <- struct{}{}:
	case <-ctx.Done():
		return service.Instrument{}, &service.Error{Kind: service.ErrTimeout, Code: "GATEWAY_TIMEOUT",
			Message: "deadline passed while waiting to look the symbol up", Err: ctx.Err()}
	}
	defer func() { <-l.discTurn }()
	return l.cfg.Gateway.Discover(ctx, symbol, false)
}

// seriesKey is the symbol bars are stored under: IB's local symbol for
// forex pairs (EUR.USD, however the pair was written) and futures (one
// series per expiry), the symbol itself for stocks.
func seriesKey(in service.Instrument) string {
	switch in.SecType {
	case "CASH":
		if in.IBSymbol != "" && in.Currency != "" {
			return in.IBSymbol + "." + in.Currency
		}
	case "FUT":
		if in.LocalSymbol != "" {
			return in.LocalSymbol
		}
	}
	return in.Symbol
}

// newOp registers a running operation for j, cancelled by cancel.
func (l *Loader) newOp(j *job, cancel context.CancelCauseFunc) (*op, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if p := l.reg.running(j.key, j.tf.Name); p != nil {
		return nil, fmt.Errorf("%w: %s %s is being loaded by %s", ErrBusy, j.key, j.tf.Name, p.o.ID)
	}
	n := 0
	for _, p := range l.reg.all() {
		p.mu.Lock()
		if p.o.Status == StatusRunning {
			n++
		}
		p.mu.Unlock()
	}
	if n >= l.cfg.MaxRunning {
		return nil, fmt.Errorf("%w: %d running, the limit", ErrTooMany, n)
	}
	now := time.Now()
	o := Operation{ID: newOpID(), Type: "data_load", Status: StatusRunning, Symbol: j.key, Timeframe: j.tf.Name,
		BarSize: j.tf.BarSize, Mode: j.mode, UseRTH: j.rth, CreatedAt: now, Errors: []OpError{}}
	if !j.req.Start.IsZero() {
		t := j.req.Start.UTC()
		o.RequestedStart = &t
	}
	if !j.req.End.IsZero() {
		t := j.req.End.UTC()
		o.RequestedEnd = &t
	}
	p := &op{o: o, started: now, done: make(chan struct{}), cancel: cancel}
	l.reg.add(p)
	l.started.Add(1)
	return p, nil
}

// Start validates r, discovers the symbol (within ctx) and starts the load
// in the background. It returns the operation as it starts; errors are
// *service.Error for bad input (field named in Details) or an unknown
// symbol, ErrBusy, ErrTooMany or ErrClosed.
func (l *Loader) Start(ctx context.Context, r Request) (Operation, error) {
	j, err := l.prepare(ctx, r)
	if err != nil {
		return Operation{}, err
	}
	octx, cancel := context.WithCancelCause(l.ctx)
	p, err := l.newOp(j, cancel)
	if err != nil {
		cancel(nil)
		return Operation{}, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		cancel(errShutdown)
		l.end(p, StatusCancelled, errShutdown.Error())
		return p.snapshot(time.Now()), ErrClosed
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		defer cancel(nil)
		l.execute(octx, p, j)
	}()
	return p.snapshot(time.Now()), nil
}

// Load runs a load to its end on the caller's goroutine and returns the
// finished operation (also listed by Operations). Cancelling ctx cancels it.
func (l *Loader) Load(ctx context.Context, r Request) (Operation, error) {
	j, err := l.prepare(ctx, r)
	if err != nil {
		return Operation{}, err
	}
	octx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p, err := l.newOp(j, cancel)
	if err != nil {
		return Operation{}, err
	}
	stop := context.AfterFunc(l.ctx, func() { cancel(errShutdown) })
	defer stop()
	l.execute(octx, p, j)
	return p.snapshot(time.Now()), nil
}

// Operation returns one operation.
func (l *Loader) Operation(id string) (Operation, error) {
	p := l.reg.get(id)
	if p == nil {
		return Operation{}, fmt.Errorf("%w: %s", ErrNoOperation, id)
	}
	return p.snapshot(time.Now()), nil
}

// Operations lists the running and the last finished operations, newest first.
func (l *Loader) Operations() []Operation {
	now := time.Now()
	ps := l.reg.all()
	out := make([]Operation, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.snapshot(now))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out
}

// Cancel stops a running operation and returns it once it has stopped:
// an in-flight request is cancelled on the gateway at once, and bars
// stored so far stay. Cancelling a finished operation changes nothing.
func (l *Loader) Cancel(ctx context.Context, id string) (Operation, error) {
	p := l.reg.get(id)
	if p == nil {
		return Operation{}, fmt.Errorf("%w: %s", ErrNoOperation, id)
	}
	p.mu.Lock()
	cancel := p.cancel
	running := p.o.Status == StatusRunning
	p.mu.Unlock()
	if running && cancel != nil {
		cancel(errCancelled)
		select {
		case <-p.done:
		case <-ctx.Done():
		}
	}
	return p.snapshot(time.Now()), nil
}

// end marks p finished.
func (l *Loader) end(p *op, st Status, msg string) {
	now := time.Now()
	p.update(func(o *Operation) {
		o.Status, o.Error, o.FinishedAt = st, msg, &now
		o.Progress.Current = nil
	})
	switch st {
	case StatusCompleted:
		l.completed.Add(1)
	case StatusFailed:
		l.failed.Add(1)
	case StatusCancelled:
		l.cancelled.Add(1)
	}
	l.reg.finish(p)
	close(p.done)
}

// Plan is what a load would do: the effective range and its segments,
// with those already stored marked Skip.
type Plan struct {
	Symbol    string    `json:"symbol"`
	Timeframe string    `json:"timeframe"`
	Mode      Mode      `json:"mode"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Segments  []Segment `json:"segments"`
	Note      string    `json:"note,omitempty"`
	// Requests are the pacing descriptions of the segments to fetch, in
	// order: what pacing.MinimumDuration needs to tell the fastest such a
	// load can be.
	Requests []pacing.Request `json:"-"`
}

// Plan computes r's plan without fetching anything.
func (l *Loader) Plan(ctx context.Context, r Request) (Plan, error) {
	j, err := l.prepare(ctx, r)
	if err != nil {
		return Plan{}, err
	}
	return l.plan(ctx, j)
}

// template returns the session template for in: liquid hours when loading
// regular hours only (trading hours if IB gave none), trading hours
// otherwise.
func template(in service.Instrument, rth bool) (*Template, string, error) {
	hours := in.TradingHours
	if rth && strings.TrimSpace(in.LiquidHours) != "" {
		hours = in.LiquidHours
	}
	tpl, err := ParseHours(hours, in.TimeZone)
	if err != nil {
		loc, zerr := loadZone(in.TimeZone)
		if zerr != nil {
			return nil, "", fmt.Errorf("time zone of %s: %w", in.Symbol, zerr)
		}
		tpl = allDay(loc)
		return tpl, fmt.Sprintf("the trading hours could not be read (%v): every hour counts as a trading hour, so nights and weekends are asked for once and answered empty", err), nil
	}
	if tpl.Assumed {
		return tpl, "IB gave no trading hours: every hour counts as a trading hour, so nights and weekends are asked for once and answered empty", nil
	}
	return tpl, "", nil
}

func (l *Loader) plan(ctx context.Context, j *job) (Plan, error) {
	now := l.cfg.Now()
	tpl, note, err := template(j.in, j.rth)
	if err != nil {
		return Plan{}, err
	}
	var head time.Time
	if j.in.HeadTimestamp != nil {
		head = j.in.HeadTimestamp.UTC()
	}
	end := j.req.End
	if end.IsZero() || end.After(now) {
		end = now
	}
	start := j.req.Start
	switch {
	case start.IsZero() && !head.IsZero():
		start = head
	case start.IsZero():
		start = end.AddDate(-1, 0, 0) // no head timestamp: a year, rather than all of time
	case !head.IsZero() && start.Before(head):
		start = head
	}
	switch j.mode {
	case ModeTail:
		last, ok, err := l.cfg.Store.Last(ctx, j.key, j.tf.Name)
		if err != nil {
			return Plan{}, err
		}
		if ok {
			start = later(start, last.Time.Add(time.Second)) // the stored bar is complete: start after it
		}
	case ModeBackfill:
		first, _, n, err := l.cfg.Store.Range(ctx, j.key, j.tf.Name)
		if err != nil {
			return Plan{}, err
		}
		if n > 0 {
			end = earlier(end, first)
		}
	}
	p := Plan{Symbol: j.key, Timeframe: j.tf.Name, Mode: j.mode, Start: start.UTC(), End: end.UTC(), Note: note}
	if !start.Before(end) {
		p.End = p.Start
		return p, nil
	}
	p.Segments = plan(j.tf, tpl, head, start, end, now)
	for i := range p.Segments {
		s := &p.Segments[i]
		keys := s.expectedKeys()
		if len(keys) == 0 {
			s.Skip = true
			continue
		}
		have, err := l.cfg.Store.Bars(ctx, j.key, j.tf.Name, keys[0], keys[len(keys)-1].Add(time.Second), 0)
		if err != nil {
			return Plan{}, err
		}
		s.Stored = countStored(keys, storeTimes(have))
		s.Skip = s.Stored == s.Expected
		if !s.Skip {
			p.Requests = append(p.Requests, pacingRequest(j.in.ConID, j.in.Exchange, j.what, j.tf, *s, j.rth))
		}
	}
	return p, nil
}

// execute runs a load and marks its operation finished.
func (l *Loader) execute(ctx context.Context, p *op, j *job) {
	status, msg := StatusCompleted, ""
	defer func() {
		if r := recover(); r != nil {
			l.log.Error("load panicked", "operation", p.o.ID, "panic", r)
			status, msg = StatusFailed, fmt.Sprintf("internal error: %v", r)
		}
		l.end(p, status, msg)
		l.log.Info("load finished", "operation", p.o.ID, "symbol", j.key, "timeframe", j.tf.Name, "status", status, "error", msg)
	}()
	stopped := func() bool {
		if ctx.Err() == nil {
			return false
		}
		status, msg = StatusCancelled, context.Cause(ctx).Error()
		return true
	}
	pl, err := l.plan(ctx, j)
	if err != nil {
		if !stopped() {
			status, msg = StatusFailed, "planning: "+err.Error()
		}
		return
	}
	toFetch := len(pl.Requests)
	p.update(func(o *Operation) {
		s, e := pl.Start, pl.End
		o.Start, o.End, o.Note = &s, &e, pl.Note
		o.Progress.SegmentsTotal = len(pl.Segments)
		for _, s := range pl.Segments {
			o.Progress.BarsExpected += s.Expected
			if s.Skip {
				o.Progress.SegmentsSkipped++
				o.Progress.SegmentsDone++
			}
		}
		if len(pl.Segments) == 0 && o.Note == "" {
			o.Note = "nothing to load: the range holds no complete bar to fetch"
		}
	})
	p.mu.Lock()
	p.toFetch = toFetch
	p.mu.Unlock()
	l.log.Info("load planned", "operation", p.o.ID, "symbol", j.key, "timeframe", j.tf.Name, "mode", j.mode,
		"start", pl.Start, "end", pl.End, "segments", len(pl.Segments), "to_fetch", toFetch)
	loc := time.UTC
	if z, err := loadZone(j.in.TimeZone); err == nil {
		loc = z
	}
	for i := range pl.Segments {
		s := &pl.Segments[i]
		if s.Skip {
			continue
		}
		if stopped() {
			return
		}
		t0 := time.Now()
		cur := *s
		p.update(func(o *Operation) { o.Progress.Current = &cur })
		bars, err := l.fetch(ctx, p, j, s, loc)
		if err != nil {
			if !stopped() {
				status, msg = StatusFailed, fmt.Sprintf("segment %s: %v", segName(s), err)
			}
			return
		}
		n, err := l.cfg.Store.Upsert(ctx, j.key, j.tf.Name, bars)
		if err != nil {
			if !stopped() {
				status, msg = StatusFailed, fmt.Sprintf("segment %s: storing %d bars: %v", segName(s), len(bars), err)
			}
			return
		}
		l.barsStored.Add(int64(n))
		took := time.Since(t0)
		p.mu.Lock()
		p.fetched++
		p.fetchTime += took
		p.o.Progress.SegmentsDone++
		p.o.Progress.BarsFetched += len(bars)
		p.o.Progress.BarsStored += n
		if len(bars) == 0 {
			p.o.Progress.SegmentsEmpty++
		}
		p.mu.Unlock()
	}
}

func segName(s *Segment) string {
	return s.Start.UTC().Format(time.RFC3339) + ".." + s.End.UTC().Format(time.RFC3339)
}

// failure kinds, for the retry decision.
type failKind int

const (
	failTransient failKind = iota
	failPermanent
	failNoData
	failPacing
)

func (k failKind) String() string {
	return [...]string{"transient", "permanent", "no_data", "pacing"}[k]
}

// classify decides what a failed request means. Error 162 carries several
// meanings told apart only by its text.
func classify(err error) failKind {
	var ib *client.IBError
	if errors.As(err, &ib) {
		switch ib.Code {
		case 162:
			t := strings.ToLower(ib.Text)
			switch {
			case strings.Contains(t, "pacing violation"):
				return failPacing
			case strings.Contains(t, "returned no data"), strings.Contains(t, "no data returned"):
				return failNoData
			case strings.Contains(t, "disconnect"), strings.Contains(t, "connection"), strings.Contains(t, "reconnect"),
				strings.Contains(t, "farm"), strings.Contains(t, "timeout"), strings.Contains(t, "timed out"),
				strings.Contains(t, "query cancelled"):
				// The data farm lost its link, or the query was cut off
				// without us asking: it works again once the farm is back.
				return failTransient
			}
			return failPermanent // no permission for the data, invalid step, ...
		case 366, 322, 1100, 2103, 2105, 10197:
			return failTransient
		}
		return failPermanent // 200 unknown contract, 321 invalid request, 354 no subscription...
	}
	if errors.Is(err, pool.ErrClosed) {
		return failTransient // a reconfiguration replaced the pool; the next try uses the new one
	}
	var te *client.TimeoutError
	var ae *pool.AcquireError
	var ce *client.ConnectError
	switch {
	case errors.Is(err, client.ErrConnectionLost), errors.Is(err, client.ErrClosed),
		errors.Is(err, pool.ErrCircuitOpen), errors.Is(err, pool.ErrSilentGateway),
		errors.As(err, &te), errors.As(err, &ae), errors.As(err, &ce),
		errors.Is(err, context.DeadlineExceeded):
		return failTransient
	}
	return failPermanent
}

// fetch gets one segment's bars, retrying transient failures with
// exponential backoff and pacing violations after the scheduler's penalty.
// A "no data" answer is an empty segment, not an error.
func (l *Loader) fetch(ctx context.Context, p *op, j *job, s *Segment, loc *time.Location) ([]store.Bar, error) {
	preq := pacingRequest(j.in.ConID, j.in.Exchange, j.what, j.tf, *s, j.rth)
	hreq := client.HistoricalRequest{Contract: tws.Contract{ConID: j.in.ConID, Exchange: j.in.Exchange},
		End: s.End, Duration: s.Duration, BarSize: j.tf.BarSize, WhatToShow: j.what, UseRTH: j.rth, FormatDate: 2}
	attempts, violations := 0, 0
	for {
		data, err := l.request(ctx, p, preq, hreq)
		if err == nil {
			return toBars(data, s, j.tf, loc)
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		kind := classify(err)
		if kind == failNoData {
			return nil, nil
		}
		attempt := attempts + 1
		if kind == failPacing {
			attempt = violations + 1
		}
		p.addError(OpError{Time: time.Now(), Segment: segName(s), Attempt: attempt, Kind: kind.String(), Message: err.Error()})
		switch kind {
		case failPermanent:
			return nil, err
		case failPacing:
			violations++
			l.violations.Add(1)
			p.update(func(o *Operation) { o.Progress.PacingViolations++ })
			if violations > l.cfg.MaxPacingRetries {
				return nil, fmt.Errorf("%d pacing violations in a row, the last: %w", violations, err)
			}
			// Our own requests kept to the rules, so someone else on the
			// gateway spends the same budget. A first violation is most
			// often a burst on this contract; repeated ones mean the
			// gateway-wide budget is spent, and only its window helps.
			rule, d := pacing.RuleSameContract, pacing.SameContractWin
			if violations > 1 {
				rule, d = pacing.RuleTenMinutes, pacing.TenMinuteWin
			}
			l.cfg.Pacing.Penalize(preq, rule, d)
			l.log.Warn("pacing violation despite the scheduler: backing off", "operation", p.o.ID, "rule", rule, "for", d)
		case failTransient:
			attempts++
			if attempts >= l.cfg.MaxAttempts {
				return nil, fmt.Errorf("gave up after %d attempts: %w", attempts, err)
			}
			wait := l.backoff(attempts)
			l.log.Info("historical request failed, retrying", "operation", p.o.ID, "attempt", attempts, "in", wait, "err", err)
			if err := sleep(ctx, wait); err != nil {
				return nil, context.Cause(ctx)
			}
		}
		l.retries.Add(1)
		p.update(func(o *Operation) { o.Progress.Retries++ })
	}
}

// backoff is the pause after the n-th consecutive transient failure:
// BackoffBase doubling up to BackoffMax, with ±20% jitter so that loads
// that failed together do not retry together.
func (l *Loader) backoff(n int) time.Duration {
	d := l.cfg.BackoffBase << min(n-1, 20)
	if d <= 0 || d > l.cfg.BackoffMax {
		d = l.cfg.BackoffMax
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request makes one historical request: acquire a connection, wait for the
// pacing slot, send. The connection is taken before the wait, so that
// nothing but the send itself separates the slot from the request's
// arrival (see PacingClock); it is held while waiting, which costs one of
// the pool's connections per running load.
//
// Paced requests (bars of 30 seconds or less) of one contract go one at a
// time, whichever loads they belong to, and each waits, before asking the
// scheduler, until the answer to the fifth before it is a full
// same-contract window old. The gateway counts a request when it reads
// it, which the scheduler can only guess (it records the grant); the
// answer comes after the read, so spacing from answers keeps six requests
// out of any window whatever the delays on the way. It costs an answer's
// round trip per five requests, and only when the rule binds.
func (l *Loader) request(ctx context.Context, p *op, preq pacing.Request, hreq client.HistoricalRequest) (*tws.HistoricalData, error) {
	if preq.BarSeconds > 0 && preq.BarSeconds <= pacing.SmallBarSeconds {
		cp := l.contract(preq.Contract + "\x00" + preq.Exchange + "\x00" + preq.WhatToShow)
		select {
		case cp.turn <- struct{}{}:
			defer func() { <-cp.turn }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if wait := time.Until(cp.next(l.sameContractWindow())); wait > 0 {
			p.update(func(o *Operation) { o.Progress.PacingWaiting = true })
			t0 := time.Now()
			err := sleep(ctx, wait)
			waited := time.Since(t0)
			l.spacingWaits.Add(1)
			l.spacingWaitNanos.Add(int64(waited))
			p.update(func(o *Operation) {
				o.Progress.PacingWaiting = false
				o.Progress.PacingWaits++
				o.Progress.PacingWaitSeconds += waited.Seconds()
			})
			if err != nil {
				return nil, err
			}
		}
		weight := 1
		if strings.EqualFold(preq.WhatToShow, "BID_ASK") {
			weight = pacing.BidAskWeight
		}
		defer func() { cp.answered(time.Now(), weight) }() // once sent or given up: counting it is never wrong
	}
	actx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	lease, err := l.cfg.Gateway.Pool().Acquire(actx, "historical data "+p.o.ID)
	cancel()
	if err != nil {
		return nil, err
	}
	p.update(func(o *Operation) { o.Progress.PacingWaiting = true })
	waited, err := l.cfg.Pacing.Wait(ctx, preq)
	p.update(func(o *Operation) {
		o.Progress.PacingWaiting = false
		if waited > 0 {
			o.Progress.PacingWaits++
			o.Progress.PacingWaitSeconds += waited.Seconds()
		}
	})
	if err != nil {
		lease.Release()
		return nil, err
	}
	l.requests.Add(1)
	p.update(func(o *Operation) { o.Progress.Requests++ })
	rctx, rcancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	data, err := lease.Conn().HistoricalData(rctx, hreq)
	rcancel()
	var te *client.TimeoutError
	switch {
	case err == nil:
		lease.Release()
	case errors.Is(err, client.ErrConnectionLost):
		lease.Destroy()
	case errors.As(err, &te) && ctx.Err() == nil:
		// The gateway did not answer in time: a connection that swallows
		// requests must not go back to the pool.
		lease.Destroy()
	default:
		lease.Release()
	}
	return data, err
}

// contractPace is one contract's paced requests: whose turn it is, and
// when the last ones were answered (a BID_ASK request twice).
type contractPace struct {
	turn    chan struct{}
	answers []time.Time // the last pacing.SameContractLimit, oldest first; guarded by turn
}

// next is the earliest moment a request may be sent: a window after the
// answer that would otherwise be the sixth in it.
func (c *contractPace) next(window time.Duration) time.Time {
	if len(c.answers) < pacing.SameContractLimit {
		return time.Time{}
	}
	return c.answers[len(c.answers)-pacing.SameContractLimit].Add(window)
}

func (c *contractPace) answered(at time.Time, weight int) {
	for range weight {
		c.answers = append(c.answers, at)
	}
	if n := len(c.answers) - pacing.SameContractLimit; n > 0 {
		c.answers = append(c.answers[:0], c.answers[n:]...)
	}
}

// contract returns the pace of a contract's paced requests.
func (l *Loader) contract(key string) *contractPace {
	l.contractsMu.Lock()
	defer l.contractsMu.Unlock()
	c := l.contracts[key]
	if c == nil {
		c = &contractPace{turn: make(chan struct{}, 1)}
		l.contracts[key] = c
	}
	return c
}

// sameContractWindow is IB's same-contract window at the gateway's scale.
func (l *Loader) sameContractWindow() time.Duration {
	return time.Duration(float64(pacing.SameContractWin) / l.cfg.Scale)
}

// toBars converts a reply to store bars, keeping those of the segment
// (a "1 W" or "1 M" request returns more than the segment) in time order.
func toBars(data *tws.HistoricalData, s *Segment, tf Timeframe, loc *time.Location) ([]store.Bar, error) {
	out := make([]store.Bar, 0, len(data.Bars))
	for _, b := range data.Bars {
		t, err := parseBarTime(b.Time, tf.Daily, loc)
		if err != nil {
			return nil, err
		}
		if !s.keep(t) {
			continue
		}
		out = append(out, store.Bar{Time: t, Open: b.Open, High: b.High, Low: b.Low, Close: b.Close,
			Volume: b.Volume, WAP: b.WAP, Count: b.Count})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	// Keep the last of any repeated time, as an upsert would.
	dedup := out[:0]
	for _, b := range out {
		if n := len(dedup); n > 0 && dedup[n-1].Time.Equal(b.Time) {
			dedup[n-1] = b
			continue
		}
		dedup = append(dedup, b)
	}
	return dedup, nil
}

// Stats counts what the loader did since it was created, with the pacing
// scheduler's own counters.
type Stats struct {
	Running          int
	Started          int64
	Completed        int64
	Failed           int64
	Cancelled        int64
	Requests         int64
	Retries          int64
	PacingViolations int64
	BarsStored       int64
	// SpacingWaits and SpacingWaitTotal are the loader's own waits to
	// space a contract's requests (see request), beside the scheduler's.
	SpacingWaits     int64
	SpacingWaitTotal time.Duration
	Pacing           pacing.Stats
}

// Stats returns a snapshot of the counters.
func (l *Loader) Stats() Stats {
	st := Stats{Started: l.started.Load(), Completed: l.completed.Load(), Failed: l.failed.Load(),
		Cancelled: l.cancelled.Load(), Requests: l.requests.Load(), Retries: l.retries.Load(),
		PacingViolations: l.violations.Load(), BarsStored: l.barsStored.Load(), Pacing: l.cfg.Pacing.Stats(),
		SpacingWaits: l.spacingWaits.Load(), SpacingWaitTotal: time.Duration(l.spacingWaitNanos.Load())}
	st.Running = int(st.Started - st.Completed - st.Failed - st.Cancelled)
	return st
}

// Bar is a stored bar as the API sends it.
type Bar struct {
	Time   time.Time `json:"time"`
	Open   float64   `json:"open"`
	High   float64   `json:"high"`
	Low    float64   `json:"low"`
	Close  float64   `json:"close"`
	Volume float64   `json:"volume"`
	WAP    float64   `json:"wap"`
	Count  int       `json:"count"`
}

// Series is an answer of Bars.
type Series struct {
	Symbol    string `json:"symbol"`
	Timeframe string `json:"timeframe"`
	Count     int    `json:"count"`
	Bars      []Bar  `json:"bars"`
}

// BarsQuery selects stored bars: those starting in [Start, End) (zero
// leaves a side open), at most Limit (<= 0: all), the first ones, or the
// last ones with Latest.
type BarsQuery struct {
	Symbol, Timeframe string
	Start, End        time.Time
	Limit             int
	Latest            bool
}

// resolve finds the series key of a symbol for reading. Discovery answers
// from its cache without the gateway; if the gateway is needed and down,
// the symbol as written is the best guess, so stored bars stay readable.
func (l *Loader) resolve(ctx context.Context, symbol string) (string, *service.Instrument, error) {
	if strings.TrimSpace(symbol) == "" {
		return "", nil, invalid("symbol", "INVALID_SYMBOL", "symbol is required")
	}
	in, err := l.discover(ctx, symbol)
	if err == nil {
		return seriesKey(in), &in, nil
	}
	if errors.Is(err, service.ErrNotFound) || errors.Is(err, service.ErrInvalid) {
		return "", nil, err
	}
	return strings.ReplaceAll(strings.ToUpper(strings.TrimSpace(symbol)), "/", "."), nil, nil
}

// Bars returns stored bars.
func (l *Loader) Bars(ctx context.Context, q BarsQuery) (Series, error) {
	tf, err := ParseTimeframe(q.Timeframe)
	if err != nil {
		return Series{}, invalid("timeframe", "INVALID_TIMEFRAME", err.Error())
	}
	key, _, err := l.resolve(ctx, q.Symbol)
	if err != nil {
		return Series{}, err
	}
	var bars []store.Bar
	if q.Latest && q.Limit > 0 {
		bars, err = l.latest(ctx, key, tf, q)
	} else {
		bars, err = l.cfg.Store.Bars(ctx, key, tf.Name, q.Start, q.End, q.Limit)
	}
	if err != nil {
		return Series{}, err
	}
	out := Series{Symbol: key, Timeframe: tf.Name, Bars: make([]Bar, len(bars))}
	for i, b := range bars {
		out.Bars[i] = Bar{Time: b.Time, Open: b.Open, High: b.High, Low: b.Low, Close: b.Close, Volume: b.Volume, WAP: b.WAP, Count: b.Count}
	}
	out.Count = len(out.Bars)
	return out, nil
}

// latest returns the last q.Limit bars of [Start, End). The store reads
// oldest first, so it reads a window back from the end, widening it until
// it holds enough bars or reaches the start.
func (l *Loader) latest(ctx context.Context, key string, tf Timeframe, q BarsQuery) ([]store.Bar, error) {
	first, last, n, err := l.cfg.Store.Range(ctx, key, tf.Name)
	if err != nil || n == 0 {
		return nil, err
	}
	end := last.Add(time.Second)
	if !q.End.IsZero() && q.End.Before(end) {
		end = q.End
	}
	lo := first
	if !q.Start.IsZero() && q.Start.After(lo) {
		lo = q.Start
	}
	w := time.Duration(q.Limit) * tf.Bar * 4
	for {
		from := end.Add(-w)
		if !from.After(lo) {
			from = lo
		}
		bars, err := l.cfg.Store.Bars(ctx, key, tf.Name, from, end, 0)
		if err != nil {
			return nil, err
		}
		if len(bars) >= q.Limit || from.Equal(lo) {
			return bars[max(len(bars)-q.Limit, 0):], nil
		}
		w *= 4
	}
}

// RangeInfo is what the store holds of a series, with the gaps the
// trading hours reveal between its first and last bar.
type RangeInfo struct {
	Symbol    string     `json:"symbol"`
	Timeframe string     `json:"timeframe"`
	First     *time.Time `json:"first"`
	Last      *time.Time `json:"last"`
	Count     int        `json:"count"`
	// Expected is how many bars the trading hours promise from First to
	// Last, Missing how many of those are not stored, Gaps how many runs of
	// consecutive missing bars they form. Holidays count as gaps: the
	// hours are a weekly template.
	Expected int `json:"expected"`
	Missing  int `json:"missing"`
	Gaps     int `json:"gaps"`
	// GapsUnknown says why gaps could not be counted (no instrument
	// details without the gateway); the counts above are then 0.
	GapsUnknown string `json:"gaps_unknown,omitempty"`
}

// gapChunk is how many days of sessions Range compares at a time, bounding
// the bars held in memory.
const gapChunk = 30 * 24 * time.Hour

// Range reports a series' extent and its gaps.
func (l *Loader) Range(ctx context.Context, symbol, timeframe string) (RangeInfo, error) {
	tf, err := ParseTimeframe(timeframe)
	if err != nil {
		return RangeInfo{}, invalid("timeframe", "INVALID_TIMEFRAME", err.Error())
	}
	key, in, err := l.resolve(ctx, symbol)
	if err != nil {
		return RangeInfo{}, err
	}
	first, last, n, err := l.cfg.Store.Range(ctx, key, tf.Name)
	if err != nil {
		return RangeInfo{}, err
	}
	ri := RangeInfo{Symbol: key, Timeframe: tf.Name, Count: n}
	if n == 0 {
		return ri, nil
	}
	ri.First, ri.Last = &first, &last
	if in == nil {
		ri.GapsUnknown = "the instrument's trading hours are unknown (the gateway is unavailable and the symbol is not cached)"
		return ri, nil
	}
	tpl, _, err := template(*in, !l.cfg.AllHours)
	if err != nil {
		ri.GapsUnknown = err.Error()
		return ri, nil
	}
	var head time.Time
	if in.HeadTimestamp != nil {
		head = *in.HeadTimestamp
	}
	inGap := false
	hi := last.Add(time.Second)
	for lo := first; lo.Before(hi); lo = lo.Add(gapChunk) {
		chi := earlier(lo.Add(gapChunk), hi)
		var keys []time.Time
		if tf.Daily {
			for _, s := range tpl.Sessions(lo.Add(-48*time.Hour), chi.Add(8*24*time.Hour)) {
				if !s.Date.Before(lo) && s.Date.Before(chi) && (len(keys) == 0 || !keys[len(keys)-1].Equal(s.Date)) {
					keys = append(keys, s.Date)
				}
			}
		} else {
			for _, s := range tpl.Sessions(lo, chi) {
				keys = append(keys, slots(s, lo, chi, head, tf.Bar, tpl.Location(), false)...)
			}
		}
		have, err := l.cfg.Store.Bars(ctx, key, tf.Name, lo, chi, 0)
		if err != nil {
			return RangeInfo{}, err
		}
		j := 0
		for _, k := range keys {
			for j < len(have) && have[j].Time.Before(k) {
				j++
			}
			ri.Expected++
			if j < len(have) && have[j].Time.Equal(k) {
				inGap = false
				continue
			}
			ri.Missing++
			if !inGap {
				ri.Gaps++
				inGap = true
			}
		}
	}
	return ri, nil
}
