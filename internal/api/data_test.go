package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/internal/api"
	"github.com/ktrdr/ktrdr/internal/loader"
	"github.com/ktrdr/ktrdr/internal/pacing"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/internal/store"
)

// dataNow is the simulator's and the loader's clock: a Friday evening
// after the US close, so every range asked for is history.
var dataNow = time.Date(2024, 6, 14, 21, 30, 0, 0, time.UTC)

// newDataEnv is newEnv with a loader: a real simulator (on a fixed clock),
// pool, SQLite store and pacing scheduler behind the API.
func newDataEnv(t *testing.T, reg *prometheus.Registry) (*env, *loader.Loader) {
	t.Helper()
	sim, err := ibsim.Start(ibsim.Config{Seed: 5, Now: func() time.Time { return dataNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	svc, err := service.New(service.Options{
		Gateway: service.GatewayConfig{Host: "127.0.0.1", Port: sim.Port(), ClientIDBase: 1},
		Pool:    testPool(),
		DataDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "bars.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ld, err := loader.New(loader.Config{Gateway: svc, Store: st, Now: func() time.Time { return dataNow },
		Pacing:         pacing.New(pacing.Config{Clock: loader.PacingClock(loader.PacingMargin(1))}),
		RequestTimeout: 3 * time.Second, BackoffBase: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Close() })
	srv, err := api.New(svc, api.Options{Token: testToken, Loader: ld, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config = srv.HTTPServer("")
	ts.Start()
	t.Cleanup(ts.Close)
	return &env{sim: sim, svc: svc, srv: srv, ts: ts, token: testToken}, ld
}

// decode reads the envelope's data into v.
func decode(t *testing.T, rep reply, v any) {
	t.Helper()
	if err := json.Unmarshal(rep.env.Data, v); err != nil {
		t.Fatalf("data: %v: %s", err, rep.body)
	}
}

// waitDone polls an operation until it is no longer running.
func (e *env) waitDone(t *testing.T, id string) loader.Operation {
	t.Helper()
	var op loader.Operation
	eventually(t, 30*time.Second, "operation "+id+" done", func() (bool, string) {
		rep := e.get(t, "/api/v1/operations/"+id)
		if rep.status != http.StatusOK {
			t.Fatalf("operation %s: %d %s", id, rep.status, rep.body)
		}
		decode(t, rep, &op)
		return op.Status != loader.StatusRunning, string(rep.body)
	})
	return op
}

func TestDataLoadLifecycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, _ := newDataEnv(t, reg)

	rep := e.send(t, http.MethodPost, "/api/v1/data/load",
		`{"symbol": "AAPL", "timeframe": "1h", "mode": "full", "start_date": "2024-03-01", "end_date": "2024-06-01T00:00:00Z"}`)
	if rep.status != http.StatusAccepted {
		t.Fatalf("load: %d %s", rep.status, rep.body)
	}
	var op loader.Operation
	decode(t, rep, &op)
	if op.ID == "" || op.Symbol != "AAPL" || op.Timeframe != "1h" || op.BarSize != "1 hour" || op.Mode != loader.ModeFull ||
		!op.UseRTH || op.RequestedStart == nil || !op.RequestedStart.Equal(time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("operation as started: %s", rep.body)
	}
	op = e.waitDone(t, op.ID)
	p := op.Progress
	if op.Status != loader.StatusCompleted || p.SegmentsTotal < 4 || p.SegmentsDone != p.SegmentsTotal || p.BarsStored != 462 ||
		p.BarsFetched != 462 || p.Percent != 100 || p.ETASeconds == nil || *p.ETASeconds != 0 || op.FinishedAt == nil || len(op.Errors) != 0 {
		t.Fatalf("completed operation: %+v", op)
	}

	rep = e.get(t, "/api/v1/operations")
	var list api.OperationList
	decode(t, rep, &list)
	if list.Count != 1 || list.Running != 0 || list.Operations[0].ID != op.ID {
		t.Fatalf("operations: %s", rep.body)
	}

	// The first trading day of March: seven hourly RTH bars, the first a
	// half hour from the 09:30 open.
	rep = e.get(t, "/api/v1/data/AAPL/1h?start=2024-03-01&end=2024-03-02")
	var series loader.Series
	decode(t, rep, &series)
	if rep.status != 200 || series.Symbol != "AAPL" || series.Timeframe != "1h" || series.Count != 7 || len(series.Bars) != 7 ||
		!series.Bars[0].Time.Equal(time.Date(2024, 3, 1, 14, 30, 0, 0, time.UTC)) ||
		!series.Bars[1].Time.Equal(time.Date(2024, 3, 1, 15, 0, 0, 0, time.UTC)) {
		t.Fatalf("bars of March 1: %s", rep.body)
	}
	want := ibsim.History{Seed: 5}.Bar(mustInstrument(t, 265598), mustBarSize(t, "1 hour"), "TRADES", series.Bars[3].Time)
	if b := series.Bars[3]; b.Open != want.Open || b.Close != want.Close || b.High != want.High || b.Low != want.Low || b.Volume != want.Volume {
		t.Fatalf("bar %+v, the simulator's %+v", b, want)
	}
	// IB's spelling names the same series; the last bars come with latest.
	rep = e.get(t, "/api/v1/data/aapl/1%20hour?limit=3&latest=true")
	decode(t, rep, &series)
	if series.Count != 3 || !series.Bars[2].Time.Equal(time.Date(2024, 5, 31, 19, 0, 0, 0, time.UTC)) {
		t.Fatalf("latest 3: %s", rep.body)
	}
	rep = e.get(t, "/api/v1/data/AAPL/1h?limit=2")
	decode(t, rep, &series)
	if series.Count != 2 || !series.Bars[0].Time.Equal(time.Date(2024, 3, 1, 14, 30, 0, 0, time.UTC)) {
		t.Fatalf("first 2: %s", rep.body)
	}

	rep = e.get(t, "/api/v1/data/AAPL/1h/range")
	var ri loader.RangeInfo
	decode(t, rep, &ri)
	if ri.Count != 462 || ri.Gaps != 0 || ri.Missing != 0 || ri.Expected != 462 || ri.First == nil ||
		!ri.First.Equal(time.Date(2024, 3, 1, 14, 30, 0, 0, time.UTC)) || !ri.Last.Equal(time.Date(2024, 5, 31, 19, 0, 0, 0, time.UTC)) {
		t.Fatalf("range: %s", rep.body)
	}
	// A series never loaded is empty, not an error.
	rep = e.get(t, "/api/v1/data/MSFT/1d/range")
	if decode(t, rep, &ri); rep.status != 200 || ri.Count != 0 || ri.First != nil {
		t.Fatalf("empty range: %s", rep.body)
	}

	// Loaded again: every segment skipped, nothing fetched.
	rep = e.send(t, http.MethodPost, "/api/v1/data/load",
		`{"symbol": "AAPL", "timeframe": "1 hour", "mode": "full", "start_date": "2024-03-01", "end_date": "2024-06-01"}`)
	decode(t, rep, &op)
	op = e.waitDone(t, op.ID)
	if op.Progress.Requests != 0 || op.Progress.SegmentsSkipped != op.Progress.SegmentsTotal {
		t.Fatalf("second load: %+v", op.Progress)
	}

	rep = e.get(t, "/metrics")
	for _, line := range []string{"ktrdr_pacing_violations_total 0", "ktrdr_data_bars_stored_total 462",
		`ktrdr_data_operations_total{status="completed"} 2`, "ktrdr_data_operations_running 0", "ktrdr_pacing_requests_total 4"} {
		if !strings.Contains(string(rep.body), line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func mustInstrument(t *testing.T, conID int64) *ibsim.Instrument {
	t.Helper()
	in, ok := ibsim.DefaultCatalog().ByConID(conID)
	if !ok {
		t.Fatalf("no conId %d", conID)
	}
	return in
}

func mustBarSize(t *testing.T, s string) ibsim.BarSize {
	t.Helper()
	b, err := ibsim.ParseBarSize(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDataBadInput(t *testing.T) {
	e, _ := newDataEnv(t, nil)
	cases := []struct {
		method, path, body string
		status             int
		code, field        string
	}{
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "1h", "sise": 3}`, 400, "UNKNOWN_FIELD", "sise"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": 60}`, 400, "INVALID_FIELD_TYPE", "timeframe"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "1h"`, 400, "INVALID_JSON", ""},
		{"POST", "/api/v1/data/load", ``, 400, "INVALID_SYMBOL", "symbol"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL"}`, 400, "INVALID_TIMEFRAME", "timeframe"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "7m"}`, 400, "INVALID_TIMEFRAME", "timeframe"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "1h", "mode": "sideways"}`, 400, "INVALID_MODE", "mode"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "1h", "start_date": "01/02/2024"}`, 400, "INVALID_DATE", "start_date"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "1h", "end_date": "2024-02-30"}`, 400, "INVALID_DATE", "end_date"},
		{"POST", "/api/v1/data/load", `{"symbol": "AAPL", "timeframe": "1h", "start_date": "2024-03-01", "end_date": "2024-02-01"}`, 400, "INVALID_RANGE", "end_date"},
		{"POST", "/api/v1/data/load", `{"symbol": "bad symbol!", "timeframe": "1h"}`, 400, "INVALID_SYMBOL", ""},
		{"POST", "/api/v1/data/load", `{"symbol": "ZZZZZZ", "timeframe": "1h"}`, 404, "SYMBOL_NOT_FOUND", ""},
		{"GET", "/api/v1/operations/op_0000", ``, 404, "OPERATION_NOT_FOUND", ""},
		{"DELETE", "/api/v1/operations/op_0000", ``, 404, "OPERATION_NOT_FOUND", ""},
		{"GET", "/api/v1/data/AAPL/1h?limt=5", ``, 400, "UNKNOWN_PARAMETER", "limt"},
		{"GET", "/api/v1/data/AAPL/1h?limit=0", ``, 400, "INVALID_LIMIT", "limit"},
		{"GET", "/api/v1/data/AAPL/1h?limit=1000000", ``, 400, "INVALID_LIMIT", "limit"},
		{"GET", "/api/v1/data/AAPL/1h?start=yesterday", ``, 400, "INVALID_DATE", "start"},
		{"GET", "/api/v1/data/AAPL/1h?start=2024-03-02&end=2024-03-01", ``, 400, "INVALID_RANGE", "end"},
		{"GET", "/api/v1/data/AAPL/1h?latest=maybe", ``, 400, "INVALID_LATEST", "latest"},
		{"GET", "/api/v1/data/AAPL/fortnight", ``, 400, "INVALID_TIMEFRAME", "timeframe"},
		{"GET", "/api/v1/data/ZZZZZZ/1h", ``, 404, "SYMBOL_NOT_FOUND", ""},
		{"GET", "/api/v1/data/AAPL/1h/range?x=1", ``, 400, "UNKNOWN_PARAMETER", "x"},
		{"PUT", "/api/v1/data/load", `{}`, 405, "METHOD_NOT_ALLOWED", ""},
	}
	for _, c := range cases {
		rep := e.send(t, c.method, c.path, c.body)
		if rep.status != c.status || rep.env.Error == nil || rep.env.Error.Code != c.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", c.method, c.path, c.body, rep.status, rep.body, c.status, c.code)
			continue
		}
		if c.field != "" && rep.env.Error.Details["field"] != c.field {
			t.Errorf("%s %s %s: details %v, want field %q", c.method, c.path, c.body, rep.env.Error.Details, c.field)
		}
	}
}

func TestDataCancelAndConflict(t *testing.T) {
	e, _ := newDataEnv(t, nil)
	// Discovered first: then a silent gateway leaves the load's first
	// request unanswered, and the load runs until cancelled.
	for _, sym := range []string{"EURUSD", "EUR/USD"} {
		if rep := e.send(t, http.MethodPost, "/api/v1/ib/symbols/discover", `{"symbol": "`+sym+`"}`); rep.status != 200 {
			t.Fatalf("discover: %s", rep.body)
		}
	}
	if _, err := e.sim.AddFault(&ibsim.Silent{}); err != nil {
		t.Fatal(err)
	}
	body := `{"symbol": "EUR/USD", "timeframe": "5m", "mode": "full", "start_date": "2024-05-01", "end_date": "2024-06-01"}`
	rep := e.send(t, http.MethodPost, "/api/v1/data/load", body)
	var op loader.Operation
	decode(t, rep, &op)
	if rep.status != http.StatusAccepted || op.Status != loader.StatusRunning || op.Symbol != "EUR.USD" {
		t.Fatalf("load: %d %s", rep.status, rep.body)
	}
	// One load per series at a time, however the pair is written.
	if rep := e.send(t, http.MethodPost, "/api/v1/data/load", strings.Replace(body, "EUR/USD", "EURUSD", 1)); rep.status != http.StatusConflict ||
		rep.env.Error.Code != "OPERATION_RUNNING" || !strings.Contains(rep.env.Error.Message, op.ID) {
		t.Fatalf("second load of the series: %d %s", rep.status, rep.body)
	}
	t0 := time.Now()
	rep = e.send(t, http.MethodDelete, "/api/v1/operations/"+op.ID, "")
	decode(t, rep, &op)
	if rep.status != 200 || op.Status != loader.StatusCancelled || op.Error != "cancelled by request" || time.Since(t0) > 2*time.Second {
		t.Fatalf("cancel after %s: %d %s", time.Since(t0), rep.status, rep.body)
	}
	rep = e.get(t, "/api/v1/operations")
	var list api.OperationList
	decode(t, rep, &list)
	if list.Count != 1 || list.Operations[0].Status != loader.StatusCancelled {
		t.Fatalf("operations after cancel: %s", rep.body)
	}
	e.sim.ClearFaults()
}

// TestDataRoutesNeedTheLoader: a server built without one has no data
// routes (404 with the envelope), and still starts.
func TestDataRoutesNeedTheLoader(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, p := range []string{"/api/v1/operations", "/api/v1/data/AAPL/1h"} {
		if rep := e.get(t, p); rep.status != http.StatusNotFound {
			t.Errorf("%s without a loader: %d %s", p, rep.status, rep.body)
		}
	}
}
