package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/internal/loader"
)

func newDataCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Load historical bars from IB into the store, and read them back"}
	cmd.AddCommand(newDataLoadCmd(stdout), newDataShowCmd(stdout), newDataRangeCmd(stdout))
	return cmd
}

// checkDate validates a --start or --end value the way the API reads it,
// so a typo is a usage error before anything is asked.
func checkDate(flag, s string) error {
	if s == "" {
		return nil
	}
	if _, err := time.Parse(time.RFC3339, s); err == nil {
		return nil
	}
	if _, err := time.Parse(time.DateOnly, s); err == nil {
		return nil
	}
	return usageError("--%s %q: want a date (2024-01-02) or RFC 3339 (2024-01-02T15:04:05Z)", flag, s)
}

// seriesArgs are the symbol and timeframe every data command takes.
func seriesArgs(args []string, timeframe string) (symbol string, err error) {
	symbol = strings.TrimSpace(args[0])
	if symbol == "" {
		return "", usageError("SYMBOL must not be empty")
	}
	if strings.TrimSpace(timeframe) == "" {
		return "", usageError("-t/--timeframe is required: one of %s", loader.TimeframeNames())
	}
	if _, err := loader.ParseTimeframe(timeframe); err != nil {
		return "", usageError("-t %v", err)
	}
	return symbol, nil
}

// seriesPath is /api/v1/data/{symbol}/{timeframe}, each escaped as one
// path segment ("EUR/USD" stays one symbol).
func seriesPath(symbol, timeframe string) string {
	return "/api/v1/data/" + url.PathEscape(symbol) + "/" + url.PathEscape(timeframe)
}

// isTerminal reports whether w is a terminal, where a progress bar can be
// redrawn in place. Unlike colour, NO_COLOR does not turn it off.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newDataLoadCmd(stdout io.Writer) *cobra.Command {
	var (
		f                         apiFlags
		timeframe, mode, from, to string
		noWait                    bool
		poll                      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "load SYMBOL -t TIMEFRAME",
		Short: "Load historical bars from IB into the store, showing progress until done",
		Long: "Starts a load on the service (POST /api/v1/data/load) and follows it until it ends:\n" +
			"segments, bars, time left and time spent waiting on IB's pacing rules, as a progress bar\n" +
			"on a terminal and as plain lines otherwise. Ctrl+C cancels the load on the service before\n" +
			"exiting; bars already stored stay.\n\n" +
			"Modes: tail (default) continues from the last stored bar; backfill fills before the first;\n" +
			"full covers the whole range and fetches only the segments with bars missing.\n" +
			"--start defaults to the instrument's first bar, --end to now.\n" +
			"--timeout bounds each call to the API, not the load. Exit 0 when the load completed,\n" +
			"1 when it failed or was cancelled.",
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cc *cobra.Command, args []string) error {
		symbol, err := seriesArgs(args, timeframe)
		if err != nil {
			return err
		}
		if _, err := loader.ParseMode(mode); err != nil {
			return usageError("--mode %v", err)
		}
		if err := checkDate("start", from); err != nil {
			return err
		}
		if err := checkDate("end", to); err != nil {
			return err
		}
		if poll <= 0 {
			return usageError("--poll %s: must be positive", poll)
		}
		c, err := f.client(cc, stdout)
		if err != nil {
			return err
		}
		defer c.close()
		ctx, stop := signal.NotifyContext(cc.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runLoad(ctx, c, loadOptions{body: map[string]any{"symbol": symbol, "timeframe": timeframe, "mode": mode,
			"start_date": from, "end_date": to}, noWait: noWait, poll: poll, bar: isTerminal(stdout) && !c.json})
	}
	f.register(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&timeframe, "timeframe", "t", "", "bar size: 1m, 5m, 15m, 30m, 1h, 4h, 1d (or IB's spelling, \"1 hour\")")
	fs.StringVar(&mode, "mode", "tail", "tail, backfill or full")
	fs.StringVar(&from, "start", "", "first date (2024-01-02 or RFC 3339); default: the instrument's first bar")
	fs.StringVar(&to, "end", "", "end date, exclusive (2024-01-02 or RFC 3339); default: now")
	fs.BoolVar(&noWait, "no-wait", false, "print the operation id and exit; the load goes on on the service")
	fs.DurationVar(&poll, "poll", 500*time.Millisecond, "how often to ask the service for progress")
	return cmd
}

type loadOptions struct {
	body   map[string]any
	noWait bool
	poll   time.Duration
	bar    bool // redraw a progress bar in place
}

// runLoad starts the load and follows it. ctx ends on Ctrl+C: the load is
// then cancelled on the service before returning.
func runLoad(ctx context.Context, c *apiClient, o loadOptions) error {
	call := func(ctx context.Context, method, path string, body, v any) error {
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		rep, err := c.call(cctx, method, path, body)
		if err != nil {
			return err
		}
		if !rep.ok() {
			return c.failure(rep)
		}
		return c.decode(rep, v)
	}
	var op loader.Operation
	if err := call(ctx, http.MethodPost, "/api/v1/data/load", o.body, &op); err != nil {
		if ctx.Err() != nil {
			return &exitError{code: exitFailed, err: errors.New("interrupted before the service answered: a load may have started (GET /api/v1/operations lists them)")}
		}
		return err
	}
	if o.noWait {
		if c.json {
			return printOperationJSON(c, op)
		}
		fmt.Fprintf(c.stdout, "started %s: %s %s %s\n", op.ID, op.Symbol, op.Timeframe, op.Mode)
		return nil
	}
	p := &progress{w: c.stdout, bar: o.bar, quiet: c.json}
	p.started(op)
	tick := time.NewTicker(o.poll)
	defer tick.Stop()
	for op.Status == loader.StatusRunning {
		select {
		case <-ctx.Done():
			return cancelLoad(c, p, op, call)
		case <-tick.C:
		}
		var cur loader.Operation
		if err := call(ctx, http.MethodGet, "/api/v1/operations/"+url.PathEscape(op.ID), nil, &cur); err != nil {
			if ctx.Err() != nil {
				return cancelLoad(c, p, op, call)
			}
			p.end()
			return fmt.Errorf("lost contact while following %s, which may go on on the service: %w", op.ID, err)
		}
		op = cur
		p.update(op)
	}
	return finishLoad(c, p, op, false)
}

// cancelLoad asks the service to cancel op after Ctrl+C, with a context of
// its own (the command's has ended), and reports the outcome.
func cancelLoad(c *apiClient, p *progress, op loader.Operation, call func(context.Context, string, string, any, any) error) error {
	var cur loader.Operation
	if err := call(context.Background(), http.MethodDelete, "/api/v1/operations/"+url.PathEscape(op.ID), nil, &cur); err != nil {
		p.end()
		return &exitError{code: exitFailed, err: fmt.Errorf("interrupted, but cancelling %s on the service failed: %v", op.ID, err)}
	}
	return finishLoad(c, p, cur, true)
}

// finishLoad prints the outcome; anything but completed exits 1.
func finishLoad(c *apiClient, p *progress, op loader.Operation, interrupted bool) error {
	p.end()
	if c.json {
		if err := printOperationJSON(c, op); err != nil {
			return err
		}
	} else {
		renderOperation(c.stdout, c.color, op)
	}
	switch op.Status {
	case loader.StatusCompleted:
		return nil
	case loader.StatusCancelled:
		why := op.Error
		if interrupted {
			why = "interrupted"
		}
		return &exitError{code: exitFailed, err: fmt.Errorf("load %s cancelled (%s); %s bars stored", op.ID, why, thousands(op.Progress.BarsStored))}
	case loader.StatusRunning:
		return &exitError{code: exitFailed, err: fmt.Errorf("load %s still running on the service", op.ID)}
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("load %s failed: %s", op.ID, op.Error)}
}

func printOperationJSON(c *apiClient, op loader.Operation) error {
	b, err := json.Marshal(op)
	if err != nil {
		return err
	}
	c.printJSON(b)
	return nil
}

// progress draws a load's progress: a bar redrawn in place with \r on a
// terminal, a line per change otherwise (logs and pipes keep every state).
type progress struct {
	w          io.Writer
	bar, quiet bool
	last       string
	width      int // of the bar line drawn, to blank a shorter one
}

func (p *progress) started(op loader.Operation) {
	if p.quiet {
		return
	}
	fmt.Fprintf(p.w, "loading %s %s (%s), operation %s\n", op.Symbol, op.Timeframe, op.Mode, op.ID)
	p.update(op)
}

func (p *progress) update(op loader.Operation) {
	if p.quiet {
		return
	}
	pr := op.Progress
	eta := "-"
	if pr.ETASeconds != nil && op.Status == loader.StatusRunning {
		eta = fmtSeconds(*pr.ETASeconds)
	}
	if op.Start == nil && op.Status == loader.StatusRunning {
		// Not planned yet: the service is reading the store.
		if !p.bar && p.last == "" {
			fmt.Fprintln(p.w, "progress: planning")
			p.last = "planning"
		}
		return
	}
	stats := fmt.Sprintf("%d/%d segments", pr.SegmentsDone, pr.SegmentsTotal)
	if pr.SegmentsSkipped > 0 {
		stats += fmt.Sprintf(" (%d already stored)", pr.SegmentsSkipped)
	}
	stats += fmt.Sprintf(", %s bars, ETA %s, pacing %s (%d waits)", thousands(pr.BarsStored), eta,
		fmtSeconds(pr.PacingWaitSeconds), pr.PacingWaits)
	if pr.Retries > 0 {
		stats += fmt.Sprintf(", %d retries", pr.Retries)
	}
	if pr.PacingWaiting {
		stats += ", waiting on pacing"
	}
	if !p.bar {
		if stats != p.last {
			fmt.Fprintf(p.w, "progress: %s\n", stats)
			p.last = stats
		}
		return
	}
	const cells = 24
	done := 0
	if pr.SegmentsTotal > 0 {
		done = pr.SegmentsDone * cells / pr.SegmentsTotal
	}
	line := fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("#", done), strings.Repeat(".", cells-done), pr.Percent, stats)
	pad := ""
	if n := width(line); n < p.width {
		pad = strings.Repeat(" ", p.width-n)
	}
	p.width = max(p.width, width(line))
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
}

// end finishes the bar's line so what follows starts on a new one.
func (p *progress) end() {
	if p.bar && !p.quiet && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
}

func renderOperation(w io.Writer, color bool, op loader.Operation) {
	pr := op.Progress
	span := ""
	if op.Start != nil && op.End != nil {
		span = op.Start.UTC().Format(time.RFC3339) + " to " + op.End.UTC().Format(time.RFC3339)
	}
	segs := fmt.Sprintf("%d of %d (%d already stored, %d empty)", pr.SegmentsDone, pr.SegmentsTotal, pr.SegmentsSkipped, pr.SegmentsEmpty)
	bars := fmt.Sprintf("%s fetched, %s stored (new or changed)", thousands(pr.BarsFetched), thousands(pr.BarsStored))
	pacing := fmt.Sprintf("%d waits, %s in all, %d violations", pr.PacingWaits, fmtSeconds(pr.PacingWaitSeconds), pr.PacingViolations)
	writeKV(w, "", []kv{
		{"operation", op.ID},
		{"status", paint(color, loadStatusColor(op.Status), string(op.Status))},
		{"series", fmt.Sprintf("%s %s (%s, %s)", op.Symbol, op.Timeframe, op.BarSize, op.Mode)},
		{"range", span},
		{"segments", segs},
		{"bars", bars},
		{"requests", fmt.Sprintf("%d (%d retries)", pr.Requests, pr.Retries)},
		{"pacing", pacing},
		{"elapsed", fmtSeconds(pr.ElapsedSeconds)},
		{"note", op.Note},
		{"error", op.Error},
	})
}

func loadStatusColor(s loader.Status) string {
	switch s {
	case loader.StatusCompleted:
		return ansiGreen
	case loader.StatusRunning:
		return ansiYellow
	}
	return ansiRed
}

// fmtSeconds renders seconds as a short duration: 850ms, 12.3s, 4m5s.
func fmtSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// thousands renders n with thousands separators: 1,234,567.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func newDataShowCmd(stdout io.Writer) *cobra.Command {
	var (
		f                           apiFlags
		timeframe, from, to, format string
		n                           int
	)
	cmd := &cobra.Command{
		Use:   "show SYMBOL -t TIMEFRAME",
		Short: "Show stored bars: the last N, or the first N from --start",
		Long: "Reads bars from the store (GET /api/v1/data/{symbol}/{timeframe}): without --start the\n" +
			"last -n bars (up to --end), with --start the first -n from there. Times are UTC.\n" +
			"-f table (default), json or csv; -o json is the same as -f json.",
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cc *cobra.Command, args []string) error {
		symbol, err := seriesArgs(args, timeframe)
		if err != nil {
			return err
		}
		if err := checkDate("start", from); err != nil {
			return err
		}
		if err := checkDate("end", to); err != nil {
			return err
		}
		if n < 1 || n > 20000 {
			return usageError("-n %d: want 1 to 20000", n)
		}
		switch format {
		case "table", "csv":
		case "json":
			f.output = "json"
		default:
			return usageError("-f %q: want table, json or csv", format)
		}
		return apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
			q := url.Values{"limit": {strconv.Itoa(n)}}
			if from != "" {
				q.Set("start", from)
			} else {
				q.Set("latest", "true")
			}
			if to != "" {
				q.Set("end", to)
			}
			var s loader.Series
			if _, err := c.get(ctx, seriesPath(symbol, timeframe)+"?"+q.Encode(), &s); err != nil {
				return err
			}
			switch {
			case c.json:
			case format == "csv":
				return writeBarsCSV(c.stdout, s.Bars)
			case len(s.Bars) == 0:
				fmt.Fprintf(c.stdout, "no bars stored for %s %s in that range (ktrdr data load %s -t %s)\n", s.Symbol, s.Timeframe, symbol, timeframe)
			default:
				renderBars(c.stdout, s.Bars)
			}
			return nil
		})(cc, args)
	}
	f.register(cmd)
	fs := cmd.Flags()
	fs.StringVarP(&timeframe, "timeframe", "t", "", "bar size: 1m, 5m, 15m, 30m, 1h, 4h, 1d (or IB's spelling)")
	fs.StringVar(&from, "start", "", "first date (2024-01-02 or RFC 3339): show the first -n bars from there")
	fs.StringVar(&to, "end", "", "end date, exclusive")
	fs.IntVarP(&n, "count", "n", 10, "how many bars")
	fs.StringVarP(&format, "format", "f", "table", "table, json or csv")
	return cmd
}

// price renders a price with the digits it has, no float noise.
func price(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func renderBars(w io.Writer, bars []loader.Bar) {
	rows := make([][]string, len(bars))
	for i, b := range bars {
		rows[i] = []string{b.Time.UTC().Format("2006-01-02 15:04:05"), price(b.Open), price(b.High), price(b.Low), price(b.Close),
			price(b.Volume), price(b.WAP), strconv.Itoa(b.Count)}
	}
	writeTable(w, "", []string{"TIME (UTC)", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "WAP", "COUNT"}, rows)
}

func writeBarsCSV(w io.Writer, bars []loader.Bar) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"time", "open", "high", "low", "close", "volume", "wap", "count"})
	for _, b := range bars {
		_ = cw.Write([]string{b.Time.UTC().Format(time.RFC3339), price(b.Open), price(b.High), price(b.Low), price(b.Close),
			price(b.Volume), price(b.WAP), strconv.Itoa(b.Count)})
	}
	cw.Flush()
	return cw.Error()
}

func newDataRangeCmd(stdout io.Writer) *cobra.Command {
	var (
		f         apiFlags
		timeframe string
	)
	cmd := &cobra.Command{
		Use:   "range SYMBOL -t TIMEFRAME",
		Short: "What the store holds of a series: first and last bar, count and gaps",
		Long: "Shows the stored extent of a series (GET /api/v1/data/{symbol}/{timeframe}/range): the first\n" +
			"and last bar, how many bars, and how many of the bars the trading hours promise between\n" +
			"them are missing, in how many gaps. Holidays count as gaps: the hours are a weekly schedule.",
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cc *cobra.Command, args []string) error {
		symbol, err := seriesArgs(args, timeframe)
		if err != nil {
			return err
		}
		return apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
			var ri loader.RangeInfo
			if _, err := c.get(ctx, seriesPath(symbol, timeframe)+"/range", &ri); err != nil {
				return err
			}
			if !c.json {
				renderRange(c.stdout, c.color, ri)
			}
			return nil
		})(cc, args)
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&timeframe, "timeframe", "t", "", "bar size: 1m, 5m, 15m, 30m, 1h, 4h, 1d (or IB's spelling)")
	return cmd
}

func renderRange(w io.Writer, color bool, ri loader.RangeInfo) {
	if ri.Count == 0 {
		writeKV(w, "", []kv{{"series", ri.Symbol + " " + ri.Timeframe}, {"bars", "0: nothing stored"}})
		return
	}
	gaps := fmt.Sprintf("%d (%s of %s expected bars missing)", ri.Gaps, thousands(ri.Missing), thousands(ri.Expected))
	switch {
	case ri.GapsUnknown != "":
		gaps = "unknown: " + ri.GapsUnknown
	case ri.Gaps == 0:
		gaps = paint(color, ansiGreen, "0 (no expected bar missing)")
	default:
		gaps = paint(color, ansiYellow, gaps)
	}
	writeKV(w, "", []kv{
		{"series", ri.Symbol + " " + ri.Timeframe},
		{"first", ri.First.UTC().Format("2006-01-02 15:04:05 MST")},
		{"last", ri.Last.UTC().Format("2006-01-02 15:04:05 MST")},
		{"bars", thousands(ri.Count)},
		{"gaps", gaps},
	})
}
