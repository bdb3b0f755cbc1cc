package ibsim

import (
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // IB zone ids must load on machines without a zoneinfo database
)

// SessionKind selects an instrument's weekly trading schedule. All times are
// wall-clock times in the instrument's zone (Instrument.TimeZoneID).
//
// Holidays are not modelled: every Monday to Friday is a trading day and
// every weekend is closed. The simulator needs a calendar that clients can
// predict and test against, not an exchange calendar.
type SessionKind int

const (
	// StockSessions: US equities. Trading (extended hours) 04:00-20:00 and
	// liquid (regular hours, RTH) 09:30-16:00, Monday to Friday, US/Eastern.
	StockSessions SessionKind = iota
	// ForexSessions: IDEALPRO spot FX, open from Sunday 17:15 to Friday 17:00
	// US/Eastern with a daily break 17:00-17:15. Each session belongs to the
	// trading date on which it closes. FX has no separate regular hours, so
	// liquid hours equal trading hours.
	ForexSessions
	// FuturesCMESessions: CME Globex futures, open from Sunday 17:00 to Friday
	// 16:00 US/Central with a daily break 16:00-17:00, each session belonging
	// to the trading date on which it closes. Liquid hours (RTH) are 08:30-15:15
	// on each trading date.
	FuturesCMESessions
)

// String names the kind for logs and test output.
func (k SessionKind) String() string {
	switch k {
	case StockSessions:
		return "stock"
	case ForexSessions:
		return "forex"
	case FuturesCMESessions:
		return "futures-cme"
	}
	return "SessionKind(" + strconv.Itoa(int(k)) + ")"
}

// zoneCache keeps loaded zones: loading one from the embedded database parses
// it each time, far too slow for per-request use.
var zoneCache sync.Map // zone id -> *time.Location

// loadZone loads an IANA zone (IB's ids such as "US/Eastern" are IANA links)
// through the cache.
func loadZone(id string) (*time.Location, error) {
	if l, ok := zoneCache.Load(id); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(id)
	if err != nil {
		return nil, err
	}
	zoneCache.Store(id, l)
	return l, nil
}

// Location is the instrument's time zone; an unknown or empty TimeZoneID
// falls back to US/Eastern, the zone of most of the catalog.
func (in *Instrument) Location() *time.Location {
	if in.TimeZoneID != "" {
		if l, err := loadZone(in.TimeZoneID); err == nil {
			return l
		}
	}
	l, err := loadZone("US/Eastern")
	if err != nil {
		return time.UTC
	}
	return l
}

// civil is a calendar date without a zone; it keeps date walking free of
// time.Time arithmetic and of daylight-saving surprises.
type civil struct {
	y int
	m time.Month
	d int
}

// civilOf is the date of t in t's own location.
func civilOf(t time.Time) civil {
	y, m, d := t.Date()
	return civil{y, m, d}
}

// add moves the date by n days; time.Date normalises the overflow.
func (c civil) add(n int) civil {
	y, m, d := time.Date(c.y, c.m, c.d+n, 12, 0, 0, 0, time.UTC).Date()
	return civil{y, m, d}
}

// weekday of the date.
func (c civil) weekday() time.Weekday {
	return time.Date(c.y, c.m, c.d, 12, 0, 0, 0, time.UTC).Weekday()
}

// at is the instant of wall time h:mi on the date, day days later, in loc.
func (c civil) at(day, h, mi int, loc *time.Location) time.Time {
	return time.Date(c.y, c.m, c.d+day, h, mi, 0, 0, loc)
}

// before orders dates.
func (c civil) before(o civil) bool {
	if c.y != o.y {
		return c.y < o.y
	}
	if c.m != o.m {
		return c.m < o.m
	}
	return c.d < o.d
}

// ymd renders the date as IB does, yyyyMMdd.
func (c civil) ymd() string {
	var b [8]byte
	return string(appendYMD(b[:0], c.y, int(c.m), c.d))
}

// appendYMD appends yyyyMMdd.
func appendYMD(b []byte, y, m, d int) []byte {
	b = append(b, byte('0'+y/1000%10), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10))
	b = append(b, byte('0'+m/10), byte('0'+m%10), byte('0'+d/10), byte('0'+d%10))
	return b
}

// session returns the session of trading date td (Monday to Friday; ok is
// false on weekends): trading hours when rth is false, liquid hours when true.
// Daylight-saving changes happen early on Sunday, when every kind is closed,
// so no session ever spans one.
func (k SessionKind) session(td civil, rth bool, loc *time.Location) (open, close time.Time, ok bool) {
	switch td.weekday() {
	case time.Saturday, time.Sunday:
		return time.Time{}, time.Time{}, false
	}
	switch k {
	case ForexSessions:
		return td.at(-1, 17, 15, loc), td.at(0, 17, 0, loc), true
	case FuturesCMESessions:
		if rth {
			return td.at(0, 8, 30, loc), td.at(0, 15, 15, loc), true
		}
		return td.at(-1, 17, 0, loc), td.at(0, 16, 0, loc), true
	default:
		if rth {
			return td.at(0, 9, 30, loc), td.at(0, 16, 0, loc), true
		}
		return td.at(0, 4, 0, loc), td.at(0, 20, 0, loc), true
	}
}

// sessionAt returns the session containing t, if any.
func (k SessionKind) sessionAt(t time.Time, rth bool, loc *time.Location) (td civil, open, close time.Time, ok bool) {
	d := civilOf(t.In(loc))
	// A session opens at most one day before its trading date.
	for _, cand := range [2]civil{d, d.add(1)} {
		o, c, ok := k.session(cand, rth, loc)
		if ok && !t.Before(o) && t.Before(c) {
			return cand, o, c, true
		}
	}
	return civil{}, time.Time{}, time.Time{}, false
}

// InSession reports whether t (in any zone) lies inside the instrument's
// trading hours (rth false: extended hours for stocks, the full session for
// forex and futures) or liquid hours (rth true) on a trading day.
func (in *Instrument) InSession(t time.Time, rth bool) bool {
	_, _, _, ok := in.Sessions.sessionAt(t, rth, in.Location())
	return ok
}

// nextOpen returns the earliest instant at or after t inside a session.
func (in *Instrument) nextOpen(t time.Time, rth bool) time.Time {
	loc := in.Location()
	if _, _, _, ok := in.Sessions.sessionAt(t, rth, loc); ok {
		return t
	}
	d := civilOf(t.In(loc))
	for i := 0; i < 10; i++ {
		if o, _, ok := in.Sessions.session(d.add(i), rth, loc); ok && !o.Before(t) {
			return o
		}
	}
	return t
}

// TradingHours renders the instrument's trading hours in IB's contract
// details format for the 7 days starting on the day of now in the
// instrument's zone, e.g. "20240106:CLOSED;20240107:1715-20240108:1700;...".
func (in *Instrument) TradingHours(now time.Time) string { return in.hours(now, false) }

// LiquidHours renders the liquid (regular) hours in the same format.
func (in *Instrument) LiquidHours(now time.Time) string { return in.hours(now, true) }

// hours builds IB's current (since TWS 970) hours string: ranges carry the
// date on both sides ("yyyyMMdd:HHmm-yyyyMMdd:HHmm") so a session crossing
// midnight reads naturally, each range listed under the date it opens; a date
// touched by no session at all reads "yyyyMMdd:CLOSED". A date covered only by
// the tail of the previous evening's session (Friday for FX and futures) has
// no entry of its own. The session in progress at the start of today, if it
// opened yesterday, leads the list, as a client checking "open now?" needs it.
func (in *Instrument) hours(now time.Time, rth bool) string {
	loc := in.Location()
	today := civilOf(now.In(loc))
	first, last := today.at(0, 0, 0, loc), today.at(7, 0, 0, loc)
	b := make([]byte, 0, 256)
	for i := -1; i < 7; i++ {
		day := today.add(i)
		dayStart, dayEnd := day.at(0, 0, 0, loc), day.at(1, 0, 0, loc)
		touched := false
		// Trading dates whose session may open on or touch this day.
		for j := 0; j <= 1; j++ {
			o, c, ok := in.Sessions.session(day.add(j), rth, loc)
			if !ok || !o.Before(dayEnd) || !c.After(dayStart) {
				continue
			}
			touched = true
			if civilOf(o.In(loc)) != day || !c.After(first) || !o.Before(last) {
				continue
			}
			if len(b) > 0 {
				b = append(b, ';')
			}
			b = appendHourRange(b, o.In(loc), c.In(loc))
		}
		if !touched && i >= 0 {
			if len(b) > 0 {
				b = append(b, ';')
			}
			b = append(b, day.ymd()...)
			b = append(b, ":CLOSED"...)
		}
	}
	return string(b)
}

// appendHourRange appends "yyyyMMdd:HHmm-yyyyMMdd:HHmm".
func appendHourRange(b []byte, o, c time.Time) []byte {
	for i, t := range [2]time.Time{o, c} {
		if i == 1 {
			b = append(b, '-')
		}
		y, m, d := t.Date()
		b = appendYMD(b, y, int(m), d)
		h, mi := t.Hour(), t.Minute()
		b = append(b, ':', byte('0'+h/10), byte('0'+h%10), byte('0'+mi/10), byte('0'+mi%10))
	}
	return b
}
