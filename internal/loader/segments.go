package loader

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ktrdr/ktrdr/internal/pacing"
	"github.com/ktrdr/ktrdr/internal/store"
)

// Timeframe is a bar size: the name bars are stored under and IB's
// spelling of it.
type Timeframe struct {
	Name    string        // the store's key, e.g. "1h"
	BarSize string        // IB's bar size setting, e.g. "1 hour"
	Bar     time.Duration // bar length; 24h for daily bars
	Daily   bool
	// maxS is the longest request in seconds ("N S") IB's step-size table
	// allows, at most a day; week and month say whether "1 W" and "1 M"
	// are allowed too.
	maxS        int
	week, month bool
}

// timeframes lists the supported bar sizes. IB's step-size table (TWS API
// "Historical Data Limitations") bounds each request: 1 secs bars at most
// 1800 S, 5 secs 3600 S, 10-15 secs 14400 S, 30 secs 28800 S, 1-2 mins a
// day or two, 3-20 mins a week, 30 mins-8 hours a month. Seconds are kept
// to a day at most, because gateways refuse longer "S" durations; 2 mins
// bars are therefore fetched a day at a time, not two. Week and month bars
// are not supported: their calendar periods need their own gap rules.
var timeframes = []Timeframe{
	{Name: "1s", BarSize: "1 secs", Bar: time.Second, maxS: 1800},
	{Name: "5s", BarSize: "5 secs", Bar: 5 * time.Second, maxS: 3600},
	{Name: "10s", BarSize: "10 secs", Bar: 10 * time.Second, maxS: 14400},
	{Name: "15s", BarSize: "15 secs", Bar: 15 * time.Second, maxS: 14400},
	{Name: "30s", BarSize: "30 secs", Bar: 30 * time.Second, maxS: 28800},
	{Name: "1m", BarSize: "1 min", Bar: time.Minute, maxS: 86400},
	{Name: "2m", BarSize: "2 mins", Bar: 2 * time.Minute, maxS: 86400},
	{Name: "3m", BarSize: "3 mins", Bar: 3 * time.Minute, maxS: 86400, week: true},
	{Name: "5m", BarSize: "5 mins", Bar: 5 * time.Minute, maxS: 86400, week: true},
	{Name: "10m", BarSize: "10 mins", Bar: 10 * time.Minute, maxS: 86400, week: true},
	{Name: "15m", BarSize: "15 mins", Bar: 15 * time.Minute, maxS: 86400, week: true},
	{Name: "20m", BarSize: "20 mins", Bar: 20 * time.Minute, maxS: 86400, week: true},
	{Name: "30m", BarSize: "30 mins", Bar: 30 * time.Minute, maxS: 86400, week: true, month: true},
	{Name: "1h", BarSize: "1 hour", Bar: time.Hour, maxS: 86400, week: true, month: true},
	{Name: "2h", BarSize: "2 hours", Bar: 2 * time.Hour, maxS: 86400, week: true, month: true},
	{Name: "3h", BarSize: "3 hours", Bar: 3 * time.Hour, maxS: 86400, week: true, month: true},
	{Name: "4h", BarSize: "4 hours", Bar: 4 * time.Hour, maxS: 86400, week: true, month: true},
	{Name: "8h", BarSize: "8 hours", Bar: 8 * time.Hour, maxS: 86400, week: true, month: true},
	{Name: "1d", BarSize: "1 day", Bar: 24 * time.Hour, Daily: true},
}

// ParseTimeframe accepts the short names (1m, 5m, 15m, 30m, 1h, 4h, 1d and
// the other sizes above: 30s, 2h...) and IB's own spellings ("1 min",
// "5 mins", "1 hour", "1 day", singular or plural, any case). "1M" is
// refused as ambiguous (month or minute).
func ParseTimeframe(s string) (Timeframe, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return Timeframe{}, fmt.Errorf("timeframe is required: one of %s", TimeframeNames())
	}
	if strings.Contains(in, "M") && !strings.ContainsAny(strings.ToLower(in), "io") {
		return Timeframe{}, fmt.Errorf("timeframe %q is ambiguous (month or minute?): write 1m for minutes; month bars are not supported", s)
	}
	low := strings.ToLower(in)
	for _, tf := range timeframes {
		if low == tf.Name {
			return tf, nil
		}
	}
	// IB spellings: "<n> <unit>" with the unit singular or plural.
	f := strings.Fields(low)
	if len(f) == 2 {
		n, err := strconv.Atoi(f[0])
		unit := map[string]time.Duration{
			"sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
			"min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
			"hour": time.Hour, "hours": time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
		}[f[1]]
		if err == nil && n > 0 && unit > 0 {
			for _, tf := range timeframes {
				if tf.Bar == time.Duration(n)*unit {
					return tf, nil
				}
			}
		}
	}
	return Timeframe{}, fmt.Errorf("timeframe %q is not supported: want one of %s, or IB's spelling (\"1 hour\")", s, TimeframeNames())
}

// TimeframeNames lists the short names, for messages.
func TimeframeNames() string {
	names := make([]string, len(timeframes))
	for i, tf := range timeframes {
		names[i] = tf.Name
	}
	return strings.Join(names, ", ")
}

// Segment is one historical request of a load: the bars starting in
// [Start, End) of one request of Duration ending at End.
type Segment struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration string    `json:"duration"`
	// Expected is how many bars the trading hours promise; Stored how many
	// of them the store already had when the load was planned.
	Expected int  `json:"expected_bars"`
	Stored   int  `json:"stored_bars"`
	Skip     bool `json:"skip"`

	// The expected bar starts, ascending: kept for daily segments (one a
	// day), recomputed from the pieces for intraday ones, whose millions
	// of minutes over a long range are not worth holding.
	keys   []time.Time
	pieces []piece
	grid   *grid
}

// grid is what recomputing an intraday segment's bars needs.
type grid struct {
	bar  time.Duration
	loc  *time.Location
	head time.Time
}

// expectedKeys returns the bar starts the trading hours promise in s.
func (s *Segment) expectedKeys() []time.Time {
	if s.grid == nil {
		return s.keys
	}
	out := make([]time.Time, 0, s.Expected)
	for _, p := range s.pieces {
		out = append(out, slots(p.s, p.a, p.b, s.grid.head, s.grid.bar, s.grid.loc, true)...)
	}
	return out
}

// endText is End as the request carries it (IB's UTC form), which is also
// what the identical-request pacing rule compares.
func (s Segment) endText() string { return s.End.UTC().Format("20060102-15:04:05") }

// piece is a stretch of one session no longer than a request may be,
// holding n bars.
type piece struct {
	a, b time.Time
	s    Session
	n    int
}

// plan splits [lo, hi) into segments. Only bars that are complete by hi
// are planned: a bar in progress would be stored cut short.
func plan(tf Timeframe, tpl *Template, head, lo, hi, now time.Time) []Segment {
	if tf.Daily {
		return planDaily(tpl, head, lo, hi, now)
	}
	loc := tpl.Location()
	g := &grid{bar: tf.Bar, loc: loc, head: head}
	var ps []piece
	for _, s := range tpl.Sessions(lo, hi) {
		from, to := later(s.Open, lo), earlier(s.Close, hi)
		anchor := slotAnchor(s.Open, tf.Bar, loc)
		if to.Before(s.Close) {
			to = floorSlot(anchor, to, tf.Bar) // end on a bar boundary: never cut a bar
		}
		maxLen := time.Duration(tf.maxS) * time.Second
		for a := from; a.Before(to); {
			b := to
			if b.Sub(a) > maxLen {
				b = floorSlot(anchor, a.Add(maxLen), tf.Bar)
			}
			if n := len(slots(s, a, b, head, tf.Bar, loc, true)); n > 0 {
				ps = append(ps, piece{a: a, b: b, s: s, n: n})
			}
			a = b
		}
	}
	var out []Segment
	for _, p := range ps {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if d, ok := tf.duration(last.Start, p.b, loc); ok {
				last.End, last.Duration = p.b, d
				last.pieces = append(last.pieces, p)
				last.Expected += p.n
				continue
			}
		}
		d, ok := tf.duration(p.a, p.b, loc)
		if !ok {
			continue // cannot happen: a piece is at most maxS long
		}
		out = append(out, Segment{Start: p.a, End: p.b, Duration: d, pieces: []piece{p}, Expected: p.n, grid: g})
	}
	return out
}

// duration returns the shortest duration IB allows for this bar size that
// covers [a, b) when the request ends at b, and false if none does.
// Seconds are elapsed time; "1 W" and "1 M" are calendar steps back in the
// instrument's zone (a month is taken as 28 days, the shortest, so the
// request covers the segment whatever the month).
func (tf Timeframe) duration(a, b time.Time, loc *time.Location) (string, bool) {
	secs := b.Sub(a)
	if secs <= time.Duration(tf.maxS)*time.Second {
		n := int((secs + time.Second - 1) / time.Second)
		return strconv.Itoa(max(n, 1)) + " S", true
	}
	lb := b.In(loc)
	if tf.week && !a.Before(lb.AddDate(0, 0, -7)) {
		return "1 W", true
	}
	if tf.month && !a.Before(lb.AddDate(0, 0, -28)) {
		return "1 M", true
	}
	return "", false
}

// maxDailySpan bounds a daily request: IB allows at most 365 "D"; the
// margin covers the day added for the partial first session.
const maxDailySpan = 360 * 24 * time.Hour

// planDaily groups trading dates into requests of up to a year. A daily
// bar is keyed by its trading date at midnight UTC, and only sessions
// already closed at now are planned.
func planDaily(tpl *Template, head, lo, hi, now time.Time) []Segment {
	if !head.IsZero() {
		// The head is an instant in the first session: its date's bar counts.
		lo = later(lo, dateOf(head.In(tpl.Location())).utc())
	}
	type day struct {
		key         time.Time
		open, close time.Time
	}
	var days []day
	for _, s := range tpl.Sessions(lo.Add(-48*time.Hour), hi.Add(8*24*time.Hour)) {
		if s.Date.Before(lo) || !s.Date.Before(hi) || s.Close.After(now) || !head.IsZero() && !s.Close.After(head) {
			continue // outside the range, not over yet, or before the first data
		}
		if n := len(days); n > 0 && days[n-1].key.Equal(s.Date) {
			days[n-1].close = s.Close // a break inside one trading date
			continue
		}
		days = append(days, day{key: s.Date, open: s.Open, close: s.Close})
	}
	var out []Segment
	var first time.Time
	for _, d := range days {
		if n := len(out); n > 0 && d.close.Sub(first) <= maxDailySpan {
			out[n-1].End = d.close
			out[n-1].keys = append(out[n-1].keys, d.key)
			continue
		}
		first = d.open
		out = append(out, Segment{Start: d.open, End: d.close, keys: []time.Time{d.key}})
	}
	for i := range out {
		s := &out[i]
		// "N D" counts trading days back from End; N calendar days plus
		// one always reach the first session's open.
		n := int(s.End.Sub(s.Start)/(24*time.Hour)) + 2
		s.Duration = strconv.Itoa(min(n, 365)) + " D"
		s.Expected = len(s.keys)
	}
	return out
}

// keep reports whether a bar starting at t belongs to segment s: an
// intraday bar starting inside it (even one the hours did not predict, in
// a session they do not describe), a daily bar of one of its dates.
func (s *Segment) keep(t time.Time) bool {
	if s.grid != nil {
		return !t.Before(s.Start) && t.Before(s.End)
	}
	i := sort.Search(len(s.keys), func(i int) bool { return !s.keys[i].Before(t) })
	return i < len(s.keys) && s.keys[i].Equal(t)
}

// countStored counts the expected bars keys present in have (both sorted).
func countStored(keys, have []time.Time) int {
	n, j := 0, 0
	for _, k := range keys {
		for j < len(have) && have[j].Before(k) {
			j++
		}
		if j < len(have) && have[j].Equal(k) {
			n++
		}
	}
	return n
}

// pacingRequest describes the segment's request for the scheduler.
func pacingRequest(conID int64, exchange, what string, tf Timeframe, s Segment, rth bool) pacing.Request {
	return pacing.Request{Contract: strconv.FormatInt(conID, 10), Exchange: exchange, WhatToShow: what,
		End: s.endText(), Duration: s.Duration, BarSize: tf.BarSize, UseRTH: rth, BarSeconds: int(tf.Bar / time.Second)}
}

// parseBarTime reads a bar's date field: epoch seconds (formatDate 2),
// "yyyyMMdd" (daily bars, whatever formatDate says) or
// "yyyyMMdd HH:mm:ss [zone]" (formatDate 1). Daily bars are keyed by their
// trading date at midnight UTC.
func parseBarTime(s string, daily bool, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if len(s) == 8 && allDigits(s) {
		t, err := time.Parse("20060102", s)
		if err != nil {
			return time.Time{}, fmt.Errorf("bar time %q: %w", s, err)
		}
		return t, nil
	}
	var t time.Time
	if allDigits(s) && s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bar time %q: %w", s, err)
		}
		t = time.Unix(n, 0)
	} else {
		f := strings.Fields(s)
		if len(f) < 2 {
			return time.Time{}, fmt.Errorf("bar time %q: not a date", s)
		}
		z := loc
		if len(f) > 2 {
			if l, err := loadZone(f[2]); err == nil {
				z = l
			}
		}
		var err error
		if t, err = time.ParseInLocation("20060102 15:04:05", f[0]+" "+f[1], z); err != nil {
			return time.Time{}, fmt.Errorf("bar time %q: %w", s, err)
		}
	}
	if daily {
		return dateOf(t.In(loc)).utc(), nil
	}
	return t.UTC(), nil
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// storeTimes lists the start times of bars, for comparison with keys.
func storeTimes(bars []store.Bar) []time.Time {
	out := make([]time.Time, len(bars))
	for i, b := range bars {
		out[i] = b.Time
	}
	return out
}
