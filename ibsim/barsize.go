package ibsim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RequestError is an IB error answered for one request: the gateway sends it
// as an error message carrying the request id, the code and the text.
type RequestError struct {
	Code int
	Msg  string
}

// Error renders the code and the text.
func (e *RequestError) Error() string { return fmt.Sprintf("ib error %d: %s", e.Code, e.Msg) }

// IB error codes this data layer answers with.
const (
	// CodeNoSecDef (200): no security definition, or an ambiguous one.
	CodeNoSecDef = 200
	// CodeHMDS (162): the historical data farm refused or found nothing.
	CodeHMDS = 162
	// CodeValidation (321): the request failed the gateway's validation.
	CodeValidation = 321
)

// hmdsPrefix opens every error 162 text; clients match on the text after it.
const hmdsPrefix = "Historical Market Data Service error message:"

// BarSize is a parsed historical bar size setting. Exactly one of Dur
// (intraday sizes), Days (1 day = 1, 1 week = 7) or Months (1 month) is set.
type BarSize struct {
	Spec   string        // IB's spelling, e.g. "5 mins"
	Dur    time.Duration // intraday bar length; zero for day, week and month bars
	Months int           // 1 for "1 month"
	Days   int           // 1 for "1 day", 7 for "1 week"
}

// Intraday reports whether bars of this size are shorter than a day, that is
// aligned on the clock rather than on the trading calendar.
func (b BarSize) Intraday() bool { return b.Dur > 0 }

// Seconds is the nominal length of one bar (a month counts 30 days); IB quotes
// this number in some of its error texts.
func (b BarSize) Seconds() int64 {
	switch {
	case b.Dur > 0:
		return int64(b.Dur / time.Second)
	case b.Days > 0:
		return int64(b.Days) * 86400
	default:
		return int64(b.Months) * 30 * 86400
	}
}

// barSizes lists every bar size IB accepts, in increasing length, spelled as
// IB spells them ("1 secs" with the plural, "1 hour" singular). The order is
// the one the step-size table below refers to.
var barSizes = []BarSize{
	{Spec: "1 secs", Dur: time.Second},
	{Spec: "5 secs", Dur: 5 * time.Second},
	{Spec: "10 secs", Dur: 10 * time.Second},
	{Spec: "15 secs", Dur: 15 * time.Second},
	{Spec: "30 secs", Dur: 30 * time.Second},
	{Spec: "1 min", Dur: time.Minute},
	{Spec: "2 mins", Dur: 2 * time.Minute},
	{Spec: "3 mins", Dur: 3 * time.Minute},
	{Spec: "5 mins", Dur: 5 * time.Minute},
	{Spec: "10 mins", Dur: 10 * time.Minute},
	{Spec: "15 mins", Dur: 15 * time.Minute},
	{Spec: "20 mins", Dur: 20 * time.Minute},
	{Spec: "30 mins", Dur: 30 * time.Minute},
	{Spec: "1 hour", Dur: time.Hour},
	{Spec: "2 hours", Dur: 2 * time.Hour},
	{Spec: "3 hours", Dur: 3 * time.Hour},
	{Spec: "4 hours", Dur: 4 * time.Hour},
	{Spec: "8 hours", Dur: 8 * time.Hour},
	{Spec: "1 day", Days: 1},
	{Spec: "1 week", Days: 7},
	{Spec: "1 month", Months: 1},
}

// barSizeAliases: IB's own rejection text lists week and month bars as "1W"
// and "1M", so a client may send those; both spellings are served.
var barSizeAliases = map[string]string{"1W": "1 week", "1M": "1 month"}

// barSizeInvalidMsg is IB's 321 text for an unknown bar size setting, as
// recorded from a live gateway (the 'bK' tag is IB's internal field code).
const barSizeInvalidMsg = "Error validating request.-'bK' : cause - Historical data bar size setting is invalid. " +
	"Legal ones are: 1 secs, 5 secs, 10 secs, 15 secs, 30 secs, 1 min, 2 mins, 3 mins, 5 mins, 10 mins, " +
	"15 mins, 20 mins, 30 mins, 1 hour, 2 hours, 3 hours, 4 hours, 8 hours, 1 day, 1W, 1M"

// ParseBarSize parses an IB bar size setting. Spelling is exact, as on the
// gateway: "1 secs" with the plural (IB has refused "1 sec" since 2023) but
// "1 hour" and "1 min" singular.
func ParseBarSize(s string) (BarSize, error) {
	if alias, ok := barSizeAliases[s]; ok {
		s = alias
	}
	for _, b := range barSizes {
		if b.Spec == s {
			return b, nil
		}
	}
	return BarSize{}, &RequestError{Code: CodeValidation, Msg: barSizeInvalidMsg}
}

// barIndex is the position of b in barSizes, -1 if b is not one of them.
func barIndex(b BarSize) int {
	for i, x := range barSizes {
		if x.Spec == b.Spec {
			return i
		}
	}
	return -1
}

// Duration is a parsed historical duration string "N U": N a positive
// integer, U one of S (seconds), D (days), W (weeks), M (months), Y (years).
type Duration struct {
	N    int
	Unit byte
}

// String renders the duration as IB spells it, e.g. "2 D".
func (d Duration) String() string { return strconv.Itoa(d.N) + " " + string(d.Unit) }

// durationInvalidMsg is a paraphrase: the exact IB wording for a malformed
// duration string could not be confirmed from public sources.
const durationInvalidMsg = "Error validating request.-'bS' : cause - Historical data request duration format is invalid."

// ParseDuration parses "N S|D|W|M|Y" with exactly one space, as IB documents it.
func ParseDuration(s string) (Duration, error) {
	bad := &RequestError{Code: CodeValidation, Msg: durationInvalidMsg}
	num, unit, ok := strings.Cut(s, " ")
	if !ok || len(unit) != 1 || num == "" {
		return Duration{}, bad
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || num[0] == '+' {
		return Duration{}, bad
	}
	switch unit[0] {
	case 'S', 'D', 'W', 'M', 'Y':
		return Duration{N: n, Unit: unit[0]}, nil
	}
	return Duration{}, bad
}

// Start is the beginning of a query of this duration ending at end. Days,
// weeks, months and years are calendar steps in loc, so "1 D" ending 10:00
// starts at 10:00 the previous day even across a daylight-saving change.
// Seconds are elapsed time. (History.Bars counts "N D" in trading sessions
// instead, as IB does; this is the plain calendar reading.)
func (d Duration) Start(end time.Time, loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	t := end.In(loc)
	switch d.Unit {
	case 'S':
		return end.Add(-time.Duration(d.N) * time.Second)
	case 'D':
		return t.AddDate(0, 0, -d.N)
	case 'W':
		return t.AddDate(0, 0, -7*d.N)
	case 'M':
		return backMonths(t, d.N)
	case 'Y':
		return backMonths(t, 12*d.N)
	}
	return end
}

// backMonths steps t back n calendar months keeping the wall time, clamping
// the day to the target month's length: "1 M" before March 31 is February
// 28 (or 29), not March 3 as plain AddDate normalisation would give.
func backMonths(t time.Time, n int) time.Time {
	y, m, d := t.Date()
	first := time.Date(y, m-time.Month(n), 1, 12, 0, 0, 0, time.UTC)
	last := time.Date(first.Year(), first.Month()+1, 0, 12, 0, 0, 0, time.UTC).Day()
	return time.Date(first.Year(), first.Month(), min(d, last), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), t.Location())
}

// nominalSeconds measures a duration for the step-size comparison only:
// a month counts 31 days and a year 366 so that any calendar month or year
// fits within its own table row.
func (d Duration) nominalSeconds() int64 {
	n := int64(d.N)
	switch d.Unit {
	case 'S':
		return n
	case 'D':
		return n * 86400
	case 'W':
		return n * 7 * 86400
	case 'M':
		return n * 31 * 86400
	case 'Y':
		return n * 366 * 86400
	}
	return 0
}

// stepRow is one row of IB's historical data step-size table: for a query of
// duration Dur, bar sizes from MinBar to MaxBar (inclusive) are valid.
type stepRow struct {
	Dur            Duration
	MinBar, MaxBar string
}

// stepTable is IB's published step-size table ("Historical Data
// Limitations"). IB calls it a guideline; this simulator enforces it so that
// a client which respects it works against both, and a client which does not
// is caught here rather than intermittently in production. The longest
// duration allowed for a bar size is the largest row listing that size.
// Rows are ordered by duration.
//
//	duration  bar sizes
//	60 S      1 secs  - 1 min
//	120 S     1 secs  - 2 mins
//	1800 S    1 secs  - 30 mins
//	3600 S    5 secs  - 1 hour
//	14400 S   10 secs - 3 hours
//	28800 S   30 secs - 8 hours
//	1 D       1 min   - 1 day
//	2 D       2 mins  - 1 day
//	1 W       3 mins  - 1 week
//	1 M       30 mins - 1 month
//	1 Y       1 day   - 1 month
//
// The last row is open-ended: day, week and month bars may span any number
// of years (IB serves decades of daily bars in one request), so those bar
// sizes have no maximum duration.
var stepTable = []stepRow{
	{Duration{60, 'S'}, "1 secs", "1 min"},
	{Duration{120, 'S'}, "1 secs", "2 mins"},
	{Duration{1800, 'S'}, "1 secs", "30 mins"},
	{Duration{3600, 'S'}, "5 secs", "1 hour"},
	{Duration{14400, 'S'}, "10 secs", "3 hours"},
	{Duration{28800, 'S'}, "30 secs", "8 hours"},
	{Duration{1, 'D'}, "1 min", "1 day"},
	{Duration{2, 'D'}, "2 mins", "1 day"},
	{Duration{1, 'W'}, "3 mins", "1 week"},
	{Duration{1, 'M'}, "30 mins", "1 month"},
	{Duration{1, 'Y'}, "1 day", "1 month"},
}

// MaxDurationFor returns the longest duration the step-size table allows for
// b; unlimited is true for day, week and month bars (see stepTable).
func MaxDurationFor(b BarSize) (limit Duration, unlimited bool) {
	if !b.Intraday() {
		return Duration{}, true
	}
	bi := barIndex(b)
	for _, row := range stepTable {
		lo, hi := barIndex(BarSize{Spec: row.MinBar}), barIndex(BarSize{Spec: row.MaxBar})
		if bi >= lo && bi <= hi {
			limit = row.Dur // rows are in increasing duration; the last hit wins
		}
	}
	return limit, false
}

// CheckDurationForBarSize rejects a duration longer than the step-size table
// allows for the bar size. IB answers such a query from its data farm with
// error 162 "invalid step: N"; seen live for 1 secs bars over 1 D, where N
// was 1, so N is taken to be the bar length in seconds.
func CheckDurationForBarSize(d Duration, b BarSize) error {
	if barIndex(b) < 0 {
		return &RequestError{Code: CodeValidation, Msg: barSizeInvalidMsg}
	}
	limit, unlimited := MaxDurationFor(b)
	if unlimited || d.nominalSeconds() <= limit.nominalSeconds() {
		return nil
	}
	return &RequestError{Code: CodeHMDS, Msg: fmt.Sprintf("%sinvalid step: %d", hmdsPrefix, b.Seconds())}
}
