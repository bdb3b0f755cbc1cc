package loader

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
)

func TestParseTimeframe(t *testing.T) {
	for in, want := range map[string]string{
		"1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1h", "4h": "4h", "1d": "1d", "1D": "1d", "1H": "1h",
		"30s": "30s", "1 min": "1m", "5 mins": "5m", "1 hour": "1h", "4 hours": "4h", "1 day": "1d",
		"30 secs": "30s", "1 secs": "1s", "1 sec": "1s", " 15 MINS ": "15m", "60 mins": "1h", "2 hours": "2h",
	} {
		tf, err := ParseTimeframe(in)
		if err != nil || tf.Name != want {
			t.Errorf("ParseTimeframe(%q) = %q, %v; want %q", in, tf.Name, err, want)
		}
	}
	for _, bad := range []string{"", "1M", "1 month", "1 week", "7m", "1y", "fast", "0 mins", "-1 hour"} {
		if tf, err := ParseTimeframe(bad); err == nil {
			t.Errorf("ParseTimeframe(%q) = %q, want an error", bad, tf.Name)
		}
	}
	// Every IB spelling must be one the simulator (strict, like IB) accepts.
	for _, tf := range timeframes {
		if _, err := ibsim.ParseBarSize(tf.BarSize); err != nil {
			t.Errorf("%s: IB refuses bar size %q: %v", tf.Name, tf.BarSize, err)
		}
	}
}

// TestPlanAgainstTheSimulator plans loads for every timeframe on a stock,
// a forex pair and a future, sends each segment's request to the
// simulator's history (which enforces IB's step-size table) and checks
// that the bars it returns inside the segment are exactly the bars the
// plan expects: the trading hours predict every bar and no other, and no
// request is longer than IB allows.
func TestPlanAgainstTheSimulator(t *testing.T) {
	now := time.Date(2025, 11, 14, 18, 7, 0, 0, time.UTC)
	h := ibsim.History{Seed: 7}
	var fut *ibsim.Instrument
	for _, in := range ibsim.DefaultCatalog().All() {
		if in.SecType == "FUT" && in.Head.Before(now.AddDate(0, -3, 0)) && in.LastTradeDateOrContractMonth > now.Format("20060102") {
			fut = in
			break
		}
	}
	if fut == nil {
		t.Fatal("no future trading in November 2025 in the catalog")
	}
	instruments := []*ibsim.Instrument{catalogInstrument(t, conAAPL), catalogInstrument(t, conEURUSD), fut}
	for _, in := range instruments {
		for _, rth := range []bool{true, false} {
			hours := in.TradingHours(now)
			if rth {
				hours = in.LiquidHours(now)
			}
			tpl, err := ParseHours(hours, in.TimeZoneID)
			if err != nil {
				t.Fatal(err)
			}
			what := "TRADES"
			if in.SecType == "CASH" {
				what = "MIDPOINT"
			}
			for _, tf := range timeframes {
				// Long enough for several segments of the widest requests,
				// short enough for 1 secs bars; the start is not on a bar
				// boundary and the range crosses the end of daylight saving.
				span := time.Duration(max(tf.maxS, 2*86400)) * time.Second * 3
				switch {
				case tf.Daily:
					span = 400 * 24 * time.Hour
				case tf.month:
					span = 70 * 24 * time.Hour
				case tf.week:
					span = 16 * 24 * time.Hour
				}
				hi := now
				lo := hi.Add(-span).Add(-7 * time.Minute)
				if tf.Bar < time.Minute {
					lo = time.Date(2025, 10, 31, 19, 0, 3, 0, time.UTC) // Friday to Monday
					hi = lo.Add(3 * 24 * time.Hour)
				}
				head := in.Head
				segs := plan(tf, tpl, head, lo, hi, now)
				name := fmt.Sprintf("%s rth=%t %s", in.LocalSymbol, rth, tf.Name)
				if len(segs) < 2 && head.Before(lo) {
					t.Errorf("%s: %d segments over %s", name, len(segs), span)
				}
				for i, s := range segs {
					if i > 0 && s.Start.Before(segs[i-1].End) {
						t.Fatalf("%s: segment %d starts %s before the previous ends %s", name, i, s.Start, segs[i-1].End)
					}
					res, err := h.Bars(ibsim.HistoryQuery{Inst: in, End: s.End, Now: now, Duration: s.Duration,
						BarSize: tf.BarSize, WhatToShow: what, UseRTH: rth})
					var re *ibsim.RequestError
					if errors.As(err, &re) && re.Code == 162 && s.Expected == 0 {
						continue
					}
					if err != nil {
						t.Fatalf("%s: segment %s %s: %v", name, segName(&s), s.Duration, err)
					}
					bs, _ := ibsim.ParseBarSize(tf.BarSize)
					var got []time.Time
					for _, b := range res.Bars {
						// As the loader sees it: through the wire format.
						k, err := parseBarTime(ibsim.FormatBarTime(b.Time, bs, 2, in), tf.Daily, tpl.Location())
						if err != nil {
							t.Fatal(err)
						}
						inside := !b.Time.Before(s.Start) && b.Time.Before(s.End)
						if tf.Daily && inside && !s.keep(k) {
							t.Fatalf("%s: segment %s: the simulator has a day bar %s the plan does not expect", name, segName(&s), k)
						}
						if s.keep(k) {
							got = append(got, k)
						}
					}
					if keys := s.expectedKeys(); fmt.Sprint(got) != fmt.Sprint(keys) || len(keys) != s.Expected {
						t.Fatalf("%s: segment %s (%s): simulator bars\n%v\nplanned (%d)\n%v", name, segName(&s), s.Duration, got, s.Expected, keys)
					}
				}
			}
		}
	}
}
