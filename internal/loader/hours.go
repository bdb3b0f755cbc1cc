package loader

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // IB's zone ids must load on machines without a zoneinfo database
)

// The loader needs to know when an instrument trades, so that nights,
// weekends and the daily FX break are not taken for missing bars. IB says
// it in contract details, as a string covering about a week from the
// request:
//
//	20240106:CLOSED;20240107:1715-20240108:1700;20240108:1715-20240109:1700;...
//
// (older gateways write "20240102:0930-1600,1700-1800", without the date
// after the dash). A week is all IB gives, so the loader derives a weekly
// template from it and applies the template to any date, past or future.
//
// Holidays are the price of that: a holiday in the past follows the weekly
// template like any weekday, so its bars look missing. Every load fetches
// such a day once, accepts IB's empty answer ("HMDS query returned no
// data") and moves on; the range endpoint counts the day as a gap. A
// holiday inside the week IB described would, conversely, remove that
// weekday from the template, so a closed Monday-to-Friday date takes the
// schedule of the other weekdays instead.

// zoneAliases maps the abbreviations IB uses in timeZoneId to the zones it
// means: "EST" is New York time all year, not the fixed UTC-5 the IANA
// database calls EST.
var zoneAliases = map[string]string{
	"EST": "US/Eastern", "EDT": "US/Eastern", "CST": "US/Central", "CDT": "US/Central",
	"MST": "US/Mountain", "PST": "US/Pacific", "GMT": "UTC", "JST": "Asia/Tokyo", "HKT": "Asia/Hong_Kong",
	"MET": "MET", "CET": "CET",
}

// loadZone returns IB's time zone id as a location. IB sometimes writes a
// description after the id ("EST (Eastern Standard Time)"); only the first
// word counts.
func loadZone(id string) (*time.Location, error) {
	id = strings.TrimSpace(id)
	if f := strings.Fields(id); len(f) > 0 {
		id = f[0]
	}
	if id == "" {
		return nil, fmt.Errorf("no time zone")
	}
	if alias, ok := zoneAliases[strings.ToUpper(id)]; ok {
		id = alias
	}
	loc, err := time.LoadLocation(id)
	if err != nil || id == "Local" {
		return nil, fmt.Errorf("unknown time zone %q", id)
	}
	return loc, nil
}

// date is a calendar date without a zone; date walking stays free of
// daylight-saving arithmetic.
type date struct {
	y int
	m time.Month
	d int
}

func dateOf(t time.Time) date {
	y, m, d := t.Date()
	return date{y, m, d}
}

func (d date) add(n int) date {
	return dateOf(time.Date(d.y, d.m, d.d+n, 12, 0, 0, 0, time.UTC))
}

func (d date) weekday() time.Weekday {
	return time.Date(d.y, d.m, d.d, 12, 0, 0, 0, time.UTC).Weekday()
}

func (d date) before(o date) bool {
	return time.Date(d.y, d.m, d.d, 0, 0, 0, 0, time.UTC).Before(time.Date(o.y, o.m, o.d, 0, 0, 0, 0, time.UTC))
}

// utc is the date's midnight in UTC: the key of a daily bar.
func (d date) utc() time.Time { return time.Date(d.y, d.m, d.d, 0, 0, 0, 0, time.UTC) }

// at is wall time minute-of-day on the date moved by days, in loc.
func (d date) at(days, minute int, loc *time.Location) time.Time {
	return time.Date(d.y, d.m, d.d+days, 0, minute, 0, 0, loc)
}

// shape is one session of a trading date: it opens openBack days before the
// trading date (1 for a FX session opening the evening before) at open
// minutes past midnight, and closes on the trading date at close minutes.
type shape struct {
	openBack    int
	open, close int
}

// Session is one trading session: [Open, Close) belongs to trading Date
// (midnight UTC of the date it closes on, which names its daily bar).
type Session struct {
	Date        time.Time
	Open, Close time.Time
}

// Template is an instrument's weekly session schedule in its time zone.
type Template struct {
	loc  *time.Location
	days [7][]shape // by the weekday of the trading date
	// Assumed is true when IB gave no usable hours and the template is
	// every day, all day: then nights and weekends look like gaps.
	Assumed bool
}

// Location is the instrument's time zone.
func (t *Template) Location() *time.Location { return t.loc }

// allDay is the template used when the hours cannot be read: every bar
// slot is expected, so a load asks for everything once and accepts the
// empty answers.
func allDay(loc *time.Location) *Template {
	t := &Template{loc: loc, Assumed: true}
	for i := range t.days {
		t.days[i] = []shape{{0, 0, 24 * 60}}
	}
	return t
}

// ParseHours builds the weekly template from IB's tradingHours or
// liquidHours string in time zone tz. An empty string gives the all-day
// template (see Template.Assumed); a malformed one is an error.
func ParseHours(hours, tz string) (*Template, error) {
	loc, err := loadZone(tz)
	if err != nil {
		return nil, fmt.Errorf("trading hours: %w", err)
	}
	hours = strings.TrimSpace(hours)
	if hours == "" {
		return allDay(loc), nil
	}
	byDate := map[date][]shape{}
	for _, entry := range strings.Split(hours, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		day, rest, ok := strings.Cut(entry, ":")
		d, err := parseDate(day)
		if !ok || err != nil || len(day) != 8 {
			return nil, fmt.Errorf("trading hours: entry %q: want yyyyMMdd:...", entry)
		}
		if strings.EqualFold(rest, "CLOSED") {
			continue
		}
		for _, r := range strings.Split(rest, ",") {
			td, sh, err := parseRange(d, r)
			if err != nil {
				return nil, fmt.Errorf("trading hours: entry %q: %w", entry, err)
			}
			byDate[td] = append(byDate[td], sh)
		}
	}
	t := &Template{loc: loc}
	// Several dates may share a weekday (IB lists eight days or so): the
	// most common schedule wins, then the longest, because the odd one out
	// is usually a half day.
	type cand struct {
		shapes []shape
		n      int
	}
	var perDay [7]map[string]*cand
	for d, shapes := range byDate {
		sort.Slice(shapes, func(i, j int) bool {
			return shapes[i].openBack > shapes[j].openBack || shapes[i].openBack == shapes[j].openBack && shapes[i].open < shapes[j].open
		})
		wd := d.weekday()
		if perDay[wd] == nil {
			perDay[wd] = map[string]*cand{}
		}
		k := fmt.Sprint(shapes)
		if c := perDay[wd][k]; c != nil {
			c.n++
		} else {
			perDay[wd][k] = &cand{shapes, 1}
		}
	}
	best := func(m map[string]*cand) []shape {
		var b *cand
		for _, c := range m {
			if b == nil || c.n > b.n || c.n == b.n && (length(c.shapes) > length(b.shapes) ||
				length(c.shapes) == length(b.shapes) && fmt.Sprint(c.shapes) < fmt.Sprint(b.shapes)) {
				b = c
			}
		}
		if b == nil {
			return nil
		}
		return b.shapes
	}
	all := map[string]*cand{}
	for wd := range perDay {
		t.days[wd] = best(perDay[wd])
		if wd != int(time.Saturday) && wd != int(time.Sunday) && t.days[wd] != nil {
			k := fmt.Sprint(t.days[wd])
			if c := all[k]; c != nil {
				c.n++
			} else {
				all[k] = &cand{t.days[wd], 1}
			}
		}
	}
	// A Monday-to-Friday date IB marked closed (or did not list) is taken
	// for a holiday, not a weekly closure: that weekday gets the usual
	// weekday schedule.
	usual := best(all)
	for wd := time.Monday; wd <= time.Friday; wd++ {
		if t.days[wd] == nil {
			t.days[wd] = usual
		}
	}
	if usual == nil {
		return nil, fmt.Errorf("trading hours %q: no session at all", hours)
	}
	return t, nil
}

// length is the total minutes of a day's sessions.
func length(shapes []shape) int {
	n := 0
	for _, s := range shapes {
		n += s.close + s.openBack*24*60 - s.open
	}
	return n
}

func parseDate(s string) (date, error) {
	t, err := time.Parse("20060102", strings.TrimSpace(s))
	if err != nil {
		return date{}, err
	}
	return dateOf(t), nil
}

// parseHHMM reads "0930" as minutes past midnight; "2400" is allowed.
func parseHHMM(s string) (int, error) {
	if len(s) != 4 {
		return 0, fmt.Errorf("time %q: want HHmm", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n/100 > 24 || n%100 > 59 || n > 2400 {
		return 0, fmt.Errorf("time %q: want HHmm", s)
	}
	return n/100*60 + n%100, nil
}

// parseRange reads one range of the entry dated d: "0930-20240102:1600"
// (the open's date is d) or "0930-1600". It returns the trading date (the
// date the session closes on) and the shape.
func parseRange(d date, r string) (date, shape, error) {
	from, to, ok := strings.Cut(strings.TrimSpace(r), "-")
	if !ok {
		return date{}, shape{}, fmt.Errorf("range %q: want open-close", r)
	}
	od := d
	if day, hm, ok := strings.Cut(from, ":"); ok {
		var err error
		if od, err = parseDate(day); err != nil {
			return date{}, shape{}, fmt.Errorf("range %q: %w", r, err)
		}
		from = hm
	}
	open, err := parseHHMM(from)
	if err != nil {
		return date{}, shape{}, fmt.Errorf("range %q: %w", r, err)
	}
	cd, explicit := od, false
	if day, hm, ok := strings.Cut(to, ":"); ok {
		if cd, err = parseDate(day); err != nil {
			return date{}, shape{}, fmt.Errorf("range %q: %w", r, err)
		}
		to, explicit = hm, true
	}
	cl, err := parseHHMM(to)
	if err != nil {
		return date{}, shape{}, fmt.Errorf("range %q: %w", r, err)
	}
	if !explicit && cl <= open {
		cd = od.add(1) // "1715-1700": closes the next day
	}
	back := 0
	for x := od; x.before(cd); x = x.add(1) {
		back++
		if back > 7 {
			return date{}, shape{}, fmt.Errorf("range %q: a session longer than a week", r)
		}
	}
	if back == 0 && cl <= open || cd.before(od) {
		return date{}, shape{}, fmt.Errorf("range %q: closes before it opens", r)
	}
	return cd, shape{openBack: back, open: open, close: cl}, nil
}

// Sessions returns the sessions that overlap [from, to), in order. Sessions
// of one trading date are listed separately when the date has a break.
func (t *Template) Sessions(from, to time.Time) []Session {
	if !from.Before(to) {
		return nil
	}
	first := dateOf(from.In(t.loc)).add(-1)
	last := dateOf(to.In(t.loc)).add(8) // a session may open up to a week before its trading date
	var out []Session
	for d := first; !last.before(d); d = d.add(1) {
		for _, sh := range t.days[d.weekday()] {
			o, c := d.at(-sh.openBack, sh.open, t.loc), d.at(0, sh.close, t.loc)
			if c.After(from) && o.Before(to) && o.Before(c) {
				out = append(out, Session{Date: d.utc(), Open: o.UTC(), Close: c.UTC()})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Open.Before(out[j].Open) })
	return out
}

// slotAnchor is the start of the bar slot containing a session's open: IB
// aligns intraday bars to multiples of the bar size from local midnight,
// and the first bar of a session starts at the open (a 1 hour bar of a
// 09:30 open lasts 30 minutes). No session spans a daylight-saving change,
// so every slot of a session is anchor + k*bar.
func slotAnchor(open time.Time, bar time.Duration, loc *time.Location) time.Time {
	lt := open.In(loc)
	sod := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute + time.Duration(lt.Second())*time.Second
	return open.Add(-(sod % bar))
}

// floorSlot is the last slot boundary of the session at or before x.
func floorSlot(anchor, x time.Time, bar time.Duration) time.Time {
	if x.Before(anchor) {
		return anchor
	}
	return anchor.Add(x.Sub(anchor) / bar * bar)
}

// slots returns the start times of the bars of session s that start in
// [lo, hi), as IB stamps them: a bar straddling the open or head starts
// there. With complete, a bar that would end after hi (a bar in progress)
// is left out.
func slots(s Session, lo, hi, head time.Time, bar time.Duration, loc *time.Location, complete bool) []time.Time {
	from, to := later(s.Open, lo), earlier(s.Close, hi)
	if !from.Before(to) {
		return nil
	}
	anchor := slotAnchor(s.Open, bar, loc)
	var out []time.Time
	for x := floorSlot(anchor, from, bar); x.Before(to); x = x.Add(bar) {
		bs := later(later(x, s.Open), head)
		be := earlier(x.Add(bar), s.Close)
		if bs.Before(lo) || !bs.Before(be) || !bs.Before(hi) || complete && be.After(hi) {
			continue
		}
		out = append(out, bs)
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
