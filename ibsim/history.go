package ibsim

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Bar is one historical bar as reqHistoricalData returns it.
type Bar struct {
	Time                                time.Time // bar start, UTC (for day, week and month bars the first session's open)
	Open, High, Low, Close, Volume, WAP float64
	Count                               int
}

// History generates deterministic historical bars. Prices are a pure
// function of (Seed, conId, time): a few slow sinusoids plus smoothly
// interpolated hash noise at several time grains. A bar is therefore the
// same whichever request window produced it, and bars of different sizes
// over the same period agree closely. No long-run growth is modelled: every
// instrument wanders within about ±35% of its BasePrice across its history.
type History struct{ Seed int64 }

// HistoryQuery is one reqHistoricalData request against an instrument.
type HistoryQuery struct {
	Inst                          *Instrument
	End                           time.Time // zero: now
	Now                           time.Time // injected clock; zero: time.Now()
	Duration, BarSize, WhatToShow string
	UseRTH                        bool
}

// HistoryResult is the answer: the query window as IB reports it in the
// reply's start and end fields, and the bars in time order.
type HistoryResult struct {
	Start, End time.Time
	Bars       []Bar
}

// MaxIntradayBars caps an intraday response, keeping the most recent bars.
// IB's practical limit is about 2000 bars per request, which its step-size
// table is designed around; no request the table allows exceeds this cap
// (the largest, 1 W of 3 mins on a 24-hour instrument, is about 2400 bars),
// so it only guards against unforeseen inputs. Day, week and month bars are
// not capped: IB serves decades of daily bars in one request.
const MaxIntradayBars = 3000

// what is a parsed whatToShow.
type what int

const (
	wTrades what = iota
	wMidpoint
	wBid
	wAsk
	wBidAsk
)

// label is the word IB uses for the data type inside its HMDS error texts.
func (w what) label() string {
	return [...]string{"Last", "MidPoint", "Bid", "Ask", "BidAsk"}[w]
}

// whatToShowInvalidMsg is a paraphrase; IB's exact text for an unknown
// whatToShow was not confirmed from public sources.
const whatToShowInvalidMsg = "Error validating request.-'bS' : cause - Historical data query whatToShow is invalid."

// parseWhat accepts the data types the simulator serves, in any case.
// IB's other types (ADJUSTED_LAST, HISTORICAL_VOLATILITY, ...) are refused.
func parseWhat(s string) (what, error) {
	switch strings.ToUpper(s) {
	case "TRADES":
		return wTrades, nil
	case "MIDPOINT":
		return wMidpoint, nil
	case "BID":
		return wBid, nil
	case "ASK":
		return wAsk, nil
	case "BID_ASK":
		return wBidAsk, nil
	}
	return 0, &RequestError{Code: CodeValidation, Msg: whatToShowInvalidMsg}
}

// checkAvailable refuses TRADES for FX: IDEALPRO has no trade prints, and IB
// answers 162 naming the pair on its internal FXSUBPIP venue, the data type
// and the bar length in seconds (0 for a head timestamp).
func checkAvailable(in *Instrument, w what, barSeconds int64) error {
	if w != wTrades || in.SecType != "CASH" {
		return nil
	}
	return &RequestError{Code: CodeHMDS, Msg: fmt.Sprintf("%sNo historical market data for %s/%s@FXSUBPIP %s %d",
		hmdsPrefix, in.Symbol, in.SecType, w.label(), barSeconds)}
}

// errNoData is IB's 162 for a query whose window holds no bars (a weekend,
// a window before the head timestamp).
func errNoData(in *Instrument, w what) error {
	return &RequestError{Code: CodeHMDS, Msg: fmt.Sprintf("%sHMDS query returned no data: %s@%s %s",
		hmdsPrefix, in.LocalSymbol, in.Exchange, w.label())}
}

// Bars answers a historical data query. It validates bar size (321),
// duration (321), whatToShow (321), data availability (162) and the
// step-size table (162), then returns the bars whose start lies in the
// window, every error a *RequestError.
//
// The window ends at min(End, Now). It starts per the duration: "N D" counts
// N trading sessions back (the session in progress or last closed being the
// first), which is how IB answers "1 D" on a weekend with Friday's data;
// S is elapsed seconds and W, M, Y are calendar steps in the instrument's
// zone (see Duration.Start).
//
// Intraday bars are aligned to multiples of the bar size from local
// midnight; a bar that would straddle the session open or the head
// timestamp starts there instead (a 1 hour RTH stock bar at 09:30 lasting
// 30 minutes, as IB sends it), and one straddling the session close ends
// there. Day bars cover one session, start at its open and are dated (by
// FormatBarTime) with its trading date: a FX session opening Sunday 17:15
// is Monday's bar. Week and month bars cover the trading dates of the
// calendar week (Monday to Sunday) or month and are dated by the first.
// A bar still running at the window end is cut there,
// like IB's bar in progress; every other bar is independent of the window.
// An empty window is IB's 162 "HMDS query returned no data".
func (h History) Bars(q HistoryQuery) (HistoryResult, error) {
	in := q.Inst
	if in == nil {
		return HistoryResult{}, errNoSecDef()
	}
	b, err := ParseBarSize(q.BarSize)
	if err != nil {
		return HistoryResult{}, err
	}
	d, err := ParseDuration(q.Duration)
	if err != nil {
		return HistoryResult{}, err
	}
	w, err := parseWhat(q.WhatToShow)
	if err != nil {
		return HistoryResult{}, err
	}
	if err := checkAvailable(in, w, b.Seconds()); err != nil {
		return HistoryResult{}, err
	}
	if err := CheckDurationForBarSize(d, b); err != nil {
		return HistoryResult{}, err
	}
	now := q.Now
	if now.IsZero() {
		now = time.Now()
	}
	end := q.End
	if end.IsZero() || end.After(now) {
		end = now
	}
	loc := in.Location()
	var start time.Time
	if d.Unit == 'D' {
		start = in.sessionsBack(d.N, end, q.UseRTH)
	} else {
		start = d.Start(end, loc)
	}
	g := newGen(h.Seed, in, w)
	var bars []Bar
	if b.Intraday() {
		bars = g.intradayBars(in, b, q.UseRTH, start, end, loc)
	} else {
		bars = g.calendarBars(in, b, q.UseRTH, start, end, loc)
	}
	if len(bars) == 0 {
		return HistoryResult{}, errNoData(in, w)
	}
	return HistoryResult{Start: start.UTC(), End: end.UTC(), Bars: bars}, nil
}

// sessionsBack returns the open of the n-th most recent session opening
// before end, or end.AddDate(0,0,-n) if the calendar runs out (it cannot with
// five trading days a week, but the bound keeps the loop finite).
func (in *Instrument) sessionsBack(n int, end time.Time, rth bool) time.Time {
	loc := in.Location()
	td := civilOf(end.In(loc)).add(1)
	for i, seen := 0, 0; i < 2*n+10; i++ {
		if o, _, ok := in.Sessions.session(td, rth, loc); ok && o.Before(end) {
			if seen++; seen == n {
				return o
			}
		}
		td = td.add(-1)
	}
	return end.AddDate(0, 0, -n)
}

// Interior sample points per bar for high and low: few for intraday bars,
// which are short against the price path's finest noise grains, more for
// day, week and month bars, which span its daily cycle.
const (
	intradaySamples = 4
	calendarSamples = 14
)

// noHead stands for "no head timestamp": nothing is clipped.
const noHead = math.MinInt64

// headNanos is the instrument's head as Unix nanoseconds.
func headNanos(in *Instrument) int64 {
	if in.Head.IsZero() {
		return noHead
	}
	return in.Head.UnixNano()
}

// intradayBars generates the clock-aligned bars of [start, end).
func (g *gen) intradayBars(in *Instrument, b BarSize, rth bool, start, end time.Time, loc *time.Location) []Bar {
	dur := int64(b.Dur)
	startN, endN, headN := start.UnixNano(), end.UnixNano(), headNanos(in)
	lo := max(startN, headN)
	if lo >= endN {
		return nil
	}
	capacity := (endN-lo)/dur + 2
	if capacity > MaxIntradayBars+2 {
		capacity = MaxIntradayBars + 2
	}
	bars := make([]Bar, 0, capacity)
	last := civilOf(end.In(loc)).add(1)
	for td := civilOf(time.Unix(0, lo).In(loc)); !last.before(td); td = td.add(1) {
		o, c, ok := in.Sessions.session(td, rth, loc)
		if !ok {
			continue
		}
		oN, cN := o.UnixNano(), c.UnixNano()
		from, to := max(oN, lo), min(cN, endN)
		if from >= to {
			continue
		}
		liqLo, liqHi := g.liquidRange(in, td, rth, loc)
		anchor := slotAnchor(o, dur, loc)
		for s := anchor + (from-anchor)/dur*dur; s < to; s += dur {
			bs, be := max(s, oN, headN), min(s+dur, cN, endN)
			if bs < startN || bs >= be {
				continue
			}
			factor := 1.0
			if bs < liqLo || bs >= liqHi {
				factor = g.offHours
			}
			bars = append(bars, g.bar(bs, be, bs, intradaySamples, factor))
		}
	}
	if len(bars) > MaxIntradayBars {
		bars = append(bars[:0], bars[len(bars)-MaxIntradayBars:]...)
	}
	return bars
}

// slotAnchor returns the start of the bar slot containing a session open:
// the open moved back to a multiple of the bar size in local wall-clock time
// since midnight. Bar sizes divide a day and no session spans a daylight-
// saving change, so every later slot of the session is anchor + k*dur and
// stays on the wall-clock grid, even past midnight and on the Sunday the
// clocks change (where counting from that day's midnight would be an hour off).
func slotAnchor(open time.Time, dur int64, loc *time.Location) int64 {
	lt := open.In(loc)
	sod := int64(lt.Hour()*3600+lt.Minute()*60+lt.Second())*1e9 + int64(lt.Nanosecond())
	return open.UnixNano() - sod%dur
}

// liquidRange is the liquid part of trading date td, where volume is full;
// the whole day when the query is RTH-only or the instrument has no
// separate regular hours.
func (g *gen) liquidRange(in *Instrument, td civil, rth bool, loc *time.Location) (int64, int64) {
	if rth || in.Sessions == ForexSessions {
		return math.MinInt64, math.MaxInt64
	}
	o, c, _ := in.Sessions.session(td, true, loc)
	return o.UnixNano(), c.UnixNano()
}

// periodStart is the first date of the calendar period of a day, week or
// month bar containing d.
func periodStart(d civil, b BarSize) civil {
	switch {
	case b.Months > 0:
		return civil{d.y, d.m, 1}
	case b.Days == 7:
		return d.add(-((int(d.weekday()) + 6) % 7)) // back to Monday
	}
	return d
}

// periodNext is the first date of the period after the one starting at p.
func periodNext(p civil, b BarSize) civil {
	switch {
	case b.Months > 0:
		y, m, _ := time.Date(p.y, p.m+1, 1, 12, 0, 0, 0, time.UTC).Date()
		return civil{y, m, 1}
	case b.Days == 7:
		return p.add(7)
	}
	return p.add(1)
}

// periodSpan returns the data span of the period starting at p: from the
// open of its first trading date with data after the head to the close of
// its last trading date.
func periodSpan(in *Instrument, p civil, b BarSize, rth bool, loc *time.Location) (bs, be int64, ok bool) {
	headN := headNanos(in)
	next := periodNext(p, b)
	for td := p; td.before(next); td = td.add(1) {
		o, c, has := in.Sessions.session(td, rth, loc)
		if !has || c.UnixNano() <= headN {
			continue
		}
		if !ok {
			bs, ok = max(o.UnixNano(), headN), true
		}
		be = c.UnixNano()
	}
	return bs, be, ok
}

// tradingDate is the trading date of the session containing t, or t's local
// date outside sessions. It names day, week and month bars: a FX or futures
// session opening on Sunday evening trades for Monday.
func (in *Instrument) tradingDate(t time.Time, loc *time.Location) civil {
	if td, _, _, ok := in.Sessions.sessionAt(t, false, loc); ok {
		return td
	}
	return civilOf(t.In(loc))
}

// calendarBars generates day, week or month bars whose start lies in [start, end).
func (g *gen) calendarBars(in *Instrument, b BarSize, rth bool, start, end time.Time, loc *time.Location) []Bar {
	startN, endN := start.UnixNano(), end.UnixNano()
	lo := max(startN, headNanos(in))
	if lo >= endN {
		return nil
	}
	// A period may open the evening before its first trading date (FX,
	// futures), so begin with the period of the day before.
	p := periodStart(civilOf(time.Unix(0, lo).In(loc)).add(-1), b)
	last := civilOf(end.In(loc)).add(1)
	days := (endN-lo)/(86400*1e9) + 2
	switch {
	case b.Months > 0:
		days = days/28 + 2
	case b.Days == 7:
		days = days/7 + 2
	}
	bars := make([]Bar, 0, days)
	for ; !last.before(p); p = periodNext(p, b) {
		bs, be, ok := periodSpan(in, p, b, rth, loc)
		if !ok || bs < startN || bs >= endN {
			continue
		}
		be = min(be, endN)
		if bs >= be {
			continue
		}
		bars = append(bars, g.bar(bs, be, bs, calendarSamples, 1))
	}
	return bars
}

// Bar returns the single bar of size b starting at start (a Bar.Time from
// Bars) as Bars produces it with UseRTH false and a window that does not
// cut it. For day, week and month bars any time in the first session of the
// period designates the bar. An intraday start outside any session yields a
// bar over [start, start+size). An unknown whatToShow yields the zero Bar.
func (h History) Bar(in *Instrument, b BarSize, whatToShow string, start time.Time) Bar {
	w, err := parseWhat(whatToShow)
	if err != nil || in == nil {
		return Bar{}
	}
	return newGen(h.Seed, in, w).barAt(in, b, false, start)
}

// barAt is Bar for either session set.
func (g *gen) barAt(in *Instrument, b BarSize, rth bool, start time.Time) Bar {
	loc := in.Location()
	sN := start.UnixNano()
	if !b.Intraday() {
		bs, be, ok := periodSpan(in, periodStart(in.tradingDate(start, loc), b), b, rth, loc)
		if !ok {
			return Bar{}
		}
		return g.bar(bs, be, bs, calendarSamples, 1)
	}
	dur := int64(b.Dur)
	td, o, c, ok := in.Sessions.sessionAt(start, rth, loc)
	if !ok {
		return g.bar(sN, sN+dur, sN, intradaySamples, 1)
	}
	anchor := slotAnchor(o, dur, loc)
	slot := anchor + (sN-anchor)/dur*dur
	factor := 1.0
	if liqLo, liqHi := g.liquidRange(in, td, rth, loc); sN < liqLo || sN >= liqHi {
		factor = g.offHours
	}
	return g.bar(sN, min(slot+dur, c.UnixNano()), sN, intradaySamples, factor)
}

// HeadTimestamp answers reqHeadTimestamp: the instrument's earliest data,
// moved to the next regular-hours open when useRTH is set (a no-op for
// stocks, whose head is a 09:30 open). FX has no TRADES (162).
func (h History) HeadTimestamp(in *Instrument, whatToShow string, useRTH bool) (time.Time, error) {
	if in == nil {
		return time.Time{}, errNoSecDef()
	}
	w, err := parseWhat(whatToShow)
	if err != nil {
		return time.Time{}, err
	}
	if err := checkAvailable(in, w, 0); err != nil {
		return time.Time{}, err
	}
	if in.Head.IsZero() {
		return time.Time{}, errNoData(in, w)
	}
	head := in.Head
	if useRTH {
		head = in.nextOpen(head, true)
	}
	return head.UTC(), nil
}

// endDateTimeInvalid is IB's 321 text for an unparsable endDateTime, quoted
// from an older gateway (its field tag may differ today).
func endDateTimeInvalid(s string) error {
	return &RequestError{Code: CodeValidation, Msg: "Error validating request.-'bS' : cause - Historical data query end date/time string [" +
		s + "] is invalid.  Format is 'YYYYMMDD{SPACE}hh:mm:ss[{SPACE}TMZ]'."}
}

// zoneAliases maps the abbreviations IB accepts in endDateTime to the zones
// it means: "EST" is New York time all year (IB rejects "EDT"), not the
// fixed UTC-5 the IANA database calls EST.
var zoneAliases = map[string]string{
	"EST": "US/Eastern", "CST": "US/Central", "MST": "US/Mountain", "PST": "US/Pacific",
	"GMT": "UTC", "UTC": "UTC", "JST": "Asia/Tokyo", "HKT": "Asia/Hong_Kong",
}

// ParseEndDateTime accepts IB's endDateTime forms: "" (now),
// "yyyyMMdd HH:mm:ss" (in loc, the instrument's zone),
// "yyyyMMdd HH:mm:ss <zone>" with an IANA or IB zone id ("US/Eastern",
// "Europe/London", "EST", "GMT"), and "yyyyMMdd-HH:mm:ss" (UTC). Anything
// else is IB's 321.
func ParseEndDateTime(s string, loc *time.Location, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return now, nil
	}
	if loc == nil {
		loc = time.UTC
	}
	if len(s) == 17 && s[8] == '-' {
		t, err := time.ParseInLocation("20060102-15:04:05", s, time.UTC)
		if err != nil {
			return time.Time{}, endDateTimeInvalid(s)
		}
		return t, nil
	}
	if len(s) < 17 || s[8] != ' ' {
		return time.Time{}, endDateTimeInvalid(s)
	}
	rest := strings.TrimLeft(s[8:], " ") // older clients send two spaces
	if len(rest) < 8 || len(rest) > 8 && rest[8] != ' ' {
		return time.Time{}, endDateTimeInvalid(s)
	}
	if zone := strings.TrimSpace(rest[8:]); zone != "" {
		if alias, ok := zoneAliases[strings.ToUpper(zone)]; ok {
			zone = alias
		}
		z, err := loadZone(zone)
		if err != nil || zone == "Local" {
			return time.Time{}, endDateTimeInvalid(s)
		}
		loc = z
	}
	t, err := time.ParseInLocation("20060102 15:04:05", s[:8]+" "+rest[:8], loc)
	if err != nil {
		return time.Time{}, endDateTimeInvalid(s)
	}
	return t, nil
}

// FormatBarTime renders a bar's date field. Day, week and month bars are
// "yyyyMMdd", the trading date of the session t opens, whatever formatDate
// says, as IB sends them. Intraday bars are "yyyyMMdd HH:mm:ss <zone id>" in the instrument's
// zone for formatDate 1 (and any value other than 2), epoch seconds for 2.
func FormatBarTime(t time.Time, b BarSize, formatDate int, in *Instrument) string {
	loc := in.Location()
	if !b.Intraday() {
		return in.tradingDate(t, loc).ymd()
	}
	if formatDate == 2 {
		return strconv.FormatInt(t.Unix(), 10)
	}
	zone := in.TimeZoneID
	if zone == "" {
		zone = loc.String()
	}
	return t.In(loc).Format("20060102 15:04:05") + " " + zone
}

// FormatHeadTimestamp renders reqHeadTimestamp's answer: "yyyyMMdd-HH:mm:ss"
// in UTC for formatDate 1 (and any value other than 2), epoch seconds for 2.
// The instrument is accepted for symmetry with FormatBarTime; IB's head
// timestamp text carries no zone.
func FormatHeadTimestamp(t time.Time, formatDate int, in *Instrument) string {
	_ = in
	if formatDate == 2 {
		return strconv.FormatInt(t.Unix(), 10)
	}
	return t.UTC().Format("20060102-15:04:05")
}

// gen computes prices and bars for one (seed, instrument, whatToShow).
type gen struct {
	w          what
	base, half float64 // price level and half spread
	jitter     float64 // amplitude of trade prints around the midpoint
	phase      [3]float64
	key        [8]uint64 // hash keys: 0-3 noise levels, 4 trade jitter, 5-6 high/low widening, 7 volume
	step       float64   // rounding grid of trade, bid and ask prices (MinTick)
	pow        float64   // 10^Digits
	volRate    float64   // traded units per second in liquid hours
	offHours   float64   // volume factor outside liquid hours
	tradeSize  float64   // average units per trade, for Count

	// Caches (exact, so results do not depend on evaluation order); a gen
	// serves one request on one goroutine.
	knot             [4]int64 // noise knot index per level
	knotA, knotB     [4]float64
	stepCached       float64 // sample spacing stepSin/stepCos belong to
	stepSin, stepCos [3]float64
}

// Periods of the deterministic cycles, chosen incommensurate so their sum
// never visibly repeats: about 4 years, 47 days and one day.
const (
	omega0 = 2 * math.Pi / (4*365.25*86400 + 12345)
	omega1 = 2 * math.Pi / (47*86400 - 1234)
	omega2 = 2 * math.Pi / (86400 + 321)
)

// Noise grains (seconds) and amplitudes (fractions of the price level).
var noiseLevels = [4]struct{ inv, amp float64 }{
	{1.0 / 14400, 0.012},
	{1.0 / 600, 0.003},
	{1.0 / 15, 0.0007},
	{1.0, 0.00012},
}

// mix is the SplitMix64 finaliser: a cheap, well-distributed 64-bit hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// unit hashes (key, k) to [0, 1).
func unit(key uint64, k int64) float64 {
	return float64(mix(key^uint64(k)*0x9e3779b97f4a7c15)>>11) / (1 << 53)
}

// signed hashes (key, k) to [-1, 1).
func signed(key uint64, k int64) float64 { return 2*unit(key, k) - 1 }

// newGen derives the generator of an instrument from the seed and conId only,
// so all data types and bar sizes share one underlying price path.
func newGen(seed int64, in *Instrument, w what) *gen {
	root := mix(uint64(seed)*0xd6e8feb86659fd93 ^ mix(uint64(in.ConID)+0x632be59bd9b4e019))
	g := &gen{w: w, base: in.BasePrice, half: in.Spread / 2, jitter: in.Spread / 2, pow: math.Pow10(in.Digits)}
	for i := range g.key {
		g.key[i] = mix(root + uint64(i+1)*0x9e3779b97f4a7c15)
	}
	for i := range g.phase {
		g.phase[i] = 2 * math.Pi * unit(root, int64(100+i))
	}
	for i := range g.knot {
		g.knot[i] = math.MinInt64 // no knot cached yet
	}
	g.stepCached = math.NaN() // equal to no step
	g.step = in.MinTick
	if g.step <= 0 {
		g.step = 1 / g.pow
	}
	g.volRate, g.offHours, g.tradeSize = 1, 1, 1
	switch in.SecType {
	case "STK":
		g.volRate, g.offHours, g.tradeSize = 300+2700*unit(root, 7), 0.06, 150
	case "FUT":
		g.volRate, g.offHours, g.tradeSize = 5+25*unit(root, 8), 0.15, 3
	}
	return g
}

// waves is the phase of the three cycles along a bar's evenly spaced
// samples: sine and cosine at the current sample, and of the step between
// samples, so each next sample is a rotation rather than three math.Sin
// calls. This is what keeps a 2000-bar response well under a millisecond.
type waves struct {
	sin, cos, stepSin, stepCos [3]float64
}

// amplitudes of the three cycles, as fractions of the price level.
var waveAmp = [3]float64{0.22, 0.05, 0.004}

// start sets the waves at ts with a sample spacing of step seconds; the
// step's rotation is cached since most bars of a response share a length.
func (g *gen) startWaves(wv *waves, ts, step float64) {
	omegas := [3]float64{omega0, omega1, omega2}
	for i, om := range omegas {
		wv.sin[i], wv.cos[i] = math.Sincos(ts*om + g.phase[i])
	}
	if step != g.stepCached {
		for i, om := range omegas {
			g.stepSin[i], g.stepCos[i] = math.Sincos(step * om)
		}
		g.stepCached = step
	}
	wv.stepSin, wv.stepCos = g.stepSin, g.stepCos
}

// advance rotates the waves one sample forward.
func (wv *waves) advance() {
	for i := range wv.sin {
		s, c := wv.sin[i], wv.cos[i]
		wv.sin[i] = s*wv.stepCos[i] + c*wv.stepSin[i]
		wv.cos[i] = c*wv.stepCos[i] - s*wv.stepSin[i]
	}
}

// mid is the midpoint price at ts (Unix seconds) given the waves at ts:
// the cycles plus value noise, linear between hashed knots at each grain.
// Knot values are cached per level, which is exact, as consecutive samples
// mostly fall between the same knots.
func (g *gen) mid(ts float64, wv *waves) float64 {
	x := waveAmp[0]*wv.sin[0] + waveAmp[1]*wv.sin[1] + waveAmp[2]*wv.sin[2]
	for i := range noiseLevels {
		f := ts * noiseLevels[i].inv
		k := int64(f) // floor for the positive times of any real query
		if f < 0 {
			k = int64(math.Floor(f))
		}
		if k != g.knot[i] {
			g.knot[i], g.knotA[i], g.knotB[i] = k, signed(g.key[i], k), signed(g.key[i], k+1)
		}
		a, b := g.knotA[i], g.knotB[i]
		x += noiseLevels[i].amp * (a + (b-a)*(f-float64(k)))
	}
	return g.base * (1 + x)
}

// price is the price of the generator's data type at ts; for BID_ASK, the
// midpoint (the bar combines bid and ask itself).
func (g *gen) price(ts float64, wv *waves) float64 {
	m := g.mid(ts, wv)
	switch g.w {
	case wTrades:
		return m + g.jitter*signed(g.key[4], int64(math.Floor(ts)))
	case wBid:
		return m - g.half
	case wAsk:
		return m + g.half
	}
	return m
}

// round puts x on the grid of step, then cleans it to Digits decimals.
func (g *gen) round(x, step float64) float64 {
	return math.Round(math.Round(x/step)*step*g.pow) / g.pow
}

// bar computes the bar over [bs, be] (Unix nanoseconds) stamped at stamp:
// open = price(bs), close = price(be), high and low the extremes over n
// evenly spaced interior samples, widened by a hash-based amount growing
// with the bar's length. For BID_ASK, following IB's definition, open is
// the time-average bid, high the highest ask, low the lowest bid and close
// the time-average ask. Volume, WAP and Count are -1 except for TRADES, as
// IB sends them for quote-based data.
func (g *gen) bar(bs, be, stamp int64, n int, volFactor float64) Bar {
	s0 := float64(bs/1e9) + float64(bs%1e9)/1e9
	s1 := float64(be/1e9) + float64(be%1e9)/1e9
	length := s1 - s0
	step := length / float64(n+1)
	var wv waves
	g.startWaves(&wv, s0, step)
	first := g.price(s0, &wv)
	hi, lo, sum, lastP := first, first, first, first
	for j := 1; j <= n+1; j++ {
		wv.advance()
		ts := s0 + step*float64(j)
		if j == n+1 {
			ts = s1
		}
		lastP = g.price(ts, &wv)
		hi, lo, sum = max(hi, lastP), min(lo, lastP), sum+lastP
	}
	avg := sum / float64(n+2)
	widen := g.base * 1e-4 * math.Sqrt(max(length, 1)/60)
	widen = min(widen, g.base*0.01)
	sec := stamp / 1e9
	hi += widen * unit(g.key[5], sec)
	lo -= widen * unit(g.key[6], sec)

	var o, h, l, c float64
	switch g.w {
	case wBidAsk:
		o = math.Round((avg-g.half)*g.pow) / g.pow
		c = math.Round((avg+g.half)*g.pow) / g.pow
		h, l = g.round(hi+g.half, g.step), g.round(lo-g.half, g.step)
	case wMidpoint:
		o, h, l, c = g.round(first, g.step/2), g.round(hi, g.step/2), g.round(lo, g.step/2), g.round(lastP, g.step/2)
	default:
		o, h, l, c = g.round(first, g.step), g.round(hi, g.step), g.round(lo, g.step), g.round(lastP, g.step)
	}
	h = max(h, o, c)
	l = min(l, o, c)
	out := Bar{Time: time.Unix(0, stamp).UTC(), Open: o, High: h, Low: l, Close: c, Volume: -1, WAP: -1, Count: -1}
	if g.w == wTrades {
		vol := math.Round(g.volRate * length * volFactor * (0.4 + 1.2*unit(g.key[7], sec)))
		count := int(math.Round(vol / g.tradeSize))
		if vol > 0 && count < 1 {
			count = 1
		}
		wap := math.Round(min(max(avg, l), h)*g.pow*1000) / (g.pow * 1000)
		out.Volume, out.WAP, out.Count = vol, wap, count
	}
	return out
}
