package ibsim

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testNow is the injected clock of these tests: Wednesday 2026-11-25 15:04:05 UTC.
var testNow = time.Date(2026, 11, 25, 15, 4, 5, 0, time.UTC)

// whatFor lists the data types an instrument serves.
func whatFor(in *Instrument) []string {
	if in.SecType == "CASH" {
		return []string{"MIDPOINT", "BID", "ASK", "BID_ASK"}
	}
	return []string{"TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK"}
}

// maxDurationString is the longest duration the step table allows for a bar
// size, or a few years for day and longer bars.
func maxDurationString(b BarSize) string {
	limit, unlimited := MaxDurationFor(b)
	if unlimited {
		if b.Days == 1 {
			return "2 Y"
		}
		return "5 Y"
	}
	return limit.String()
}

var historyInstruments = []int64{conAAPL, conSPY, conEURUSD, conUSDJPY, conESZ6, conCLF7}

// mustBars runs a query that must succeed.
func mustBars(t *testing.T, h History, q HistoryQuery) HistoryResult {
	t.Helper()
	r, err := h.Bars(q)
	if err != nil {
		t.Fatalf("%s %s %s %s rth=%v end=%v: %v", q.Inst.LocalSymbol, q.Duration, q.BarSize, q.WhatToShow, q.UseRTH, q.End, err)
	}
	return r
}

// TestBarsWindowIndependent: a bar has the same values whichever window
// produced it, and equals History.Bar / barAt. The last bar of a window may
// be cut by the window end, so it is left out of the comparison.
func TestBarsWindowIndependent(t *testing.T) {
	h := History{Seed: 42}
	for _, id := range historyInstruments {
		in := testInstrument(t, id)
		for _, b := range barSizes {
			dur := maxDurationString(b)
			d, _ := ParseDuration(dur)
			// Window B ends a third of the way back, so the two overlap; for
			// "N D", counted in sessions, two hours back keeps the same sessions.
			endA := testNow.Add(-36 * time.Hour)
			endB := endA.Add(-time.Duration(d.nominalSeconds()/3) * time.Second)
			if d.Unit == 'D' {
				endB = endA.Add(-2 * time.Hour)
			}
			for _, wts := range whatFor(in) {
				for _, rth := range []bool{false, true} {
					base := HistoryQuery{Inst: in, Now: testNow, Duration: dur, BarSize: b.Spec, WhatToShow: wts, UseRTH: rth}
					qa, qb := base, base
					qa.End, qb.End = endA, endB
					ra, errA := h.Bars(qa)
					rb, errB := h.Bars(qb)
					if errA != nil || errB != nil {
						// A short window may land entirely on a weekend.
						if d.Unit == 'S' {
							continue
						}
						t.Fatalf("%s %s %s rth=%v: %v / %v", in.LocalSymbol, b.Spec, wts, rth, errA, errB)
					}
					byTime := map[int64]Bar{}
					for _, x := range ra.Bars[:len(ra.Bars)-1] {
						byTime[x.Time.UnixNano()] = x
					}
					common := 0
					g := newGen(h.Seed, in, mustWhat(t, wts))
					for _, x := range rb.Bars[:len(rb.Bars)-1] {
						y, ok := byTime[x.Time.UnixNano()]
						if !ok {
							continue
						}
						common++
						if x != y {
							t.Fatalf("%s %s %s rth=%v bar %v differs:\n%+v\n%+v", in.LocalSymbol, b.Spec, wts, rth, x.Time, x, y)
						}
						if z := g.barAt(in, b, rth, x.Time); z != x {
							t.Fatalf("%s %s %s rth=%v barAt(%v) = %+v, Bars gave %+v", in.LocalSymbol, b.Spec, wts, rth, x.Time, z, x)
						}
						if !rth {
							if z := h.Bar(in, b, wts, x.Time); z != x {
								t.Fatalf("%s %s %s Bar(%v) = %+v, Bars gave %+v", in.LocalSymbol, b.Spec, wts, x.Time, z, x)
							}
						}
					}
					if common == 0 && d.Unit != 'S' {
						t.Errorf("%s %s %s rth=%v: windows share no bars (%d, %d)", in.LocalSymbol, b.Spec, wts, rth, len(ra.Bars), len(rb.Bars))
					}
				}
			}
		}
	}
}

func mustWhat(t *testing.T, s string) what {
	t.Helper()
	w, err := parseWhat(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// checkBars asserts the realism rules on one response.
func checkBars(t *testing.T, q HistoryQuery, r HistoryResult) {
	t.Helper()
	in := q.Inst
	loc := in.Location()
	b, _ := ParseBarSize(q.BarSize)
	label := fmt.Sprintf("%s %s %s %s rth=%v", in.LocalSymbol, q.Duration, q.BarSize, q.WhatToShow, q.UseRTH)
	if len(r.Bars) == 0 {
		t.Fatalf("%s: no bars", label)
	}
	end := q.End
	if end.IsZero() || end.After(q.Now) {
		end = q.Now
	}
	if !r.End.Equal(end) || !r.Start.Before(r.End) {
		t.Errorf("%s: window %v - %v, want end %v", label, r.Start, r.End, end)
	}
	trades := strings.EqualFold(q.WhatToShow, "TRADES")
	pow := math.Pow10(in.Digits)
	var prev time.Time
	for i, x := range r.Bars {
		where := fmt.Sprintf("%s bar %d %v", label, i, x.Time)
		if x.Time.Location() != time.UTC {
			t.Fatalf("%s: time not UTC", where)
		}
		if i > 0 && !x.Time.After(prev) {
			t.Fatalf("%s: not after previous bar %v", where, prev)
		}
		prev = x.Time
		if x.Low > math.Min(x.Open, x.Close) || math.Max(x.Open, x.Close) > x.High || x.Low <= 0 {
			t.Fatalf("%s: OHLC out of order %+v", where, x)
		}
		for _, p := range []float64{x.Open, x.High, x.Low, x.Close} {
			if math.Abs(p*pow-math.Round(p*pow)) > 1e-6 {
				t.Fatalf("%s: price %v not rounded to %d decimals", where, p, in.Digits)
			}
		}
		if trades {
			if x.Volume < 0 || x.Count < 0 || x.WAP < x.Low || x.WAP > x.High || x.Volume != math.Trunc(x.Volume) {
				t.Fatalf("%s: volume/WAP/count %+v", where, x)
			}
		} else if x.Volume != -1 || x.WAP != -1 || x.Count != -1 {
			t.Fatalf("%s: quote data should carry -1 volume, WAP and count: %+v", where, x)
		}
		if !x.Time.Before(end) {
			t.Fatalf("%s: bar at or after the end %v", where, end)
		}
		lt := x.Time.In(loc)
		if b.Intraday() {
			if x.Time.Before(in.Head) {
				t.Fatalf("%s: before head %v", where, in.Head)
			}
			if !in.InSession(x.Time, q.UseRTH) {
				t.Fatalf("%s: starts outside the session", where)
			}
			if x.Time.Before(r.Start) {
				t.Fatalf("%s: before the window start %v", where, r.Start)
			}
			// Aligned on the local wall clock from midnight, unless clipped to
			// the session open.
			sod := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute + time.Duration(lt.Second())*time.Second
			if sod%b.Dur != 0 {
				_, o, _, _ := in.Sessions.sessionAt(x.Time, q.UseRTH, loc)
				if !x.Time.Equal(o) && !x.Time.Equal(in.Head) {
					t.Fatalf("%s: not aligned to %v", where, b.Dur)
				}
			}
		} else {
			// Starts at a session open (or the head) and is dated by a trading date.
			if !in.InSession(x.Time, q.UseRTH) || x.Time.Before(in.Head) {
				t.Fatalf("%s: calendar bar does not start in a session after the head", where)
			}
			if _, o, _, _ := in.Sessions.sessionAt(x.Time, q.UseRTH, loc); !x.Time.Equal(o) && !x.Time.Equal(in.Head) {
				t.Fatalf("%s: calendar bar does not start at the session open %v", where, o)
			}
			date, err := time.ParseInLocation("20060102", FormatBarTime(x.Time, b, 1, in), loc)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if wd := date.Weekday(); wd == time.Saturday || wd == time.Sunday {
				t.Fatalf("%s: dated on a weekend", where)
			}
			switch {
			case b.Days == 7 && i > 0 && date.Weekday() != time.Monday:
				t.Fatalf("%s: weekly bar not dated Monday", where)
			case b.Months > 0 && i > 0 && date.Day() > 3:
				t.Fatalf("%s: monthly bar not dated by the first trading day", where)
			}
		}
		if wd := lt.Weekday(); b.Intraday() && (wd == time.Saturday || wd == time.Sunday && in.Sessions == StockSessions) {
			t.Fatalf("%s: weekend bar", where)
		}
	}
}

func TestBarsRealism(t *testing.T) {
	h := History{Seed: 7}
	ends := []time.Time{
		{}, // now
		time.Date(2026, 11, 28, 17, 0, 0, 0, time.UTC), // Saturday, after Now: clamped
		time.Date(2026, 3, 9, 14, 0, 0, 0, time.UTC),   // Monday after the DST change
		time.Date(2026, 11, 2, 3, 0, 0, 0, time.UTC),   // the Sunday night the clocks went back
	}
	count := 0
	for _, id := range historyInstruments {
		in := testInstrument(t, id)
		// Bar placement does not depend on the data type, so two types per
		// instrument cover it: the first served and BID_ASK.
		types := whatFor(in)
		types = []string{types[0], "BID_ASK"}
		for _, b := range barSizes {
			for i, wts := range types {
				for _, rth := range []bool{false, true} {
					for j, end := range ends {
						if (i+j)%2 == 1 && b.Intraday() {
							continue // halve the intraday work; every end still meets both types
						}
						q := HistoryQuery{Inst: in, Now: testNow, End: end, Duration: maxDurationString(b), BarSize: b.Spec, WhatToShow: wts, UseRTH: rth}
						r, err := h.Bars(q)
						if err != nil {
							// Only a sub-day window may be empty (over a weekend).
							d, _ := ParseDuration(q.Duration)
							if d.Unit == 'S' {
								requireCode(t, err, 162)
								continue
							}
							t.Fatalf("%s %s %s rth=%v end=%v: %v", in.LocalSymbol, b.Spec, wts, rth, end, err)
						}
						checkBars(t, q, r)
						count += len(r.Bars)
					}
				}
			}
		}
	}
	if count < 50000 {
		t.Errorf("only %d bars checked", count)
	}
}

func TestBarsRTH(t *testing.T) {
	h := History{Seed: 1}
	aapl := testInstrument(t, conAAPL)
	ny := aapl.Location()
	r := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 W", BarSize: "1 hour", WhatToShow: "TRADES", UseRTH: true})
	for _, x := range r.Bars {
		lt := x.Time.In(ny)
		if m := lt.Hour()*60 + lt.Minute(); m < 9*60+30 || m >= 16*60 {
			t.Fatalf("RTH bar at %v", lt)
		}
	}
	// Each full RTH day has 7 hour bars: 09:30 (half an hour), 10:00, ... 15:00.
	perDay := map[int][]string{}
	for _, x := range r.Bars {
		lt := x.Time.In(ny)
		perDay[lt.YearDay()] = append(perDay[lt.YearDay()], lt.Format("15:04"))
	}
	want := "09:30 10:00 11:00 12:00 13:00 14:00 15:00"
	full := 0
	for _, times := range perDay {
		if strings.Join(times, " ") == want {
			full++
		}
	}
	if full < 4 {
		t.Errorf("RTH hourly bars per day %v", perDay)
	}
	ext := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 W", BarSize: "1 hour", WhatToShow: "TRADES"})
	early := 0
	for _, x := range ext.Bars {
		if x.Time.In(ny).Hour() == 4 {
			early++
		}
	}
	if early == 0 || len(ext.Bars) <= len(r.Bars) {
		t.Errorf("extended hours: %d bars, %d at 04:00; RTH %d bars", len(ext.Bars), early, len(r.Bars))
	}
	// Futures liquid hours.
	es := testInstrument(t, conESZ6)
	ct := es.Location()
	rf := mustBars(t, h, HistoryQuery{Inst: es, Now: testNow, Duration: "1 W", BarSize: "15 mins", WhatToShow: "TRADES", UseRTH: true})
	for _, x := range rf.Bars {
		lt := x.Time.In(ct)
		if m := lt.Hour()*60 + lt.Minute(); m < 8*60+30 || m >= 15*60+15 {
			t.Fatalf("futures RTH bar at %v", lt)
		}
	}
	// Daily RTH and extended bars differ (different sessions), same dates.
	d1 := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 M", BarSize: "1 day", WhatToShow: "TRADES", UseRTH: true})
	d2 := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 M", BarSize: "1 day", WhatToShow: "TRADES"})
	day := BarSize{Spec: "1 day", Days: 1}
	if len(d1.Bars) != len(d2.Bars) || d1.Bars[0] == d2.Bars[0] ||
		FormatBarTime(d1.Bars[0].Time, day, 1, aapl) != FormatBarTime(d2.Bars[0].Time, day, 1, aapl) {
		t.Errorf("daily RTH %d bars vs extended %d", len(d1.Bars), len(d2.Bars))
	}
	if lt := d1.Bars[0].Time.In(ny); lt.Hour() != 9 || lt.Minute() != 30 {
		t.Errorf("RTH daily bar starts %v, want the 09:30 open", lt)
	}
}

func TestBarsSessionsBack(t *testing.T) {
	h := History{Seed: 1}
	aapl := testInstrument(t, conAAPL)
	ny := aapl.Location()
	sat := time.Date(2026, 11, 21, 12, 0, 0, 0, ny)
	// "1 D" on a Saturday is Friday's session, "2 D" Thursday's and Friday's.
	for n, wantDays := range map[string][]int{"1 D": {20}, "2 D": {19, 20}} {
		r := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, End: sat, Duration: n, BarSize: "5 mins", WhatToShow: "TRADES", UseRTH: true})
		days := map[int]int{}
		for _, x := range r.Bars {
			days[x.Time.In(ny).Day()]++
		}
		if len(days) != len(wantDays) {
			t.Errorf("%s: bars on days %v, want %v", n, days, wantDays)
		}
		for _, d := range wantDays {
			if days[d] != 78 { // 6.5 hours of 5-minute bars
				t.Errorf("%s: %d bars on the %dth, want 78", n, days[d], d)
			}
		}
	}
	// "5 D" of daily bars is five bars.
	r := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "5 D", BarSize: "1 day", WhatToShow: "TRADES", UseRTH: true})
	if len(r.Bars) != 5 {
		t.Errorf("5 D of daily bars gave %d", len(r.Bars))
	}
	// A FX day bar is dated by the trading date its session closes on.
	eur := testInstrument(t, conEURUSD)
	mon := time.Date(2026, 11, 23, 0, 0, 0, 0, ny) // Monday, midnight
	rf := mustBars(t, h, HistoryQuery{Inst: eur, Now: testNow, End: mon, Duration: "1 W", BarSize: "1 day", WhatToShow: "MIDPOINT"})
	last := rf.Bars[len(rf.Bars)-1]
	if got := FormatBarTime(last.Time, BarSize{Spec: "1 day", Days: 1}, 1, eur); got != "20261123" || last.Time.In(ny).Weekday() != time.Sunday {
		t.Errorf("FX daily bar dated %s from %v, want 20261123 (the session from Sunday evening trades for Monday)", got, last.Time)
	}
}

func TestBarsInProgressAndEnd(t *testing.T) {
	h := History{Seed: 3}
	aapl := testInstrument(t, conAAPL)
	// testNow is 10:04:05 New York: the 10:00 hour bar is in progress.
	r := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 D", BarSize: "1 hour", WhatToShow: "TRADES", UseRTH: true})
	last := r.Bars[len(r.Bars)-1]
	if want := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC); !last.Time.Equal(want) {
		t.Fatalf("last bar %v, want %v", last.Time, want)
	}
	full := h.Bar(aapl, BarSize{Spec: "1 hour", Dur: time.Hour}, "TRADES", last.Time)
	if last.Volume >= full.Volume {
		t.Errorf("bar in progress volume %v not below the full bar's %v", last.Volume, full.Volume)
	}
	// An End in the future is clamped to Now.
	r2 := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, End: testNow.Add(72 * time.Hour), Duration: "1 D", BarSize: "1 hour", WhatToShow: "TRADES", UseRTH: true})
	if !r2.End.Equal(testNow) || len(r2.Bars) != len(r.Bars) {
		t.Errorf("future end: end %v, %d bars", r2.End, len(r2.Bars))
	}
	// A zero Now means the wall clock; the window then ends about now.
	r3 := mustBars(t, h, HistoryQuery{Inst: aapl, Duration: "1 M", BarSize: "1 day", WhatToShow: "TRADES"})
	if d := time.Since(r3.End); d < 0 || d > time.Minute {
		t.Errorf("end %v is not now", r3.End)
	}
}

func TestBarsHead(t *testing.T) {
	h := History{Seed: 5}
	aapl := testInstrument(t, conAAPL)
	ny := aapl.Location()
	r := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, End: time.Date(1980, 12, 20, 0, 0, 0, 0, ny), Duration: "1 M", BarSize: "1 day", WhatToShow: "TRADES", UseRTH: true})
	if got := FormatBarTime(r.Bars[0].Time, BarSize{Spec: "1 day", Days: 1}, 1, aapl); got != "19801212" || len(r.Bars) != 6 {
		t.Errorf("first daily bar %s of %d, want 19801212 of 6 (12th, 15th-19th)", got, len(r.Bars))
	}
	ri := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, End: time.Date(1980, 12, 13, 0, 0, 0, 0, ny), Duration: "2 D", BarSize: "1 hour", WhatToShow: "TRADES"})
	if !ri.Bars[0].Time.Equal(aapl.Head) {
		t.Errorf("first intraday bar %v, want head %v", ri.Bars[0].Time, aapl.Head)
	}
	_, err := h.Bars(HistoryQuery{Inst: aapl, Now: testNow, End: time.Date(1980, 11, 1, 0, 0, 0, 0, ny), Duration: "1 M", BarSize: "1 day", WhatToShow: "TRADES"})
	re := requireCode(t, err, 162)
	if re.Msg != "Historical Market Data Service error message:HMDS query returned no data: AAPL@SMART Last" {
		t.Errorf("no data message %q", re.Msg)
	}
	// Weekly and monthly bars over a long span start at the head.
	for _, bs := range []string{"1 week", "1 month"} {
		r := mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, End: time.Date(1985, 1, 1, 0, 0, 0, 0, ny), Duration: "10 Y", BarSize: bs, WhatToShow: "MIDPOINT"})
		if got := r.Bars[0].Time.In(ny).Format("20060102"); got != "19801212" {
			t.Errorf("%s: first bar %s", bs, got)
		}
	}
}

func TestBarsErrors(t *testing.T) {
	h := History{Seed: 1}
	aapl := testInstrument(t, conAAPL)
	eur := testInstrument(t, conEURUSD)
	base := HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 D", BarSize: "5 mins", WhatToShow: "TRADES"}
	tests := []struct {
		name   string
		change func(*HistoryQuery)
		code   int
		text   string
	}{
		{"no instrument", func(q *HistoryQuery) { q.Inst = nil }, 200, "No security definition has been found for the request"},
		{"bad bar size", func(q *HistoryQuery) { q.BarSize = "1 sec" }, 321, "Historical data bar size setting is invalid"},
		{"bad duration", func(q *HistoryQuery) { q.Duration = "1D" }, 321, "Error validating request"},
		{"bad whatToShow", func(q *HistoryQuery) { q.WhatToShow = "PRICES" }, 321, "Error validating request"},
		{"unserved whatToShow", func(q *HistoryQuery) { q.WhatToShow = "ADJUSTED_LAST" }, 321, "Error validating request"},
		{"step too small", func(q *HistoryQuery) { q.BarSize = "1 secs" }, 162, "Historical Market Data Service error message:invalid step: 1"},
		{"duration too long", func(q *HistoryQuery) { q.Duration = "2 M"; q.BarSize = "1 hour" }, 162, "invalid step: 3600"},
		{"forex trades", func(q *HistoryQuery) { q.Inst = eur }, 162, "Historical Market Data Service error message:No historical market data for EUR/CASH@FXSUBPIP Last 300"},
		{"weekend seconds", func(q *HistoryQuery) {
			q.End = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
			q.Duration = "3600 S"
		}, 162, "HMDS query returned no data"},
	}
	for _, tt := range tests {
		q := base
		tt.change(&q)
		_, err := h.Bars(q)
		re := requireCode(t, err, tt.code)
		if !strings.Contains(re.Msg, tt.text) {
			t.Errorf("%s: message %q lacks %q", tt.name, re.Msg, tt.text)
		}
	}
	// Lower-case whatToShow is accepted, as by the gateway.
	mustBars(t, h, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 D", BarSize: "5 mins", WhatToShow: "midpoint"})
}

func TestBarsSeedAndTypes(t *testing.T) {
	aapl := testInstrument(t, conAAPL)
	q := HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 D", BarSize: "5 mins", WhatToShow: "MIDPOINT", UseRTH: true}
	a := mustBars(t, History{Seed: 1}, q)
	b := mustBars(t, History{Seed: 2}, q)
	if a.Bars[0] == b.Bars[0] {
		t.Error("different seeds gave the same bar")
	}
	// Bid below midpoint below ask; BID_ASK opens on the average bid and
	// closes on the average ask.
	bars := map[string]Bar{}
	for _, wts := range []string{"BID", "MIDPOINT", "ASK", "BID_ASK"} {
		q.WhatToShow = wts
		bars[wts] = mustBars(t, History{Seed: 1}, q).Bars[3]
	}
	if !(bars["BID"].Open < bars["ASK"].Open && bars["BID"].Low <= bars["MIDPOINT"].Low && bars["MIDPOINT"].High <= bars["ASK"].High) {
		t.Errorf("bid/mid/ask out of order: %+v", bars)
	}
	if ba := bars["BID_ASK"]; !(ba.Open < ba.Close && ba.High >= bars["ASK"].High-0.011 && ba.Low <= bars["BID"].Low+0.011) {
		t.Errorf("BID_ASK bar %+v vs bid %+v ask %+v", ba, bars["BID"], bars["ASK"])
	}
	// ES trades sit on its 0.25 tick.
	es := testInstrument(t, conESZ6)
	for _, x := range mustBars(t, History{Seed: 1}, HistoryQuery{Inst: es, Now: testNow, Duration: "1 D", BarSize: "1 min", WhatToShow: "TRADES"}).Bars {
		for _, p := range []float64{x.Open, x.High, x.Low, x.Close} {
			if math.Mod(p*4, 1) != 0 {
				t.Fatalf("ES price %v off the 0.25 tick", p)
			}
		}
	}
}

// TestIntradayCap drives the generator past the cap directly, since no
// request the step table allows reaches it.
func TestIntradayCap(t *testing.T) {
	eur := testInstrument(t, conEURUSD)
	g := newGen(1, eur, wMidpoint)
	end := testNow
	bars := g.intradayBars(eur, BarSize{Spec: "1 secs", Dur: time.Second}, false, end.Add(-2*time.Hour), end, eur.Location())
	if len(bars) != MaxIntradayBars || !bars[len(bars)-1].Time.Equal(end.Add(-time.Second)) {
		t.Errorf("%d bars, last %v", len(bars), bars[len(bars)-1].Time)
	}
}

func TestBarsAllocations(t *testing.T) {
	h := History{Seed: 1}
	eur := testInstrument(t, conEURUSD)
	q := HistoryQuery{Inst: eur, Now: testNow, Duration: "1 W", BarSize: "3 mins", WhatToShow: "BID_ASK"}
	n := len(mustBars(t, h, q).Bars)
	if n < 2000 {
		t.Fatalf("only %d bars", n)
	}
	if allocs := testing.AllocsPerRun(5, func() { _, _ = h.Bars(q) }); allocs > 4 {
		t.Errorf("%v allocations for %d bars; bars must not allocate", allocs, n)
	}
}

func BenchmarkBars2000(b *testing.B) {
	h := History{Seed: 1}
	eur := testInstrument(b, conEURUSD)
	q := HistoryQuery{Inst: eur, Now: testNow, Duration: "1 W", BarSize: "5 mins", WhatToShow: "MIDPOINT"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Bars(q); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHeadTimestamp(t *testing.T) {
	h := History{Seed: 1}
	aapl := testInstrument(t, conAAPL)
	for _, rth := range []bool{false, true} {
		ts, err := h.HeadTimestamp(aapl, "TRADES", rth)
		if err != nil || !ts.Equal(time.Date(1980, 12, 12, 14, 30, 0, 0, time.UTC)) {
			t.Errorf("AAPL head rth=%v: %v %v", rth, ts, err)
		}
		if got := FormatHeadTimestamp(ts, 1, aapl); got != "19801212-14:30:00" {
			t.Errorf("format 1: %s", got)
		}
		if got := FormatHeadTimestamp(ts, 2, aapl); got != "345479400" {
			t.Errorf("format 2: %s", got)
		}
	}
	es := testInstrument(t, conESZ6)
	ext, _ := h.HeadTimestamp(es, "TRADES", false)
	liq, err := h.HeadTimestamp(es, "MIDPOINT", true)
	if err != nil || !ext.Equal(es.Head) || !liq.After(ext) || !es.InSession(liq, true) || liq.Sub(ext) > 4*24*time.Hour {
		t.Errorf("ES head %v, RTH head %v (%v)", ext, liq, err)
	}
	eur := testInstrument(t, conEURUSD)
	_, err = h.HeadTimestamp(eur, "TRADES", false)
	re := requireCode(t, err, 162)
	if re.Msg != "Historical Market Data Service error message:No historical market data for EUR/CASH@FXSUBPIP Last 0" {
		t.Errorf("FX TRADES head: %q", re.Msg)
	}
	if ts, err := h.HeadTimestamp(eur, "MIDPOINT", false); err != nil || ts.Year() != 2005 {
		t.Errorf("FX head %v %v", ts, err)
	}
	_, err = h.HeadTimestamp(eur, "NOPE", false)
	requireCode(t, err, 321)
	_, err = h.HeadTimestamp(nil, "TRADES", false)
	requireCode(t, err, 200)
	_, err = h.HeadTimestamp(&Instrument{ConID: 1, SecType: "STK"}, "TRADES", false)
	requireCode(t, err, 162)
}

func TestParseEndDateTime(t *testing.T) {
	ny, _ := loadZone("US/Eastern")
	now := testNow
	tests := []struct {
		in   string
		want time.Time
	}{
		{"", now},
		{"  ", now},
		{"20240102 10:00:00", time.Date(2024, 1, 2, 15, 0, 0, 0, time.UTC)},
		{"20240102  10:00:00", time.Date(2024, 1, 2, 15, 0, 0, 0, time.UTC)},
		{"20240102 10:00:00 US/Eastern", time.Date(2024, 1, 2, 15, 0, 0, 0, time.UTC)},
		{"20240702 10:00:00 US/Eastern", time.Date(2024, 7, 2, 14, 0, 0, 0, time.UTC)},
		{"20240702 10:00:00 EST", time.Date(2024, 7, 2, 14, 0, 0, 0, time.UTC)},
		{"20240702 10:00:00 Europe/London", time.Date(2024, 7, 2, 9, 0, 0, 0, time.UTC)},
		{"20240702 10:00:00 UTC", time.Date(2024, 7, 2, 10, 0, 0, 0, time.UTC)},
		{"20240702 10:00:00 GMT", time.Date(2024, 7, 2, 10, 0, 0, 0, time.UTC)},
		{"20240702 10:00:00 US/Central", time.Date(2024, 7, 2, 15, 0, 0, 0, time.UTC)},
		{"20240102-15:00:00", time.Date(2024, 1, 2, 15, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := ParseEndDateTime(tt.in, ny, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("ParseEndDateTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if got, err := ParseEndDateTime("20240102 10:00:00", nil, now); err != nil || !got.Equal(time.Date(2024, 1, 2, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("nil location: %v %v", got, err)
	}
	for _, s := range []string{"2024-01-02 10:00:00", "20240102", "20240102 10:00", "20240102 10:00:00 Mars/Base", "20241302 10:00:00",
		"20240102 25:00:00", "20240102-10:00", "20240102 10:00:00X", "20240102 10:00:00 Local", "20240102T10:00:00"} {
		_, err := ParseEndDateTime(s, ny, now)
		re := requireCode(t, err, 321)
		if !strings.Contains(re.Msg, "["+s+"]") || !strings.HasPrefix(re.Msg, "Error validating request") {
			t.Errorf("ParseEndDateTime(%q) message %q", s, re.Msg)
		}
	}
}

func TestFormatBarTime(t *testing.T) {
	aapl := testInstrument(t, conAAPL)
	es := testInstrument(t, conESZ6)
	hour := BarSize{Spec: "1 hour", Dur: time.Hour}
	day := BarSize{Spec: "1 day", Days: 1}
	at := time.Date(2024, 1, 2, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		in   *Instrument
		b    BarSize
		fd   int
		want string
	}{
		{aapl, hour, 1, "20240102 10:00:00 US/Eastern"},
		{aapl, hour, 0, "20240102 10:00:00 US/Eastern"},
		{aapl, hour, 2, strconv.FormatInt(at.Unix(), 10)},
		{es, hour, 1, "20240102 09:00:00 US/Central"},
		{aapl, day, 1, "20240102"},
		{aapl, day, 2, "20240102"},
		{aapl, BarSize{Spec: "1 week", Days: 7}, 2, "20240102"},
	}
	for _, tt := range tests {
		if got := FormatBarTime(at, tt.b, tt.fd, tt.in); got != tt.want {
			t.Errorf("%s %s fd=%d: %q, want %q", tt.in.LocalSymbol, tt.b.Spec, tt.fd, got, tt.want)
		}
	}
	// A bar from Bars formats back to the time it carries.
	r := mustBars(t, History{}, HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 D", BarSize: "1 hour", WhatToShow: "TRADES"})
	s := FormatBarTime(r.Bars[0].Time, hour, 1, aapl)
	parsed, err := ParseEndDateTime(s, time.UTC, testNow)
	if err != nil || !parsed.Equal(r.Bars[0].Time) {
		t.Errorf("round trip of %q: %v %v", s, parsed, err)
	}
}

func TestBarsConcurrent(t *testing.T) {
	h := History{Seed: 9}
	aapl := testInstrument(t, conAAPL)
	q := HistoryQuery{Inst: aapl, Now: testNow, Duration: "1 W", BarSize: "5 mins", WhatToShow: "TRADES"}
	want := mustBars(t, h, q)
	done := make(chan HistoryResult)
	for i := 0; i < 4; i++ {
		go func() {
			r, _ := h.Bars(q)
			done <- r
		}()
	}
	for i := 0; i < 4; i++ {
		r := <-done
		if len(r.Bars) != len(want.Bars) || r.Bars[len(r.Bars)-1] != want.Bars[len(want.Bars)-1] {
			t.Error("concurrent results differ")
		}
	}
}
