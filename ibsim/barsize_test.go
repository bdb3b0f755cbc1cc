package ibsim

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// requireCode asserts err is a *RequestError with the given code and returns it.
func requireCode(t *testing.T, err error, code int) *RequestError {
	t.Helper()
	var re *RequestError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RequestError", err, err)
	}
	if re.Code != code {
		t.Fatalf("code = %d (%q), want %d", re.Code, re.Msg, code)
	}
	return re
}

func TestParseBarSizeAccepted(t *testing.T) {
	tests := []struct {
		spec         string
		canonical    string
		dur          time.Duration
		days, months int
	}{
		{"1 secs", "1 secs", time.Second, 0, 0},
		{"5 secs", "5 secs", 5 * time.Second, 0, 0},
		{"10 secs", "10 secs", 10 * time.Second, 0, 0},
		{"15 secs", "15 secs", 15 * time.Second, 0, 0},
		{"30 secs", "30 secs", 30 * time.Second, 0, 0},
		{"1 min", "1 min", time.Minute, 0, 0},
		{"2 mins", "2 mins", 2 * time.Minute, 0, 0},
		{"3 mins", "3 mins", 3 * time.Minute, 0, 0},
		{"5 mins", "5 mins", 5 * time.Minute, 0, 0},
		{"10 mins", "10 mins", 10 * time.Minute, 0, 0},
		{"15 mins", "15 mins", 15 * time.Minute, 0, 0},
		{"20 mins", "20 mins", 20 * time.Minute, 0, 0},
		{"30 mins", "30 mins", 30 * time.Minute, 0, 0},
		{"1 hour", "1 hour", time.Hour, 0, 0},
		{"2 hours", "2 hours", 2 * time.Hour, 0, 0},
		{"3 hours", "3 hours", 3 * time.Hour, 0, 0},
		{"4 hours", "4 hours", 4 * time.Hour, 0, 0},
		{"8 hours", "8 hours", 8 * time.Hour, 0, 0},
		{"1 day", "1 day", 0, 1, 0},
		{"1 week", "1 week", 0, 7, 0},
		{"1 month", "1 month", 0, 0, 1},
		{"1W", "1 week", 0, 7, 0},
		{"1M", "1 month", 0, 0, 1},
	}
	for _, tt := range tests {
		b, err := ParseBarSize(tt.spec)
		if err != nil {
			t.Errorf("ParseBarSize(%q): %v", tt.spec, err)
			continue
		}
		if b.Spec != tt.canonical || b.Dur != tt.dur || b.Days != tt.days || b.Months != tt.months {
			t.Errorf("ParseBarSize(%q) = %+v", tt.spec, b)
		}
		if b.Intraday() != (tt.dur > 0) {
			t.Errorf("%q Intraday() = %v", tt.spec, b.Intraday())
		}
		if tt.dur > 0 && b.Seconds() != int64(tt.dur/time.Second) {
			t.Errorf("%q Seconds() = %d", tt.spec, b.Seconds())
		}
		if tt.dur > 0 && (24*time.Hour)%tt.dur != 0 {
			t.Errorf("%q does not divide a day; alignment from midnight assumes it does", tt.spec)
		}
	}
}

func TestParseBarSizeRejected(t *testing.T) {
	for _, s := range []string{"", "1 sec", "1 hours", "1 mins", "60 mins", "1 Day", "1 days", "5 min", "1  min", " 1 min", "2 days", "1w", "1 year", "45 secs"} {
		_, err := ParseBarSize(s)
		re := requireCode(t, err, 321)
		if !strings.HasPrefix(re.Msg, "Error validating request") || !strings.Contains(re.Msg, "bar size setting is invalid") {
			t.Errorf("ParseBarSize(%q) message %q", s, re.Msg)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]Duration{
		"60 S": {60, 'S'}, "1 D": {1, 'D'}, "2 W": {2, 'W'}, "6 M": {6, 'M'}, "10 Y": {10, 'Y'}, "86400 S": {86400, 'S'},
	}
	for s, want := range good {
		d, err := ParseDuration(s)
		if err != nil || d != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, d, err, want)
		}
		if d.String() != s {
			t.Errorf("%v.String() = %q", d, d.String())
		}
	}
	for _, s := range []string{"", "1D", "D", "0 D", "-1 D", "+1 D", "1 d", "1  D", "1 X", "1 DD", "abc S", "1.5 D", " 1 D", "1 D "} {
		_, err := ParseDuration(s)
		re := requireCode(t, err, 321)
		if !strings.HasPrefix(re.Msg, "Error validating request") {
			t.Errorf("ParseDuration(%q) message %q", s, re.Msg)
		}
	}
}

func TestDurationStart(t *testing.T) {
	ny, err := loadZone("US/Eastern")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		d        string
		end, out time.Time
	}{
		{"3600 S", time.Date(2026, 3, 9, 10, 0, 0, 0, ny), time.Date(2026, 3, 9, 9, 0, 0, 0, ny)},
		// DST began 2026-03-08: the calendar day back is 23 elapsed hours.
		{"1 D", time.Date(2026, 3, 9, 1, 30, 0, 0, ny), time.Date(2026, 3, 8, 1, 30, 0, 0, ny)},
		{"1 W", time.Date(2026, 3, 12, 10, 0, 0, 0, ny), time.Date(2026, 3, 5, 10, 0, 0, 0, ny)},
		{"1 M", time.Date(2026, 3, 31, 10, 0, 0, 0, ny), time.Date(2026, 2, 28, 10, 0, 0, 0, ny)},
		{"1 M", time.Date(2024, 3, 31, 10, 0, 0, 0, ny), time.Date(2024, 2, 29, 10, 0, 0, 0, ny)},
		{"13 M", time.Date(2026, 1, 15, 10, 0, 0, 0, ny), time.Date(2024, 12, 15, 10, 0, 0, 0, ny)},
		{"1 Y", time.Date(2025, 2, 28, 10, 0, 0, 0, ny), time.Date(2024, 2, 28, 10, 0, 0, 0, ny)},
		{"1 Y", time.Date(2024, 2, 29, 10, 0, 0, 0, ny), time.Date(2023, 2, 28, 10, 0, 0, 0, ny)},
	}
	for _, tt := range tests {
		d, err := ParseDuration(tt.d)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Start(tt.end.UTC(), ny); !got.Equal(tt.out) {
			t.Errorf("%s before %v = %v, want %v", tt.d, tt.end, got, tt.out)
		}
	}
	if d := (Duration{1, 'D'}); !d.Start(time.Unix(86400*10, 0), nil).Equal(time.Unix(86400*9, 0)) {
		t.Error("nil location should mean UTC")
	}
}

func TestCheckDurationForBarSize(t *testing.T) {
	tests := []struct {
		bar, dur string
		ok       bool
	}{
		{"1 secs", "60 S", true},
		{"1 secs", "1800 S", true},
		{"1 secs", "1801 S", false},
		{"1 secs", "1 D", false},
		{"5 secs", "3600 S", true},
		{"5 secs", "2 D", false},
		{"10 secs", "14400 S", true},
		{"15 secs", "14401 S", false},
		{"30 secs", "28800 S", true},
		{"30 secs", "1 D", false},
		{"1 min", "1 D", true},
		{"1 min", "86400 S", true},
		{"1 min", "2 D", false},
		{"2 mins", "2 D", true},
		{"2 mins", "3 D", false},
		{"3 mins", "1 W", true},
		{"3 mins", "7 D", true},
		{"20 mins", "8 D", false},
		{"30 mins", "1 M", true},
		{"30 mins", "31 D", true},
		{"1 hour", "2 M", false},
		{"8 hours", "1 Y", false},
		{"1 day", "1 Y", true},
		{"1 day", "30 Y", true},
		{"1 week", "100 Y", true},
		{"1 month", "20 Y", true},
		{"1 day", "60 S", true},
	}
	for _, tt := range tests {
		b, err := ParseBarSize(tt.bar)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ParseDuration(tt.dur)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckDurationForBarSize(d, b)
		if tt.ok {
			if err != nil {
				t.Errorf("%s over %s: %v", tt.bar, tt.dur, err)
			}
			continue
		}
		re := requireCode(t, err, 162)
		if !strings.HasPrefix(re.Msg, "Historical Market Data Service error message:") {
			t.Errorf("%s over %s: message %q", tt.bar, tt.dur, re.Msg)
		}
	}
	requireCode(t, CheckDurationForBarSize(Duration{1, 'D'}, BarSize{Spec: "7 mins", Dur: 7 * time.Minute}), 321)
}

// TestStepTableShape guards the table: every intraday size has a maximum,
// and larger bars never get a shorter maximum.
func TestStepTableShape(t *testing.T) {
	var prev int64
	for _, b := range barSizes {
		limit, unlimited := MaxDurationFor(b)
		if !b.Intraday() {
			if !unlimited {
				t.Errorf("%s should be unlimited", b.Spec)
			}
			continue
		}
		n := limit.nominalSeconds()
		if n == 0 || n < prev {
			t.Errorf("%s: max %v (after %d s)", b.Spec, limit, prev)
		}
		if n < b.Seconds() {
			t.Errorf("%s: max %v shorter than one bar", b.Spec, limit)
		}
		prev = n
	}
	for _, row := range stepTable {
		if barIndex(BarSize{Spec: row.MinBar}) < 0 || barIndex(BarSize{Spec: row.MaxBar}) < 0 {
			t.Errorf("row %v names an unknown bar size", row)
		}
	}
}
