package loader

import (
	"strings"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
)

// catalogInstrument returns one of the simulator's instruments.
func catalogInstrument(t testing.TB, conID int64) *ibsim.Instrument {
	t.Helper()
	in, ok := ibsim.DefaultCatalog().ByConID(conID)
	if !ok {
		t.Fatalf("conId %d not in the simulator's catalog", conID)
	}
	return in
}

const (
	conAAPL   = 265598
	conEURUSD = 12087792
)

// TestTemplateMatchesTheSimulatorsCalendar derives the weekly template from
// the hours string the simulator publishes for one week and checks it
// against the simulator's own calendar every five minutes for two months
// either side, across both daylight-saving changes of 2024.
func TestTemplateMatchesTheSimulatorsCalendar(t *testing.T) {
	es := ibsim.DefaultCatalog().All()
	var fut *ibsim.Instrument
	for _, in := range es {
		if in.SecType == "FUT" {
			fut = in
			break
		}
	}
	published := time.Date(2024, 6, 12, 15, 0, 0, 0, time.UTC)
	for _, in := range []*ibsim.Instrument{catalogInstrument(t, conAAPL), catalogInstrument(t, conEURUSD), fut} {
		for _, rth := range []bool{false, true} {
			hours := in.TradingHours(published)
			if rth {
				hours = in.LiquidHours(published)
			}
			tpl, err := ParseHours(hours, in.TimeZoneID)
			if err != nil {
				t.Fatalf("%s rth=%t: %v (%s)", in.LocalSymbol, rth, err, hours)
			}
			for _, span := range [][2]time.Time{
				{time.Date(2024, 2, 20, 0, 0, 0, 0, time.UTC), time.Date(2024, 4, 10, 0, 0, 0, 0, time.UTC)},
				{time.Date(2024, 10, 20, 0, 0, 0, 0, time.UTC), time.Date(2024, 11, 20, 0, 0, 0, 0, time.UTC)},
			} {
				ss := tpl.Sessions(span[0], span[1])
				i := 0
				for x := span[0]; x.Before(span[1]); x = x.Add(5 * time.Minute) {
					for i < len(ss) && !ss[i].Close.After(x) {
						i++
					}
					got := i < len(ss) && !x.Before(ss[i].Open)
					if want := in.InSession(x, rth); got != want {
						t.Fatalf("%s rth=%t at %s (%s): template says in session %t, simulator %t\nhours %s",
							in.LocalSymbol, rth, x, x.In(tpl.Location()).Format("Mon 15:04 MST"), got, want, hours)
					}
				}
			}
		}
	}
}

func TestParseHours(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	at := func(y int, m time.Month, d, h, mi int) time.Time { return time.Date(y, m, d, h, mi, 0, 0, ny).UTC() }

	// A holiday inside the published week (Wednesday 2024-07-03 closed)
	// must not close every Wednesday.
	holiday := "20240701:0930-20240701:1600;20240702:0930-20240702:1600;20240703:CLOSED;" +
		"20240704:0930-20240704:1600;20240705:0930-20240705:1600;20240706:CLOSED;20240707:CLOSED"
	tpl, err := ParseHours(holiday, "US/Eastern")
	if err != nil {
		t.Fatal(err)
	}
	ss := tpl.Sessions(at(2024, 7, 10, 0, 0), at(2024, 7, 11, 0, 0))
	if len(ss) != 1 || !ss[0].Open.Equal(at(2024, 7, 10, 9, 30)) || !ss[0].Close.Equal(at(2024, 7, 10, 16, 0)) ||
		!ss[0].Date.Equal(time.Date(2024, 7, 10, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("a Wednesday after a Wednesday holiday: %+v", ss)
	}
	if ss := tpl.Sessions(at(2024, 7, 13, 0, 0), at(2024, 7, 15, 0, 0)); len(ss) != 0 {
		t.Fatalf("the weekend has sessions: %+v", ss)
	}

	// The older form without the close date, with a break and a session
	// past midnight.
	old := "20240108:0930-1200,1300-1600;20240109:1715-1700;20240110:CLOSED"
	tpl, err = ParseHours(old, "EST (Eastern Standard Time)")
	if err != nil {
		t.Fatal(err)
	}
	ss = tpl.Sessions(at(2024, 1, 15, 0, 0), at(2024, 1, 15, 17, 0)) // a Monday
	if len(ss) != 2 || !ss[0].Open.Equal(at(2024, 1, 15, 9, 30)) || !ss[1].Close.Equal(at(2024, 1, 15, 16, 0)) {
		t.Fatalf("Monday with a lunch break: %+v", ss)
	}
	ss = tpl.Sessions(at(2024, 1, 16, 17, 0), at(2024, 1, 17, 12, 0))
	if len(ss) != 1 || !ss[0].Open.Equal(at(2024, 1, 16, 17, 15)) || !ss[0].Close.Equal(at(2024, 1, 17, 17, 0)) ||
		!ss[0].Date.Equal(time.Date(2024, 1, 17, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("a session past midnight belongs to the date it closes on: %+v", ss)
	}

	tpl, err = ParseHours("", "US/Central")
	if err != nil || !tpl.Assumed || len(tpl.Sessions(at(2024, 1, 13, 0, 0), at(2024, 1, 14, 0, 0))) == 0 {
		t.Fatalf("no hours: want the all-day template, got %+v, %v", tpl, err)
	}

	for _, bad := range []struct{ hours, tz, want string }{
		{"20240108:0930-1600", "Mars/Olympus", "time zone"},
		{"2024010:0930-1600", "US/Eastern", "yyyyMMdd"},
		{"20240108:0930", "US/Eastern", "open-close"},
		{"20240108:0960-1600", "US/Eastern", "HHmm"},
		{"20240108:1600-20240107:0930", "US/Eastern", "closes before"},
		{"20240106:CLOSED;20240107:CLOSED", "US/Eastern", "no session"},
	} {
		if _, err := ParseHours(bad.hours, bad.tz); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseHours(%q, %q) = %v, want an error about %q", bad.hours, bad.tz, err, bad.want)
		}
	}
}
