package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ktrdr/ktrdr/internal/loader"
)

// Limits of GET /api/v1/data/{symbol}/{timeframe}: the default keeps an
// unbounded question cheap; the maximum keeps an answer within what a
// client reads in one piece (a bar is about 150 bytes of JSON).
const (
	defaultBarLimit = 1000
	maxBarLimit     = 20000
)

// dataRoutes registers the historical-data endpoints, when the server has
// a loader.
func (s *Server) dataRoutes() {
	if s.opts.Loader == nil {
		return
	}
	s.handle("POST /api/v1/data/load", withBody(s, s.dataLoad))
	s.handle("GET /api/v1/operations", noBody(s.operations))
	s.handle("GET /api/v1/operations/{id}", withPath(s.operation))
	s.handle("DELETE /api/v1/operations/{id}", withPath(s.cancelOperation))
	s.handle("GET /api/v1/data/{symbol}/{timeframe}", withPath(s.bars))
	s.handle("GET /api/v1/data/{symbol}/{timeframe}/range", withPath(s.dataRange))
}

// withPath reads the request's path values and query before the work
// starts, on the request's goroutine.
func withPath(run func(ctx context.Context, r pathValues) result) prepareFunc {
	return func(_ http.ResponseWriter, r *http.Request) (handlerFunc, *result) {
		pv := pathValues{id: r.PathValue("id"), symbol: r.PathValue("symbol"), timeframe: r.PathValue("timeframe"), query: r.URL.Query()}
		return func(ctx context.Context) result { return run(ctx, pv) }, nil
	}
}

type pathValues struct {
	id, symbol, timeframe string
	query                 url.Values
}

// badField is a 400 naming the offending field, as the body decoder's are.
func badField(code, field, msg string) result {
	return fail(http.StatusBadRequest, code, msg, map[string]any{"field": field})
}

// parseDate reads RFC 3339 ("2024-01-02T15:04:05Z") or a bare date
// ("2024-01-02", midnight UTC).
func parseDate(field, s string) (time.Time, *result) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	res := badField("INVALID_DATE", field, fmt.Sprintf("%s %q: want RFC 3339 (2024-01-02T15:04:05Z) or a date (2024-01-02)", field, s))
	return time.Time{}, &res
}

// loadRequest is the body of POST /api/v1/data/load.
type loadRequest struct {
	Symbol    string `json:"symbol"`
	Timeframe string `json:"timeframe"`
	Mode      string `json:"mode"`       // tail (default), backfill or full
	StartDate string `json:"start_date"` // default: the instrument's first bar
	EndDate   string `json:"end_date"`   // default: now
}

// dataLoad starts a load and answers 202 with the operation; the load runs
// on, owned by the loader, after the answer.
func (s *Server) dataLoad(ctx context.Context, in loadRequest) result {
	if strings.TrimSpace(in.Symbol) == "" {
		return badField("INVALID_SYMBOL", "symbol", "symbol is required")
	}
	if _, err := loader.ParseTimeframe(in.Timeframe); err != nil {
		return badField("INVALID_TIMEFRAME", "timeframe", err.Error())
	}
	mode, err := loader.ParseMode(in.Mode)
	if err != nil {
		return badField("INVALID_MODE", "mode", err.Error())
	}
	start, bad := parseDate("start_date", in.StartDate)
	if bad != nil {
		return *bad
	}
	end, bad := parseDate("end_date", in.EndDate)
	if bad != nil {
		return *bad
	}
	if !start.IsZero() && !end.IsZero() && !end.After(start) {
		return badField("INVALID_RANGE", "end_date", fmt.Sprintf("end_date %s is not after start_date %s",
			end.Format(time.RFC3339), start.Format(time.RFC3339)))
	}
	op, err := s.opts.Loader.Start(ctx, loader.Request{Symbol: in.Symbol, Timeframe: in.Timeframe, Mode: mode, Start: start, End: end})
	if err != nil {
		return loaderError(err)
	}
	return result{status: http.StatusAccepted, data: op}
}

// loaderError maps the loader's own errors; the rest are service errors.
func loaderError(err error) result {
	switch {
	case errors.Is(err, loader.ErrBusy):
		return fail(http.StatusConflict, "OPERATION_RUNNING", err.Error(), nil)
	case errors.Is(err, loader.ErrTooMany):
		return fail(http.StatusTooManyRequests, "TOO_MANY_OPERATIONS", err.Error(), nil)
	case errors.Is(err, loader.ErrClosed):
		return fail(http.StatusServiceUnavailable, "SHUTTING_DOWN", "the service is shutting down", nil)
	case errors.Is(err, loader.ErrNoOperation):
		return fail(http.StatusNotFound, "OPERATION_NOT_FOUND", err.Error(), nil)
	}
	return fromError(err)
}

// OperationList is the answer of GET /api/v1/operations.
type OperationList struct {
	Operations []loader.Operation `json:"operations"`
	Count      int                `json:"count"`
	Running    int                `json:"running"`
}

func (s *Server) operations(context.Context) result {
	ops := s.opts.Loader.Operations()
	out := OperationList{Operations: ops, Count: len(ops)}
	for _, o := range ops {
		if o.Status == loader.StatusRunning {
			out.Running++
		}
	}
	return ok(out)
}

func (s *Server) operation(_ context.Context, p pathValues) result {
	op, err := s.opts.Loader.Operation(p.id)
	if err != nil {
		return loaderError(err)
	}
	return ok(op)
}

// cancelOperation cancels and answers once the operation has stopped,
// which is at once: an in-flight request is cancelled on the gateway.
func (s *Server) cancelOperation(ctx context.Context, p pathValues) result {
	op, err := s.opts.Loader.Cancel(ctx, p.id)
	if err != nil {
		return loaderError(err)
	}
	return ok(op)
}

// checkQuery refuses parameters the endpoint does not know, as the body
// decoder refuses unknown fields: a misspelt "limt" must not be ignored.
func checkQuery(q url.Values, known ...string) *result {
	var unknown []string
	for k := range q {
		found := false
		for _, n := range known {
			found = found || k == n
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	res := badField("UNKNOWN_PARAMETER", unknown[0], fmt.Sprintf("unknown query parameter %q (known: %s)", unknown[0], strings.Join(known, ", ")))
	return &res
}

// bars answers stored bars: ?start=&end= (RFC 3339 or a date; [start,
// end)), ?limit= (default 1000, at most 20000) and ?latest=true for the
// last ones instead of the first.
func (s *Server) bars(ctx context.Context, p pathValues) result {
	if bad := checkQuery(p.query, "start", "end", "limit", "latest"); bad != nil {
		return *bad
	}
	start, bad := parseDate("start", p.query.Get("start"))
	if bad != nil {
		return *bad
	}
	end, bad := parseDate("end", p.query.Get("end"))
	if bad != nil {
		return *bad
	}
	if !start.IsZero() && !end.IsZero() && !end.After(start) {
		return badField("INVALID_RANGE", "end", "end is not after start")
	}
	limit := defaultBarLimit
	if v := p.query.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxBarLimit {
			return badField("INVALID_LIMIT", "limit", fmt.Sprintf("limit %q: want 1 to %d", v, maxBarLimit))
		}
		limit = n
	}
	latest := false
	if v := p.query.Get("latest"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badField("INVALID_LATEST", "latest", fmt.Sprintf("latest %q: want true or false", v))
		}
		latest = b
	}
	series, err := s.opts.Loader.Bars(ctx, loader.BarsQuery{Symbol: p.symbol, Timeframe: p.timeframe, Start: start, End: end,
		Limit: limit, Latest: latest})
	if err != nil {
		return loaderError(err)
	}
	return ok(series)
}

func (s *Server) dataRange(ctx context.Context, p pathValues) result {
	if bad := checkQuery(p.query); bad != nil {
		return *bad
	}
	ri, err := s.opts.Loader.Range(ctx, p.symbol, p.timeframe)
	if err != nil {
		return loaderError(err)
	}
	return ok(ri)
}
