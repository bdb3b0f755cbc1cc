package ibsim_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

func TestMessageRateLimit(t *testing.T) {
	const sent, limit = 60, 50
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	other, _ := connect(t, srv, 2)

	// One write, so all 60 arrive well within a second.
	var burst []byte
	for i := 0; i < sent; i++ {
		b, err := tws.Encode(&tws.ReqCurrentTime{}, c.ver)
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, b...)
	}
	if err := c.write(burst); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < sent; i++ {
		m, err := c.next(replyTimeout)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		// The first 50 are served; each one over the limit gets error 100
		// and is not processed.
		if i < limit && !isCurrentTime(m) || i >= limit && !isErr(ibsim.CodeRateExceeded, tws.NoRequestID)(m) {
			t.Errorf("reply %d: %s", i, describe(m))
		}
	}
	c.expectQuiet(100*time.Millisecond, "reply beyond the 60 requests", anyMsg)
	if got := srv.State().Counters.RateViolations; got != sent-limit {
		t.Errorf("rate violations counted %d, want %d", got, sent-limit)
	}
	other.currentTime() // the limit is per client
}

// pacingClient sends historical requests and classifies the answers.
type pacingClient struct {
	t  *testing.T
	c  *rawClient
	id int64
}

// ask sends every request in one write and returns, per request, "" for
// data or the error text.
func (p *pacingClient) ask(reqs ...*tws.ReqHistoricalData) []string {
	p.t.Helper()
	var buf []byte
	for _, r := range reqs {
		p.id++
		r.ReqID = p.id
		b, err := tws.Encode(r, p.c.ver)
		if err != nil {
			p.t.Fatal(err)
		}
		buf = append(buf, b...)
	}
	if err := p.c.write(buf); err != nil {
		p.t.Fatal(err)
	}
	out := make([]string, len(reqs))
	for i, r := range reqs {
		switch m := p.c.waitFor(replyTimeout, "historical reply", isReply(r.ReqID)).(type) {
		case *tws.HistoricalData:
		case *tws.ErrorMsg:
			out[i] = m.Text
			if m.Code != ibsim.CodeHMDS {
				p.t.Fatalf("request %d (%s %s): unexpected error %d %q", r.ReqID, r.Duration, r.WhatToShow, m.Code, m.Text)
			}
		}
	}
	return out
}

func paced(text string) bool { return strings.Contains(text, "pacing violation") }

// wantPaced checks which answers are pacing violations.
func wantPaced(t *testing.T, got []string, want ...bool) {
	t.Helper()
	for i := range got {
		if paced(got[i]) != want[i] {
			t.Errorf("request %d: answer %q, want paced %v", i+1, got[i], want[i])
		}
	}
}

// smallBars is a request for bars of 30 seconds or less, which the pacing
// rules apply to.
func smallBars(c tws.Contract, dur, what string) *tws.ReqHistoricalData {
	return histReq(0, c, "", dur, "30 secs", what)
}

func TestHistoricalPacing(t *testing.T) {
	aapl := stockContract("AAPL")
	t.Run("identical request within 15 s", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c, _ := connect(t, srv, 1)
		p := &pacingClient{t: t, c: c}
		wantPaced(t, p.ask(smallBars(aapl, "1800 S", "TRADES"), smallBars(aapl, "1800 S", "TRADES")), false, true)
		// Another client sending the same request is paced too: the rules
		// are the gateway's, not the connection's.
		c2, _ := connect(t, srv, 2)
		p2 := &pacingClient{t: t, c: c2, id: 100}
		wantPaced(t, p2.ask(smallBars(aapl, "1800 S", "TRADES")), true)
		if got := srv.State().Counters.PacingViolations; got != 2 {
			t.Errorf("pacing violations counted %d, want 2", got)
		}
	})
	t.Run("six for one contract within 2 s", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c, _ := connect(t, srv, 1)
		p := &pacingClient{t: t, c: c}
		var reqs []*tws.ReqHistoricalData
		for _, d := range []string{"60 S", "120 S", "300 S", "600 S", "900 S", "1200 S"} {
			reqs = append(reqs, smallBars(aapl, d, "TRADES"))
		}
		// Another tick type is another key.
		reqs = append(reqs, smallBars(aapl, "1800 S", "MIDPOINT"))
		wantPaced(t, p.ask(reqs...), false, false, false, false, false, true, false)
	})
	t.Run("BID_ASK counts twice for one contract", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c, _ := connect(t, srv, 1)
		p := &pacingClient{t: t, c: c}
		wantPaced(t, p.ask(
			smallBars(aapl, "60 S", "BID_ASK"),
			smallBars(aapl, "120 S", "BID_ASK"),
			smallBars(aapl, "300 S", "BID_ASK"), // 2+2+2 = 6
		), false, false, true)
	})
	t.Run("more than 60 within 10 minutes, BID_ASK counting twice", func(t *testing.T) {
		// 30 BID_ASK requests on 30 instruments weigh 60; the next request
		// of any kind is the 61st. Two clients share the load so that
		// neither passes 50 messages per second.
		srv := startSim(t, ibsim.Config{})
		var contracts []tws.Contract
		for _, in := range ibsim.DefaultCatalog().All() {
			if in.SecType == "STK" || in.SecType == "CASH" {
				contracts = append(contracts, tws.Contract{ConID: in.ConID})
			}
		}
		if len(contracts) < 30 {
			t.Fatalf("catalog has %d stocks and FX pairs, need 30", len(contracts))
		}
		c1, _ := connect(t, srv, 1)
		c2, _ := connect(t, srv, 2)
		p1, p2 := &pacingClient{t: t, c: c1}, &pacingClient{t: t, c: c2, id: 1000}
		for i, p := range []*pacingClient{p1, p2} {
			var reqs []*tws.ReqHistoricalData
			for _, c := range contracts[i*15 : i*15+15] {
				reqs = append(reqs, smallBars(c, "1800 S", "BID_ASK"))
			}
			for j, a := range p.ask(reqs...) {
				if paced(a) {
					t.Fatalf("client %d request %d paced: %q", i+1, j+1, a)
				}
			}
		}
		wantPaced(t, p1.ask(smallBars(aapl, "60 S", "TRADES")), true)
	})
	t.Run("bars over 30 s are never paced", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c, _ := connect(t, srv, 1)
		p := &pacingClient{t: t, c: c}
		var reqs []*tws.ReqHistoricalData
		for i := 0; i < 8; i++ {
			reqs = append(reqs, histReq(0, aapl, "", "1800 S", "1 min", "TRADES"))
		}
		wantPaced(t, p.ask(reqs...), false, false, false, false, false, false, false, false)
	})
	t.Run("windows follow the time scale", func(t *testing.T) {
		// At scale 100 the identical-request window is 150 ms: a repeat is
		// paced at once and admitted again once the window has passed.
		srv := startSim(t, ibsim.Config{TimeScale: 100})
		c, _ := connect(t, srv, 1)
		p := &pacingClient{t: t, c: c}
		start := time.Now()
		wantPaced(t, p.ask(smallBars(aapl, "1800 S", "TRADES")), false)
		var admitted time.Duration
		eventually(t, replyTimeout, "the identical request to be admitted again", func() bool {
			if paced(p.ask(smallBars(aapl, "1800 S", "TRADES"))[0]) {
				return false
			}
			admitted = time.Since(start)
			return true
		})
		if admitted < 150*time.Millisecond {
			t.Errorf("identical request admitted again after %v, want at least 150 ms", admitted)
		}
	})
}

// TestPacingBoundaries drives the pacing rules with explicit times.
func TestPacingBoundaries(t *testing.T) {
	cat := ibsim.DefaultCatalog()
	aapl, _ := cat.ByConID(265598)
	msft, _ := cat.ByConID(272093)
	t0 := time.Date(2025, time.March, 12, 15, 0, 0, 0, time.UTC)
	req := func(dur, what string) *tws.ReqHistoricalData {
		return histReq(1, stockContract("AAPL"), "", dur, "30 secs", what)
	}
	type step struct {
		at    time.Duration // after t0
		in    *ibsim.Instrument
		r     *tws.ReqHistoricalData
		paced string // substring of the rule broken, "" if admitted
	}
	type pacingCase struct {
		name  string
		scale float64
		steps []step
	}
	tests := []pacingCase{
		{name: "identical: paced just inside 15 s, admitted at 15 s", scale: 1, steps: []step{
			{0, aapl, req("60 S", "TRADES"), ""},
			{15*time.Second - time.Nanosecond, aapl, req("60 S", "TRADES"), "identical"},
			{15 * time.Second, aapl, req("60 S", "TRADES"), ""},
		}},
		{name: "identical: another contract is another request, another request id is not", scale: 1, steps: []step{
			{0, aapl, req("60 S", "TRADES"), ""},
			{time.Second, msft, req("60 S", "TRADES"), ""},
			{2 * time.Second, aapl, histReq(99, stockContract("AAPL"), "", "60 S", "30 secs", "TRADES"), "identical"},
		}},
		{name: "same contract: sixth within 2 s paced, admitted once the first ages out", scale: 1, steps: []step{
			{0, aapl, req("60 S", "TRADES"), ""},
			{time.Millisecond, aapl, req("120 S", "TRADES"), ""},
			{2 * time.Millisecond, aapl, req("300 S", "TRADES"), ""},
			{3 * time.Millisecond, aapl, req("600 S", "TRADES"), ""},
			{4 * time.Millisecond, aapl, req("900 S", "TRADES"), ""},
			{2*time.Second - time.Nanosecond, aapl, req("1200 S", "TRADES"), "6 requests"},
			{2 * time.Second, aapl, req("1200 S", "TRADES"), ""},
		}},
		{name: "same contract: BID_ASK weighs two, in any case", scale: 1, steps: []step{
			{0, aapl, req("60 S", "bid_ask"), ""},
			{time.Millisecond, aapl, req("120 S", "BID_ASK"), ""},
			{2 * time.Millisecond, aapl, req("300 S", "TRADES"), ""}, // another tick type
			{3 * time.Millisecond, aapl, req("600 S", "BID_ASK"), "6 requests"},
		}},
		{name: "identical window divided by the time scale", scale: 100, steps: []step{
			{0, aapl, req("60 S", "TRADES"), ""},
			{150*time.Millisecond - time.Nanosecond, aapl, req("60 S", "TRADES"), "identical"},
			{150 * time.Millisecond, aapl, req("60 S", "TRADES"), ""},
		}},
	}

	// Sixty requests 5 s apart (never identical, never six within 2 s),
	// then the 61st: paced inside ten minutes of the first, admitted once
	// the first has aged out.
	sixty := pacingCase{name: "more than 60 within 10 minutes", scale: 1}
	for i := 0; i < 60; i++ {
		sixty.steps = append(sixty.steps, step{time.Duration(i) * 5 * time.Second, aapl, req(fmt.Sprintf("%d S", 60+i), "TRADES"), ""})
	}
	sixty.steps = append(sixty.steps,
		step{10*time.Minute - time.Nanosecond, msft, req("60 S", "TRADES"), "more than 60"},
		step{10 * time.Minute, msft, req("60 S", "TRADES"), ""},
	)
	// Thirty BID_ASK requests on thirty instruments weigh 60.
	thirty := pacingCase{name: "BID_ASK weighs two within 10 minutes", scale: 1}
	for i, in := range cat.All()[:30] {
		thirty.steps = append(thirty.steps, step{time.Duration(i) * time.Millisecond, in, req("60 S", "BID_ASK"), ""})
	}
	thirty.steps = append(thirty.steps, step{time.Second, msft, req("120 S", "MIDPOINT"), "more than 60"})
	tests = append(tests, sixty, thirty)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ibsim.NewPacingProbe(tt.scale)
			for i, s := range tt.steps {
				got := p.Admit(t0.Add(s.at), s.in, s.r)
				if s.paced == "" && got != "" || s.paced != "" && !strings.Contains(got, s.paced) {
					t.Errorf("step %d (+%v %s %s %s): rule %q, want %q", i, s.at, s.in.Symbol, s.r.Duration, s.r.WhatToShow, got, s.paced)
				}
			}
		})
	}
}
