package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/internal/loader"
)

// fakeLoads answers the data endpoints like the service: a load that
// runs for a few polls, then ends with the given status.
type fakeLoads struct {
	mu       sync.Mutex
	polls    int
	final    loader.Status
	forever  bool // never ends on its own (for Ctrl+C)
	deleted  bool
	progress []loader.Progress
}

func (f *fakeLoads) op() loader.Operation {
	start, end := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	op := loader.Operation{ID: "op_feed", Type: "data_load", Status: loader.StatusRunning, Symbol: "AAPL", Timeframe: "1h",
		BarSize: "1 hour", Mode: loader.ModeFull, UseRTH: true, Start: &start, End: &end, Errors: []loader.OpError{}}
	i := min(f.polls, len(f.progress)-1)
	op.Progress = f.progress[i]
	switch {
	case f.deleted:
		op.Status, op.Error = loader.StatusCancelled, "cancelled by request"
	case !f.forever && f.polls >= len(f.progress)-1:
		op.Status = f.final
		if f.final == loader.StatusFailed {
			op.Error = "segment 2024-03-01T14:30:00Z..2024-03-28T20:00:00Z: IB error 200: no security definition"
		}
	}
	return op
}

func (f *fakeLoads) handler(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/data/load":
		op := f.op()
		op.Status, op.Start, op.End = loader.StatusRunning, nil, nil
		writeEnvelope(w, http.StatusAccepted, op, "", "")
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/operations/op_feed":
		f.polls++
		writeEnvelope(w, http.StatusOK, f.op(), "", "")
	case r.Method == http.MethodDelete && r.URL.Path == "/api/v1/operations/op_feed":
		f.deleted = true
		writeEnvelope(w, http.StatusOK, f.op(), "", "")
	default:
		writeEnvelope(w, http.StatusNotFound, nil, "NOT_FOUND", "no such endpoint")
	}
}

func steps() []loader.Progress {
	return []loader.Progress{
		{SegmentsTotal: 4},
		{SegmentsTotal: 4, SegmentsDone: 1, BarsFetched: 100, BarsStored: 100, Requests: 1},
		{SegmentsTotal: 4, SegmentsDone: 3, BarsFetched: 350, BarsStored: 350, Requests: 3, PacingWaits: 1, PacingWaitSeconds: 2.5},
		{SegmentsTotal: 4, SegmentsDone: 4, BarsFetched: 462, BarsStored: 462, Requests: 4, PacingWaits: 1, PacingWaitSeconds: 2.5, Percent: 100},
	}
}

func TestDataLoadFollowsProgress(t *testing.T) {
	for _, tt := range []struct {
		final loader.Status
		code  int
		err   string
	}{
		{loader.StatusCompleted, exitOK, ""},
		{loader.StatusFailed, exitFailed, "ktrdr: load op_feed failed: segment 2024-03-01T14:30:00Z..2024-03-28T20:00:00Z: IB error 200: no security definition\n"},
	} {
		fl := &fakeLoads{final: tt.final, progress: steps()}
		api := newFakeAPI(t, fl.handler)
		code, out, errOut := runCLI(t, "data", "load", "AAPL", "-t", "1h", "--mode", "full", "--start", "2024-03-01",
			"--end", "2024-06-01T00:00:00Z", "--poll", "10ms", "--api", api.url)
		if code != tt.code || errOut != tt.err {
			t.Fatalf("%s: exit %d, stderr %q\n%s", tt.final, code, errOut, out)
		}
		// Plain lines, one per change, never a carriage return.
		for _, want := range []string{
			"loading AAPL 1h (full), operation op_feed\n",
			"progress: 1/4 segments, 100 bars, ETA -, pacing 0s (0 waits)\n",
			"progress: 3/4 segments, 350 bars, ETA -, pacing 2.5s (1 waits)\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: stdout lacks %q:\n%s", tt.final, want, out)
			}
		}
		if strings.Contains(out, "\r") || strings.Count(out, "progress: 3/4") != 1 {
			t.Errorf("%s: progress redrawn or repeated:\n%q", tt.final, out)
		}
		if !regexp.MustCompile(`(?m)^status\s+` + string(tt.final) + `$`).MatchString(out) {
			t.Errorf("%s: no final status line:\n%s", tt.final, out)
		}
		body := api.requests()[0].body
		if body["symbol"] != "AAPL" || body["timeframe"] != "1h" || body["mode"] != "full" || body["start_date"] != "2024-03-01" ||
			body["end_date"] != "2024-06-01T00:00:00Z" {
			t.Errorf("load body %v", body)
		}
	}
}

func TestDataLoadJSONAndNoWait(t *testing.T) {
	fl := &fakeLoads{final: loader.StatusCompleted, progress: steps()}
	api := newFakeAPI(t, fl.handler)
	code, out, _ := runCLI(t, "data", "load", "AAPL", "-t", "1h", "--poll", "10ms", "-o", "json", "--api", api.url)
	var op loader.Operation
	if err := json.Unmarshal([]byte(out), &op); code != exitOK || err != nil || op.Status != loader.StatusCompleted || op.Progress.BarsStored != 462 {
		t.Fatalf("-o json: exit %d, %v\n%s", code, err, out)
	}
	code, out, _ = runCLI(t, "data", "load", "AAPL", "-t", "1h", "--no-wait", "--api", api.url)
	if code != exitOK || out != "started op_feed: AAPL 1h full\n" {
		t.Fatalf("--no-wait: exit %d\n%s", code, out)
	}
}

func TestDataUsageAndServerErrors(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "ZZZZ") {
			writeEnvelope(w, http.StatusNotFound, nil, "SYMBOL_NOT_FOUND", "symbol ZZZZ not found")
			return
		}
		writeEnvelope(w, http.StatusBadRequest, nil, "INVALID_RANGE", "end_date is not after start_date")
	})
	for _, tt := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"data", "load", "AAPL"}, exitUsage, "-t/--timeframe is required"},
		{[]string{"data", "load", "AAPL", "-t", "7m"}, exitUsage, "not supported"},
		{[]string{"data", "load", "AAPL", "-t", "1h", "--mode", "sideways"}, exitUsage, "--mode"},
		{[]string{"data", "load", "AAPL", "-t", "1h", "--start", "March"}, exitUsage, "--start \"March\""},
		{[]string{"data", "show", "AAPL", "-t", "1h", "-f", "xml"}, exitUsage, "-f \"xml\""},
		{[]string{"data", "show", "AAPL", "-t", "1h", "-n", "0"}, exitUsage, "-n 0"},
		{[]string{"data", "range", "AAPL"}, exitUsage, "-t/--timeframe is required"},
		{[]string{"data", "load", "AAPL", "-t", "1h", "--api", api.url}, exitUsage, "INVALID_RANGE, HTTP 400"},
		{[]string{"data", "show", "ZZZZ", "-t", "1h", "--api", api.url}, exitFailed, "SYMBOL_NOT_FOUND, HTTP 404"},
		{[]string{"data", "range", "AAPL", "-t", "1h", "--api", "http://" + closedAddr(t)}, exitUnreached, "cannot reach"},
	} {
		code, _, errOut := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.err) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("ktrdr %s: exit %d (want %d), stderr %q (want %q)", strings.Join(tt.args, " "), code, tt.code, errOut, tt.err)
		}
	}
}

func seriesPayload() loader.Series {
	t0 := time.Date(2024, 5, 31, 17, 0, 0, 0, time.UTC)
	return loader.Series{Symbol: "EUR.USD", Timeframe: "1h", Count: 2, Bars: []loader.Bar{
		{Time: t0, Open: 1.08312, High: 1.0845, Low: 1.083, Close: 1.08401, Volume: -1, WAP: -1, Count: -1},
		{Time: t0.Add(time.Hour), Open: 1.08401, High: 1.08411, Low: 1.08201, Close: 1.0825, Volume: -1, WAP: -1, Count: -1},
	}}
}

func TestDataShowFormats(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RequestURI())
		mu.Unlock()
		switch r.URL.EscapedPath() {
		case "/api/v1/data/EUR%2FUSD/1%20hour":
			writeEnvelope(w, http.StatusOK, seriesPayload(), "", "")
		case "/api/v1/data/EUR%2FUSD/1h/range":
			first, last := time.Date(2024, 1, 1, 22, 0, 0, 0, time.UTC), time.Date(2024, 5, 31, 20, 0, 0, 0, time.UTC)
			writeEnvelope(w, http.StatusOK, loader.RangeInfo{Symbol: "EUR.USD", Timeframe: "1h", First: &first, Last: &last,
				Count: 2484, Expected: 2490, Missing: 6, Gaps: 2}, "", "")
		default:
			writeEnvelope(w, http.StatusNotFound, nil, "NOT_FOUND", "no such endpoint "+r.URL.EscapedPath())
		}
	})
	code, out, errOut := runCLI(t, "data", "show", "EUR/USD", "-t", "1 hour", "--api", api.url)
	want := "TIME (UTC)           OPEN     HIGH     LOW      CLOSE    VOLUME  WAP  COUNT\n" +
		"2024-05-31 17:00:00  1.08312  1.0845   1.083    1.08401  -1      -1   -1\n" +
		"2024-05-31 18:00:00  1.08401  1.08411  1.08201  1.0825   -1      -1   -1\n"
	if code != exitOK || out != want {
		t.Fatalf("table: exit %d %s\n%s\nwant\n%s", code, errOut, out, want)
	}
	code, out, _ = runCLI(t, "data", "show", "EUR/USD", "-t", "1 hour", "-f", "csv", "-n", "2", "--start", "2024-05-31", "--api", api.url)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != exitOK || err != nil || len(rows) != 3 || strings.Join(rows[0], ",") != "time,open,high,low,close,volume,wap,count" ||
		strings.Join(rows[1], ",") != "2024-05-31T17:00:00Z,1.08312,1.0845,1.083,1.08401,-1,-1,-1" {
		t.Fatalf("csv: exit %d, %v\n%s", code, err, out)
	}
	code, out, _ = runCLI(t, "data", "show", "EUR/USD", "-t", "1 hour", "-f", "json", "--end", "2024-06-01", "--api", api.url)
	var s loader.Series
	if err := json.Unmarshal([]byte(out), &s); code != exitOK || err != nil || s.Count != 2 || s.Bars[1].Close != 1.0825 {
		t.Fatalf("json: exit %d, %v\n%s", code, err, out)
	}
	code, out, _ = runCLI(t, "data", "range", "EUR/USD", "-t", "1h", "--api", api.url)
	if code != exitOK || !regexp.MustCompile(`(?m)^gaps\s+2 \(6 of 2,490 expected bars missing\)$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^bars\s+2,484$`).MatchString(out) {
		t.Fatalf("range: exit %d\n%s", code, out)
	}
	// The last -n bars by default, the first -n from --start.
	mu.Lock()
	defer mu.Unlock()
	for i, want := range []string{"?latest=true&limit=10", "?limit=2&start=2024-05-31", "?end=2024-06-01&latest=true&limit=10"} {
		if !strings.HasSuffix(queries[i], want) {
			t.Errorf("query %d: %s, want ...%s", i, queries[i], want)
		}
	}
}

// TestDataLoadCtrlC interrupts the built binary following a load that
// never ends: it must cancel the load on the service, then exit 1.
func TestDataLoadCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildKtrdr(t)
	fl := &fakeLoads{forever: true, progress: steps()}
	api := newFakeAPI(t, fl.handler)
	cmd := exec.Command(bin, "data", "load", "AAPL", "-t", "1h", "--poll", "20ms", "--api", api.url)
	cmd.Env = cliEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fl.mu.Lock()
		polls := fl.polls
		fl.mu.Unlock()
		if polls >= 3 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("the command did not follow the load\n%s%s", out.String(), errOut.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the command did not exit within 10s of SIGINT")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailed {
		t.Fatalf("exit %v, want %d\n%s%s", err, exitFailed, out.String(), errOut.String())
	}
	fl.mu.Lock()
	deleted := fl.deleted
	fl.mu.Unlock()
	if !deleted || errOut.String() != "ktrdr: load op_feed cancelled (interrupted); 462 bars stored\n" ||
		!regexp.MustCompile(`(?m)^status\s+cancelled$`).MatchString(out.String()) {
		t.Fatalf("deleted %t\nstdout:\n%s\nstderr: %q", deleted, out.String(), errOut.String())
	}
}

// TestDataCLIAgainstServe loads, shows and ranges real bars through a real
// `ktrdr serve --sim`.
func TestDataCLIAgainstServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs ktrdr serve")
	}
	bin := buildKtrdr(t)
	apiURL, _ := startServe(t, bin)
	ktrdr := func(args ...string) cliResult {
		t.Helper()
		return runBinary(t, bin, append(args, "--api", apiURL)...)
	}
	// The last four complete weeks, whatever today is.
	end := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -int(time.Now().UTC().Weekday()))
	start := end.AddDate(0, 0, -28)
	var r cliResult
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r = ktrdr("data", "load", "MSFT", "-t", "1h", "--mode", "full", "--start", start.Format(time.DateOnly),
			"--end", end.Format(time.DateOnly), "--poll", "50ms"); r.code != exitUnreached || time.Now().After(deadline) {
			break
		}
	}
	if r.code != exitOK || !strings.Contains(r.stdout, "progress: ") || !regexp.MustCompile(`(?m)^bars\s+140 fetched, 140 stored`).MatchString(r.stdout) {
		t.Fatalf("data load: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// 20 sessions of 7 hourly bars: loaded again, nothing is fetched.
	if r = ktrdr("data", "load", "MSFT", "-t", "1 hour", "--mode", "full", "--start", start.Format(time.DateOnly), "--end", end.Format(time.DateOnly)); r.code != exitOK ||
		!regexp.MustCompile(`(?m)^segments\s+\d+ of \d+ \((\d+) already stored`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^requests\s+0 \(0 retries\)$`).MatchString(r.stdout) {
		t.Fatalf("data load again: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = ktrdr("data", "show", "MSFT", "-t", "1h", "-n", "3")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != exitOK || len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME (UTC)") {
		t.Fatalf("data show: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = ktrdr("data", "show", "MSFT", "-t", "1h", "-n", "7", "-f", "json", "--start", start.Format(time.DateOnly))
	var s loader.Series
	if err := json.Unmarshal([]byte(r.stdout), &s); r.code != exitOK || err != nil || s.Count != 7 || s.Bars[0].Time.Before(start) {
		t.Fatalf("data show -f json: exit %d %v\n%s", r.code, err, r.stdout)
	}
	r = ktrdr("data", "show", "MSFT", "-t", "1h", "-f", "csv", "-n", "5")
	if rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll(); r.code != exitOK || err != nil || len(rows) != 6 {
		t.Fatalf("data show -f csv: exit %d %v\n%s", r.code, err, r.stdout)
	}
	r = ktrdr("data", "range", "MSFT", "-t", "1h")
	if r.code != exitOK || !regexp.MustCompile(`(?m)^bars\s+140$`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^gaps\s+0 `).MatchString(r.stdout) {
		t.Fatalf("data range: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = ktrdr("data", "load", "ZZZZZZ", "-t", "1h")
	if r.code != exitFailed || !strings.Contains(r.stderr, "SYMBOL_NOT_FOUND") {
		t.Fatalf("unknown symbol: exit %d %s", r.code, r.stderr)
	}
}
