package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ktrdr/ktrdr/internal/service"
)

// colorEnabled reports whether w is a terminal that wants colour: a
// character device, with NO_COLOR unset (https://no-color.org) and a TERM
// that is not "dumb". Pipes and files get plain text, so scripts that grep
// the output never see escape codes.
func colorEnabled(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ANSI colours; each code has the same length, so a coloured column stays
// aligned whichever colour a cell gets.
const (
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiReset  = "\x1b[0m"
)

// paint colours s when colour is on.
func paint(on bool, code, s string) string {
	if !on || code == "" {
		return s
	}
	return code + s + ansiReset
}

// statusColor maps the words the API uses for states to traffic lights.
func statusColor(s string) string {
	switch strings.ToLower(s) {
	case service.Working, "closed", "yes", "ok", "healthy":
		return ansiGreen
	case service.Degraded, "half-open", "half_open":
		return ansiYellow
	case service.Failing, "open", "no", "failed", "unhealthy":
		return ansiRed
	}
	return ""
}

var ansiPattern = regexp.MustCompile("\x1b\\[[0-9;]*m")

// width is the visible width of s: runes, escape codes excluded.
func width(s string) int { return utf8.RuneCountInString(ansiPattern.ReplaceAllString(s, "")) }

// pad right-pads s to n visible columns.
func pad(s string, n int) string {
	if w := width(s); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s
}

// kv is one line of a key-value block.
type kv struct{ k, v string }

// writeKV writes aligned "key  value" lines; empty values are skipped, so
// callers can list optional fields unconditionally.
func writeKV(w io.Writer, indent string, rows []kv) {
	n := 0
	for _, r := range rows {
		if r.v != "" && len(r.k) > n {
			n = len(r.k)
		}
	}
	for _, r := range rows {
		if r.v != "" {
			fmt.Fprintf(w, "%s%s  %s\n", indent, pad(r.k, n), r.v)
		}
	}
}

// writeTable writes a header and rows in aligned columns; the last column
// is not padded so long texts do not leave trailing blanks.
func writeTable(w io.Writer, indent string, head []string, rows [][]string) {
	widths := make([]int, len(head))
	for i, h := range head {
		widths[i] = width(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(widths) && width(c) > widths[i] {
				widths[i] = width(c)
			}
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString(indent)
		for i, c := range cells {
			if i == len(cells)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(pad(c, widths[i]))
			b.WriteString("  ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(head)
	for _, r := range rows {
		line(r)
	}
}

// yesNo renders a boolean, coloured good or bad.
func yesNo(color, b bool) string {
	if b {
		return paint(color, ansiGreen, "yes")
	}
	return paint(color, ansiRed, "no")
}

// okFailed renders a check's outcome.
func okFailed(color, b bool) string {
	if b {
		return paint(color, ansiGreen, "ok")
	}
	return paint(color, ansiRed, "failed")
}

// msText renders milliseconds with a precision that suits their size.
func msText(ms float64) string {
	if ms >= 100 {
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

// ago renders how long ago t was, coarser as it grows.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < -time.Second:
		return "in the future: clocks differ"
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return d.Round(100*time.Millisecond).String() + " ago"
	default:
		return d.Round(time.Second).String() + " ago"
	}
}

// timeText renders a time in the local zone with its age; nil is "never".
func timeText(now time.Time, t *time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s)", t.Local().Format("2006-01-02 15:04:05 MST"), ago(now, *t))
}

// seconds renders a count of seconds as a duration.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

// ints renders client ids; none is "-".
func ints(ids []int) string {
	if len(ids) == 0 {
		return "-"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return strings.Join(s, ",")
}

// orDash renders an empty string as "-" inside tables.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func renderHealth(w io.Writer, color bool, now time.Time, h service.Health) {
	checked := timeText(now, &h.CheckedAt)
	if h.Cached {
		checked += ", cached"
	}
	rows := []kv{
		{"healthy", yesNo(color, h.Healthy)},
		{"connection", okFailed(color, h.ConnectionOK)},
		{"data request", okFailed(color, h.DataFetchingOK)},
		{"latency", msText(h.LatencyMS)},
	}
	if !h.Healthy {
		rows = append(rows, kv{"stage", orDash(h.Stage)})
	}
	rows = append(rows, kv{"error", h.ErrorMessage})
	if h.Degraded {
		rows = append(rows, kv{"degraded", paint(color, ansiYellow, "yes: the gateway reported lost connectivity to IB (1100)")})
	}
	rows = append(rows, kv{"last success", timeText(now, h.LastSuccessfulRequest)}, kv{"checked", checked})
	writeKV(w, "", rows)
}

// maxEventsShown keeps the status table to a screen.
const maxEventsShown = 5

func renderStatus(w io.Writer, color bool, now time.Time, s service.Status) {
	g, p := s.Gateway, s.Pool
	gateway := fmt.Sprintf("%s:%d", g.Host, g.Port)
	if g.ServerVersion != 0 {
		gateway += fmt.Sprintf(" (server version %d)", g.ServerVersion)
	}
	accounts := "none seen yet"
	if len(g.Accounts) > 0 {
		accounts = fmt.Sprintf("%s (%s)", strings.Join(g.Accounts, ","), g.AccountType)
		if g.AccountType == "live" {
			accounts = paint(color, ansiYellow, accounts)
		}
	}
	pool := fmt.Sprintf("%d open: %d idle, %d in use, %d connecting, %d waiting (max %d, min idle %d)",
		p.Total, p.Idle, p.InUse, p.Connecting, p.Waiting, p.MaxConns, p.MinIdle)
	ids := fmt.Sprintf("in use %s, resting %s, lowest free %d", ints(s.ClientIDsInUse), ints(p.ClientIDsResting), p.LowestFreeClientID)
	b := s.Breaker
	breaker := fmt.Sprintf("%s (%d/%d consecutive failures, %d transitions)",
		paint(color, statusColor(b.State), b.State), b.ConsecutiveFailures, b.FailureThreshold, b.Transitions)
	cm := s.Connection
	connects := fmt.Sprintf("%d (%d attempts, %d failures, %d client-id conflicts)",
		cm.Connects, cm.ConnectAttempts, cm.ConnectFailures, cm.ClientIDConflicts)
	validation := fmt.Sprintf("%d (%d failed, %d bypassed; p50 %s, p99 %s; %d silent detected)",
		p.Validations, p.ValidationFailures, p.ValidationsBypassed, msText(p.ValidationP50MS), msText(p.ValidationP99MS), p.SilentDetected)
	d := s.Data
	requests := fmt.Sprintf("%d (%d failed), last success %s", d.Requests, d.RequestFailures, timeText(now, d.LastSuccess))
	lastHealth := ""
	if h := s.Health; h != nil {
		verdict := paint(color, ansiGreen, "healthy")
		if !h.Healthy {
			verdict = paint(color, ansiRed, "unhealthy")
		}
		lastHealth = fmt.Sprintf("%s, %s, %s", verdict, msText(h.LatencyMS), ago(now, h.CheckedAt))
		if h.ErrorMessage != "" {
			lastHealth += ": " + h.ErrorMessage
		}
	}
	rows := []kv{
		{"gateway", gateway},
		{"accounts", accounts},
		{"connected since", timeText(now, g.ConnectedSince)},
		{"pool", pool},
		{"client ids", ids},
		{"breaker", breaker},
		{"connects", connects},
		{"validations", validation},
		{"requests", requests},
		{"last error", d.LastError},
		{"last health", lastHealth},
	}
	if s.Connection.Degraded {
		rows = append(rows, kv{"degraded", paint(color, ansiYellow, "yes: the gateway reported lost connectivity to IB (1100)")})
	}
	if len(p.Leaks) > 0 {
		var l []string
		for _, k := range p.Leaks {
			l = append(l, fmt.Sprintf("client %d %q held %.0fs", k.ClientID, k.Label, k.HeldSeconds))
		}
		rows = append(rows, kv{"leaks", paint(color, ansiYellow, strings.Join(l, "; "))})
	}
	rows = append(rows, kv{"uptime", seconds(s.Uptime)})
	if len(s.Events) == 0 {
		rows = append(rows, kv{"last events", "none"})
	}
	writeKV(w, "", rows)
	if len(s.Events) == 0 {
		return
	}
	events := s.Events
	if len(events) > maxEventsShown {
		events = events[len(events)-maxEventsShown:]
	}
	fmt.Fprintf(w, "last events (%d of %d):\n", len(events), len(s.Events))
	var tr [][]string
	for _, e := range events {
		tr = append(tr, []string{e.Time.Local().Format("15:04:05.000"), strconv.Itoa(e.Code), strconv.Itoa(e.ClientID), e.Text})
	}
	writeTable(w, "  ", []string{"TIME", "CODE", "CLIENT", "TEXT"}, tr)
}

// phaseView is one resilience phase as the API sends it.
type phaseView struct {
	Key      string   `json:"-"`
	Status   string   `json:"status"`
	Reason   string   `json:"reason"`
	Evidence []string `json:"evidence"`
}

// title turns "phase_2_garbage_collection" into "2 garbage collection".
func (p phaseView) title() string {
	return strings.ReplaceAll(strings.TrimPrefix(p.Key, "phase_"), "_", " ")
}

// resilienceView is the decoded resilience answer: the phases are
// top-level keys beside the score, so they are collected separately.
type resilienceView struct {
	service.Resilience
	Phases []phaseView
}

func renderResilience(w io.Writer, color bool, r resilienceView) {
	n := 0
	for _, p := range r.Phases {
		n = max(n, width(p.title()))
	}
	sw := len("degraded")
	for _, p := range r.Phases {
		sw = max(sw, width(p.Status))
	}
	fmt.Fprintf(w, "%s  %s  %s\n", pad("PHASE", n), pad("STATUS", sw), "REASON")
	for _, p := range r.Phases {
		status := paint(color, statusColor(p.Status), pad(p.Status, sw))
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("%s  %s  %s", pad(p.title(), n), status, p.Reason), " "))
		for _, e := range p.Evidence {
			fmt.Fprintf(w, "    - %s\n", e)
		}
	}
	score := fmt.Sprintf("%.1f/100", r.Score)
	switch {
	case r.Score >= 75:
		score = paint(color, ansiGreen, score)
	case r.Score >= 50:
		score = paint(color, ansiYellow, score)
	default:
		score = paint(color, ansiRed, score)
	}
	ph := r.PoolHealth
	writeKV(w, "", []kv{
		{"score", score},
		{"formula", r.ScoreFormula},
		{"pool", fmt.Sprintf("%d connections, %d healthy, up %s", ph.TotalConnections, ph.HealthyConnections,
			seconds(ph.PoolUptimeSeconds))},
	})
}

func renderConfig(w io.Writer, g service.GatewayConfig) {
	writeKV(w, "", []kv{
		{"host", g.Host},
		{"port", strconv.Itoa(g.Port)},
		{"client id base", strconv.Itoa(g.ClientIDBase)},
	})
}

func renderConfigChange(w io.Writer, color bool, c service.ConfigChange) {
	row := func(name, before, after string) []string {
		if before == after {
			return []string{name, before, "(unchanged)"}
		}
		return []string{name, before, paint(color, ansiYellow, after)}
	}
	writeTable(w, "", []string{"SETTING", "PREVIOUS", "CURRENT"}, [][]string{
		row("host", c.Previous.Host, c.Current.Host),
		row("port", strconv.Itoa(c.Previous.Port), strconv.Itoa(c.Current.Port)),
		row("client id base", strconv.Itoa(c.Previous.ClientIDBase), strconv.Itoa(c.Current.ClientIDBase)),
	})
	reconnected := "not needed (nothing changed)"
	if c.Changed {
		reconnected = yesNo(color, c.Reconnected)
		if c.Error != "" {
			reconnected += ": " + c.Error
		}
	}
	writeKV(w, "", []kv{{"changed", yesNo(color, c.Changed)}, {"reconnected", reconnected}})
}

func renderCleanup(w io.Writer, c service.CleanupResult) {
	mode := "idle connections only"
	if c.Force {
		mode = "all connections (force)"
	}
	counts := func(p service.PoolStats) string {
		return fmt.Sprintf("%d open: %d idle, %d in use", p.Total, p.Idle, p.InUse)
	}
	writeKV(w, "", []kv{
		{"closed", fmt.Sprintf("%d: %s", c.Closed, mode)},
		{"client ids", ints(c.ClosedClientIDs)},
		{"before", counts(c.Before)},
		{"after", counts(c.After)},
	})
}

func renderBreakers(w io.Writer, color bool, now time.Time, bs []service.BreakerInfo) {
	var rows [][]string
	for _, b := range bs {
		last := "never"
		if b.LastTransition != nil {
			last = fmt.Sprintf("%s -> %s, %s", b.LastFrom, b.LastTo, ago(now, *b.LastTransition))
		}
		rows = append(rows, []string{b.Name, paint(color, statusColor(b.State), b.State),
			fmt.Sprintf("%d/%d", b.ConsecutiveFailures, b.FailureThreshold), strconv.FormatInt(b.Transitions, 10),
			time.Duration(b.ProbeIntervalMS * float64(time.Millisecond)).String(), last})
	}
	writeTable(w, "", []string{"NAME", "STATE", "FAILURES", "TRANSITIONS", "PROBE EVERY", "LAST CHANGE"}, rows)
}

func renderInstrument(w io.Writer, color bool, now time.Time, in service.Instrument) {
	exchange := in.Exchange
	if in.PrimaryExchange != "" && in.PrimaryExchange != in.Exchange {
		exchange += " (primary " + in.PrimaryExchange + ")"
	}
	head := "unknown"
	if in.HeadTimestamp != nil {
		head = in.HeadTimestamp.UTC().Format("2006-01-02 15:04:05 MST")
	}
	cached := paint(color, ansiGreen, "no: asked the gateway")
	if in.Cached {
		cached = "yes: from the cache, discovered " + timeText(now, &in.DiscoveredAt)
	}
	writeKV(w, "", []kv{
		{"symbol", in.Symbol},
		{"type", fmt.Sprintf("%s (%s)", in.Type, in.SecType)},
		{"ib symbol", in.IBSymbol},
		{"local symbol", in.LocalSymbol},
		{"exchange", exchange},
		{"currency", in.Currency},
		{"conId", strconv.FormatInt(in.ConID, 10)},
		{"description", in.Description},
		{"expiry", in.Expiry},
		{"multiplier", in.Multiplier},
		{"min tick", strconv.FormatFloat(in.MinTick, 'g', -1, 64)},
		{"time zone", in.TimeZone},
		{"head timestamp", head},
		{"cached", cached},
		{"time", msText(in.DiscoveryTimeMS)},
	})
}

func renderInstruments(w io.Writer, now time.Time, ins []service.Instrument) {
	if len(ins) == 0 {
		fmt.Fprintln(w, "no symbols discovered yet (ktrdr symbols discover SYMBOL)")
		return
	}
	var rows [][]string
	for _, in := range ins {
		rows = append(rows, []string{in.Symbol, in.Type, in.Exchange, in.Currency, strconv.FormatInt(in.ConID, 10),
			ago(now, in.DiscoveredAt), orDash(in.Description)})
	}
	writeTable(w, "", []string{"SYMBOL", "TYPE", "EXCHANGE", "CURRENCY", "CONID", "DISCOVERED", "DESCRIPTION"}, rows)
}
