package client

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// call is one request waiting for its answer. The reader adds messages and
// finishes it; the caller waits on done. A streaming call also feeds
// updates, which the reader never blocks on.
type call struct {
	stream bool

	mu       sync.Mutex
	msgs     []tws.Message
	err      error
	finished bool
	done     chan struct{}
	first    chan struct{} // streams: closed when the initial bars arrive
	updates  chan tws.Bar  // streams: closed when the stream ends
}

// streamBuffer is how many updates a stream holds for a slow reader.
const streamBuffer = 1024

func newCall(stream bool) *call {
	cl := &call{stream: stream, done: make(chan struct{})}
	if stream {
		cl.first = make(chan struct{})
		cl.updates = make(chan tws.Bar, streamBuffer)
	}
	return cl
}

func (cl *call) add(m tws.Message) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.finished {
		return
	}
	if !cl.stream {
		cl.msgs = append(cl.msgs, m)
		return
	}
	switch m := m.(type) {
	case *tws.HistoricalData:
		if len(cl.msgs) == 0 {
			cl.msgs = append(cl.msgs, m)
			close(cl.first)
		}
	case *tws.HistoricalDataUpdate:
		select {
		case cl.updates <- m.Bar:
		default:
			cl.finishLocked(ErrSlowConsumer)
		}
	}
}

func (cl *call) finish(err error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.finishLocked(err)
}

func (cl *call) finishLocked(err error) {
	if cl.finished {
		return
	}
	cl.finished = true
	cl.err = err
	close(cl.done)
	if cl.stream {
		close(cl.updates)
	}
}

func (cl *call) result() ([]tws.Message, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.msgs, cl.err
}

// register adds a call under a fresh request id.
func (c *Conn) register(cl *call) (int64, error) {
	id := c.nextID.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		return 0, c.closeErr
	}
	c.calls[id] = cl
	return id, nil
}

// do sends req and waits for its answer or for ctx. On ctx's end it
// forgets the call (late answers are dropped) and sends IB's cancel, if
// the request has one.
func (c *Conn) do(ctx context.Context, op string, stream bool, build func(id int64) (req, cancel tws.Message)) (*call, int64, error) {
	start := time.Now()
	cl := newCall(stream)
	id, err := c.register(cl)
	if err != nil {
		return nil, 0, err
	}
	req, cancel := build(id)
	if err := c.out.send(ctx, req, false); err != nil {
		c.takeCall(id)
		return nil, 0, c.ctxError(op, start, err)
	}
	ready := cl.done
	if stream {
		ready = cl.first
	}
	select {
	case <-ready:
		return cl, id, nil
	case <-cl.done:
		return cl, id, nil
	case <-ctx.Done():
		if c.takeCall(id) == cl && cancel != nil {
			c.out.trySend(cancel)
		}
		cl.finish(ctx.Err())
		return nil, 0, &TimeoutError{Op: op, After: time.Since(start), Err: ctx.Err()}
	}
}

func (c *Conn) ctxError(op string, start time.Time, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &TimeoutError{Op: op, After: time.Since(start), Err: err}
	}
	return err
}

// ContractDetails returns every contract matching c, as reqContractDetails does.
func (c *Conn) ContractDetails(ctx context.Context, contract tws.Contract) ([]tws.ContractDetails, error) {
	cl, _, err := c.do(ctx, "reqContractDetails", false, func(id int64) (tws.Message, tws.Message) {
		return &tws.ReqContractDetails{ReqID: id, Contract: contract}, nil
	})
	if err != nil {
		return nil, err
	}
	msgs, err := cl.result()
	if err != nil {
		return nil, err
	}
	out := make([]tws.ContractDetails, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.(*tws.ContractData).Details)
	}
	return out, nil
}

// HistoricalRequest describes a reqHistoricalData.
type HistoricalRequest struct {
	Contract   tws.Contract
	End        time.Time // zero: now
	Duration   string    // "N S|D|W|M|Y"
	BarSize    string    // "1 min", "1 hour", "1 day"...
	WhatToShow string    // TRADES, MIDPOINT, BID, ASK, BID_ASK...
	UseRTH     bool
	FormatDate int // 1: text, 2: epoch seconds for intraday bars (default)
}

func (r *HistoricalRequest) wire(id int64, keepUpToDate bool) *tws.ReqHistoricalData {
	end := ""
	if !r.End.IsZero() {
		end = r.End.UTC().Format("20060102-15:04:05") // IB's UTC form
	}
	fd := r.FormatDate
	if fd == 0 {
		fd = 2
	}
	return &tws.ReqHistoricalData{ReqID: id, Contract: r.Contract, EndDateTime: end, BarSize: r.BarSize,
		Duration: r.Duration, UseRTH: r.UseRTH, WhatToShow: r.WhatToShow, FormatDate: fd, KeepUpToDate: keepUpToDate}
}

// HistoricalData returns all bars of one request. On ctx's end it sends
// cancelHistoricalData and returns at once.
func (c *Conn) HistoricalData(ctx context.Context, r HistoricalRequest) (*tws.HistoricalData, error) {
	cl, _, err := c.do(ctx, "reqHistoricalData", false, func(id int64) (tws.Message, tws.Message) {
		return r.wire(id, false), &tws.CancelHistoricalData{ReqID: id}
	})
	if err != nil {
		return nil, err
	}
	msgs, err := cl.result()
	if err != nil {
		return nil, err
	}
	return msgs[0].(*tws.HistoricalData), nil
}

// BarStream is a keepUpToDate historical request: the initial bars, then
// the bar in progress as the gateway updates it.
type BarStream struct {
	// Initial holds the bars up to now.
	Initial *tws.HistoricalData
	// Updates delivers the bar in progress; it closes when the stream ends.
	Updates <-chan tws.Bar

	c     *Conn
	cl    *call
	id    int64
	stop  func() bool
	close sync.Once
}

// StreamHistoricalData starts a keepUpToDate request and returns once the
// initial bars arrived. The stream ends when ctx ends, Close is called, or
// the connection fails; Err then says why.
func (c *Conn) StreamHistoricalData(ctx context.Context, r HistoricalRequest) (*BarStream, error) {
	r.End = time.Time{} // IB requires an empty end with keepUpToDate
	cl, id, err := c.do(ctx, "reqHistoricalData(keepUpToDate)", true, func(id int64) (tws.Message, tws.Message) {
		return r.wire(id, true), &tws.CancelHistoricalData{ReqID: id}
	})
	if err != nil {
		return nil, err
	}
	msgs, err := cl.result()
	if err != nil {
		return nil, err
	}
	s := &BarStream{Initial: msgs[0].(*tws.HistoricalData), Updates: cl.updates, c: c, cl: cl, id: id}
	s.stop = context.AfterFunc(ctx, s.Close)
	return s, nil
}

// Close cancels the stream on the gateway and closes Updates.
func (s *BarStream) Close() {
	s.close.Do(func() {
		s.stop()
		if s.c.takeCall(s.id) == s.cl {
			s.c.out.trySend(&tws.CancelHistoricalData{ReqID: s.id})
		}
		s.cl.finish(ErrClosed)
	})
}

// Err reports why the stream ended (ErrClosed after Close), or nil while it runs.
func (s *BarStream) Err() error {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	return s.cl.err
}

// HeadTimestamp returns the earliest time data is available for.
func (c *Conn) HeadTimestamp(ctx context.Context, contract tws.Contract, whatToShow string, useRTH bool) (time.Time, error) {
	cl, _, err := c.do(ctx, "reqHeadTimestamp", false, func(id int64) (tws.Message, tws.Message) {
		return &tws.ReqHeadTimestamp{ReqID: id, Contract: contract, UseRTH: useRTH, WhatToShow: whatToShow, FormatDate: 2},
			&tws.CancelHeadTimestamp{ReqID: id}
	})
	if err != nil {
		return time.Time{}, err
	}
	msgs, err := cl.result()
	if err != nil {
		return time.Time{}, err
	}
	raw := msgs[0].(*tws.HeadTimestamp).Timestamp
	return parseIBTime(raw)
}

// parseIBTime reads the time forms IB uses in head timestamps: epoch
// seconds, "yyyyMMdd-HH:mm:ss" (UTC) and "yyyyMMdd  HH:mm:ss" / "yyyyMMdd".
func parseIBTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && len(s) != 8 {
		return time.Unix(n, 0).UTC(), nil
	}
	for _, layout := range []string{"20060102-15:04:05", "20060102  15:04:05", "20060102 15:04:05", "20060102"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &tws.DecodeError{ID: tws.InHeadTimestamp, Incoming: true, Err: errors.New("unrecognised time " + strconv.Quote(s))}
}

// MatchingSymbols searches contracts by symbol or name prefix.
func (c *Conn) MatchingSymbols(ctx context.Context, pattern string) ([]tws.ContractDescription, error) {
	cl, _, err := c.do(ctx, "reqMatchingSymbols", false, func(id int64) (tws.Message, tws.Message) {
		return &tws.ReqMatchingSymbols{ReqID: id, Pattern: pattern}, nil
	})
	if err != nil {
		return nil, err
	}
	msgs, err := cl.result()
	if err != nil {
		return nil, err
	}
	return msgs[0].(*tws.SymbolSamples).Descriptions, nil
}
