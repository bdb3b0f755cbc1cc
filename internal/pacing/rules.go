package pacing

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// IB's historical-data pacing rules (TWS API documentation, "Historical Data
// Limitations"). They apply to bars of SmallBarSeconds or less; the gateway
// answers a violation with error 162 and drops the request.
const (
	IdenticalWindow   = 15 * time.Second // identical requests no closer than this
	SameContractLimit = 5                // requests for one contract/exchange/tick type...
	SameContractWin   = 2 * time.Second  // ...in any window this long (the 6th violates)
	TenMinuteLimit    = 60               // requests of any contract...
	TenMinuteWin      = 10 * time.Minute // ...in any window this long
	SmallBarSeconds   = 30               // the rules above apply to bars this short or shorter
	BidAskWeight      = 2                // BID_ASK counts twice in the two counting rules

	// DefaultMessagesPerSecond stays under the gateway's 50 messages per
	// second per client, leaving room for cancels and keep-alives that do
	// not pass through the scheduler.
	DefaultMessagesPerSecond = 45
	messageWin               = time.Second
)

// Rule names one pacing rule; it labels waits in Stats and tells Penalize
// what to block.
type Rule string

// The rules the scheduler enforces.
const (
	RuleIdentical    Rule = "identical"     // identical requests within 15 s
	RuleSameContract Rule = "same_contract" // 6th request for a contract/exchange/tick type within 2 s
	RuleTenMinutes   Rule = "ten_minutes"   // 61st request within 10 minutes
	RuleMessageRate  Rule = "message_rate"  // more than MessagesPerSecond messages in a second
)

// Request describes one message to the gateway for the pacing rules.
// A historical-data request fills every field; any other message (contract
// details, head timestamp, ...) may leave them all empty and is then held
// only to the message rate.
type Request struct {
	Contract   string // conId, or a symbol key that identifies the contract
	Exchange   string
	WhatToShow string // tick type: TRADES, MIDPOINT, BID_ASK, ...
	End        string // end date-time exactly as sent
	Duration   string // e.g. "1800 S"
	BarSize    string // e.g. "5 secs"
	UseRTH     bool
	// BarSeconds is the bar length in seconds. When zero it is derived from
	// BarSize; when both are empty the request is not a historical one.
	BarSeconds int
}

func (r Request) String() string {
	if r.BarSize == "" && r.BarSeconds == 0 {
		return "message"
	}
	return fmt.Sprintf("%s@%s %s %s %s end=%q rth=%t", r.Contract, r.Exchange, r.tick(), r.Duration, r.BarSize, r.End, r.UseRTH)
}

func (r Request) tick() string { return strings.ToUpper(strings.TrimSpace(r.WhatToShow)) }

// barSeconds returns the bar length, 0 when unknown.
func (r Request) barSeconds() int {
	if r.BarSeconds > 0 {
		return r.BarSeconds
	}
	n, _ := ParseBarSize(r.BarSize)
	return n
}

// paced reports whether the historical rules apply: only to bars of 30
// seconds or less, as IB documents.
func (r Request) paced() bool {
	n := r.barSeconds()
	return n > 0 && n <= SmallBarSeconds
}

// weight is what the request counts for in the counting rules.
func (r Request) weight() int {
	if r.tick() == "BID_ASK" {
		return BidAskWeight
	}
	return 1
}

// ParseBarSize returns the length in seconds of an IB bar size such as
// "1 sec", "5 secs", "1 min", "1 hour", "1 day", "1 week" or "1 month"
// (a month counts as 30 days, which only matters for being over 30 s).
func ParseBarSize(s string) (int, error) {
	f := strings.Fields(strings.ToLower(s))
	if len(f) != 2 {
		return 0, fmt.Errorf("pacing: bar size %q: want \"<n> <unit>\"", s)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("pacing: bar size %q: bad count", s)
	}
	unit := map[string]int{
		"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600,
		"day": 86400, "days": 86400, "week": 7 * 86400, "weeks": 7 * 86400, "month": 30 * 86400, "months": 30 * 86400,
	}[f[1]]
	if unit == 0 {
		return 0, fmt.Errorf("pacing: bar size %q: unknown unit", s)
	}
	return n * unit, nil
}

// limit is one sliding-window rule applied to one key: at most max weight
// in any window of length win.
type limit struct {
	key  string
	rule Rule
	win  time.Duration
	max  int
	w    int // this request's weight under the rule
}

// windows holds the rule windows divided by the time scale.
type windows struct {
	identical, sameContract, tenMinutes, message time.Duration
	perSecond                                    int
	scale                                        float64
}

func newWindows(cfg Config) windows {
	scale := cfg.Scale
	if scale <= 0 {
		scale = 1
	}
	n := cfg.MessagesPerSecond
	if n <= 0 {
		n = DefaultMessagesPerSecond
	}
	sc := func(d time.Duration) time.Duration { return time.Duration(float64(d) / scale) }
	return windows{
		identical:    sc(IdenticalWindow),
		sameContract: sc(SameContractWin),
		tenMinutes:   sc(TenMinuteWin),
		message:      sc(messageWin),
		perSecond:    n,
		scale:        scale,
	}
}

// limits lists the rules a request is subject to. The identical rule is a
// window of one: two identical requests may not share any 15 s window.
func (ws windows) limits(r Request) []limit {
	ls := make([]limit, 0, 4)
	if r.paced() {
		contract := r.Contract + "\x00" + r.Exchange + "\x00" + r.tick()
		identical := contract + "\x00" + r.End + "\x00" + r.Duration + "\x00" + strconv.Itoa(r.barSeconds()) + "\x00" + strconv.FormatBool(r.UseRTH)
		ls = append(ls,
			limit{key: "i\x00" + identical, rule: RuleIdentical, win: ws.identical, max: 1, w: 1},
			limit{key: "c\x00" + contract, rule: RuleSameContract, win: ws.sameContract, max: SameContractLimit, w: r.weight()},
			limit{key: "t", rule: RuleTenMinutes, win: ws.tenMinutes, max: TenMinuteLimit, w: r.weight()},
		)
	}
	// A message is a message whatever it carries: BID_ASK is still one.
	ls = append(ls, limit{key: "m", rule: RuleMessageRate, win: ws.message, max: ws.perSecond, w: 1})
	return ls
}

// blockKey is the key a penalty on rule blocks for request r.
func (ws windows) blockKey(r Request, rule Rule) (string, bool) {
	for _, l := range ws.limits(r) {
		if l.rule == rule {
			return l.key, true
		}
	}
	// A historical rule named for a request the rules do not apply to
	// still blocks the key it would have, so paced requests sharing it wait.
	rp := r
	rp.BarSeconds = 1
	for _, l := range ws.limits(rp) {
		if l.rule == rule {
			return l.key, true
		}
	}
	return "", false
}
