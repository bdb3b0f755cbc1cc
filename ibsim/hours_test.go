package ibsim

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// testInstrument returns a catalog instrument by conId or fails.
func testInstrument(t testing.TB, id int64) *Instrument {
	t.Helper()
	in, ok := DefaultCatalog().ByConID(id)
	if !ok {
		t.Fatalf("conId %d not in the catalog", id)
	}
	return in
}

const (
	conAAPL   = 265598
	conMSFT   = 272093
	conSPY    = 756733
	conEURUSD = 12087792
	conUSDJPY = 15016059
	conESZ6   = 730283085
	conESH7   = 750150193
	conCLF7   = 721589310
	conCLG7   = 721589315
)

var hoursEntry = regexp.MustCompile(`^(\d{8}):(?:CLOSED|(\d{4})-(\d{8}):(\d{4}))$`)

// hoursRange is one parsed range of an hours string.
type hoursRange struct{ open, close time.Time }

// parseHours parses IB's hours format back, checking its shape: entries in
// date order, ranges that open on their key date and close after opening.
func parseHours(t *testing.T, s string, loc *time.Location) (ranges []hoursRange, closed []string) {
	t.Helper()
	if s == "" {
		t.Fatal("empty hours string")
	}
	prevKey := ""
	for _, e := range strings.Split(s, ";") {
		m := hoursEntry.FindStringSubmatch(e)
		if m == nil {
			t.Fatalf("malformed entry %q in %q", e, s)
		}
		if m[1] < prevKey {
			t.Fatalf("entry %q out of order in %q", e, s)
		}
		prevKey = m[1]
		if m[2] == "" {
			closed = append(closed, m[1])
			continue
		}
		o, err1 := time.ParseInLocation("20060102 1504", m[1]+" "+m[2], loc)
		c, err2 := time.ParseInLocation("20060102 1504", m[3]+" "+m[4], loc)
		if err1 != nil || err2 != nil {
			t.Fatalf("entry %q: %v %v", e, err1, err2)
		}
		if !c.After(o) {
			t.Fatalf("entry %q closes before it opens", e)
		}
		if len(ranges) > 0 && o.Before(ranges[len(ranges)-1].close) {
			t.Fatalf("entry %q overlaps the previous range", e)
		}
		ranges = append(ranges, hoursRange{o, c})
	}
	return ranges, closed
}

func TestHoursStrings(t *testing.T) {
	ny, _ := loadZone("US/Eastern")
	nows := []time.Time{
		time.Date(2026, 11, 25, 12, 0, 0, 0, ny), // Wednesday
		time.Date(2026, 11, 28, 12, 0, 0, 0, ny), // Saturday
		time.Date(2026, 11, 29, 18, 0, 0, 0, ny), // Sunday evening
		time.Date(2026, 11, 27, 23, 0, 0, 0, ny), // Friday night
		time.Date(2026, 3, 6, 10, 0, 0, 0, ny),   // a week spanning the DST start
		time.Date(2026, 10, 30, 10, 0, 0, 0, ny), // a week spanning the DST end
	}
	for _, id := range []int64{conAAPL, conEURUSD, conESZ6, conCLF7} {
		in := testInstrument(t, id)
		loc := in.Location()
		for _, now := range nows {
			for _, rth := range []bool{false, true} {
				s := in.TradingHours(now)
				if rth {
					s = in.LiquidHours(now)
				}
				ranges, closed := parseHours(t, s, loc)
				today := civilOf(now.In(loc))
				// Every range is exactly a session: open and just before close inside,
				// just before open and at close outside.
				for _, r := range ranges {
					if !in.InSession(r.open, rth) || !in.InSession(r.close.Add(-time.Second), rth) ||
						in.InSession(r.open.Add(-time.Second), rth) || in.InSession(r.close, rth) {
						t.Errorf("%s rth=%v %v: range %v-%v is not a session", in.LocalSymbol, rth, now, r.open, r.close)
					}
				}
				// Each of the 7 days is CLOSED exactly when no session touches it,
				// and weekends never trade except FX/futures Sunday evenings.
				for i := 0; i < 7; i++ {
					day := today.add(i)
					touched := false
					for _, r := range ranges {
						if r.open.Before(day.at(1, 0, 0, loc)) && r.close.After(day.at(0, 0, 0, loc)) {
							touched = true
						}
					}
					isClosed := false
					for _, c := range closed {
						isClosed = isClosed || c == day.ymd()
					}
					if touched == isClosed {
						t.Errorf("%s rth=%v %v: day %s touched=%v closed=%v in %q", in.LocalSymbol, rth, now, day.ymd(), touched, isClosed, s)
					}
					wd := day.weekday()
					if wd == time.Saturday && !isClosed {
						t.Errorf("%s: Saturday %s not closed in %q", in.LocalSymbol, day.ymd(), s)
					}
					if wd == time.Sunday && isClosed != (in.Sessions == StockSessions || rth && in.Sessions == FuturesCMESessions) {
						t.Errorf("%s rth=%v: Sunday %s closed=%v in %q", in.LocalSymbol, rth, day.ymd(), isClosed, s)
					}
				}
				// The session in progress now is listed.
				if in.InSession(now, rth) {
					found := false
					for _, r := range ranges {
						found = found || !now.Before(r.open) && now.Before(r.close)
					}
					if !found {
						t.Errorf("%s rth=%v: session in progress at %v missing from %q", in.LocalSymbol, rth, now, s)
					}
				}
			}
		}
	}
}

func TestHoursExample(t *testing.T) {
	ny, _ := loadZone("US/Eastern")
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, ny) // Friday
	tests := []struct {
		id   int64
		rth  bool
		want string
	}{
		{conAAPL, false, "20261127:0400-20261127:2000;20261128:CLOSED;20261129:CLOSED;20261130:0400-20261130:2000;20261201:0400-20261201:2000;20261202:0400-20261202:2000;20261203:0400-20261203:2000"},
		{conAAPL, true, "20261127:0930-20261127:1600;20261128:CLOSED;20261129:CLOSED;20261130:0930-20261130:1600;20261201:0930-20261201:1600;20261202:0930-20261202:1600;20261203:0930-20261203:1600"},
		{conEURUSD, false, "20261126:1715-20261127:1700;20261128:CLOSED;20261129:1715-20261130:1700;20261130:1715-20261201:1700;20261201:1715-20261202:1700;20261202:1715-20261203:1700;20261203:1715-20261204:1700"},
		{conESZ6, false, "20261126:1700-20261127:1600;20261128:CLOSED;20261129:1700-20261130:1600;20261130:1700-20261201:1600;20261201:1700-20261202:1600;20261202:1700-20261203:1600;20261203:1700-20261204:1600"},
		{conESZ6, true, "20261127:0830-20261127:1515;20261128:CLOSED;20261129:CLOSED;20261130:0830-20261130:1515;20261201:0830-20261201:1515;20261202:0830-20261202:1515;20261203:0830-20261203:1515"},
	}
	for _, tt := range tests {
		in := testInstrument(t, tt.id)
		got := in.TradingHours(now)
		if tt.rth {
			got = in.LiquidHours(now)
		}
		if got != tt.want {
			t.Errorf("%s rth=%v:\n got %s\nwant %s", in.LocalSymbol, tt.rth, got, tt.want)
		}
	}
}

func TestInSession(t *testing.T) {
	ny, _ := loadZone("US/Eastern")
	ct, _ := loadZone("US/Central")
	tests := []struct {
		id       int64
		at       time.Time
		ext, rth bool
	}{
		// Stocks, Wednesday 2026-11-25 and the weekend after.
		{conAAPL, time.Date(2026, 11, 25, 3, 59, 0, 0, ny), false, false},
		{conAAPL, time.Date(2026, 11, 25, 4, 0, 0, 0, ny), true, false},
		{conAAPL, time.Date(2026, 11, 25, 9, 29, 59, 0, ny), true, false},
		{conAAPL, time.Date(2026, 11, 25, 9, 30, 0, 0, ny), true, true},
		{conAAPL, time.Date(2026, 11, 25, 15, 59, 59, 0, ny), true, true},
		{conAAPL, time.Date(2026, 11, 25, 16, 0, 0, 0, ny), true, false},
		{conAAPL, time.Date(2026, 11, 25, 19, 59, 0, 0, ny), true, false},
		{conAAPL, time.Date(2026, 11, 25, 20, 0, 0, 0, ny), false, false},
		{conAAPL, time.Date(2026, 11, 28, 12, 0, 0, 0, ny), false, false},
		{conAAPL, time.Date(2026, 11, 29, 12, 0, 0, 0, ny), false, false},
		// Summer time: 09:30 EDT is 13:30 UTC.
		{conAAPL, time.Date(2026, 7, 1, 13, 30, 0, 0, time.UTC), true, true},
		{conAAPL, time.Date(2026, 7, 1, 13, 29, 0, 0, time.UTC), true, false},
		// FX.
		{conEURUSD, time.Date(2026, 11, 27, 16, 59, 0, 0, ny), true, true},
		{conEURUSD, time.Date(2026, 11, 27, 17, 0, 0, 0, ny), false, false},
		{conEURUSD, time.Date(2026, 11, 28, 12, 0, 0, 0, ny), false, false},
		{conEURUSD, time.Date(2026, 11, 29, 17, 14, 0, 0, ny), false, false},
		{conEURUSD, time.Date(2026, 11, 29, 17, 15, 0, 0, ny), true, true},
		{conEURUSD, time.Date(2026, 11, 25, 17, 5, 0, 0, ny), false, false},
		{conEURUSD, time.Date(2026, 11, 25, 17, 15, 0, 0, ny), true, true},
		{conEURUSD, time.Date(2026, 11, 25, 3, 0, 0, 0, ny), true, true},
		// CME futures, given in UTC to exercise the zone conversion.
		{conESZ6, time.Date(2026, 11, 29, 17, 0, 0, 0, ct).UTC(), true, false},
		{conESZ6, time.Date(2026, 11, 29, 16, 59, 0, 0, ct).UTC(), false, false},
		{conESZ6, time.Date(2026, 11, 27, 15, 59, 0, 0, ct).UTC(), true, false},
		{conESZ6, time.Date(2026, 11, 27, 16, 0, 0, 0, ct).UTC(), false, false},
		{conESZ6, time.Date(2026, 11, 24, 16, 30, 0, 0, ct).UTC(), false, false},
		{conESZ6, time.Date(2026, 11, 24, 8, 30, 0, 0, ct).UTC(), true, true},
		{conESZ6, time.Date(2026, 11, 24, 15, 14, 0, 0, ct).UTC(), true, true},
		{conESZ6, time.Date(2026, 11, 24, 15, 15, 0, 0, ct).UTC(), true, false},
		{conESZ6, time.Date(2026, 11, 24, 20, 0, 0, 0, ct).UTC(), true, false},
	}
	for _, tt := range tests {
		in := testInstrument(t, tt.id)
		if got := in.InSession(tt.at, false); got != tt.ext {
			t.Errorf("%s InSession(%v, false) = %v", in.LocalSymbol, tt.at, got)
		}
		if got := in.InSession(tt.at, true); got != tt.rth {
			t.Errorf("%s InSession(%v, true) = %v", in.LocalSymbol, tt.at, got)
		}
	}
}

func TestSessionKindString(t *testing.T) {
	for k, want := range map[SessionKind]string{StockSessions: "stock", ForexSessions: "forex", FuturesCMESessions: "futures-cme", 9: "SessionKind(9)"} {
		if k.String() != want {
			t.Errorf("%d: %q", int(k), k.String())
		}
	}
}

func TestLocationFallback(t *testing.T) {
	for _, zone := range []string{"", "Not/AZone"} {
		in := &Instrument{TimeZoneID: zone}
		if got := in.Location().String(); got != "US/Eastern" {
			t.Errorf("zone %q: location %s", zone, got)
		}
	}
}
