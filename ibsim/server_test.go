package ibsim_test

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

func TestHandshakeNegotiation(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	capped := startSim(t, ibsim.Config{MaxVersion: 170})
	tests := []struct {
		name       string
		srv        *ibsim.Server
		hello      []byte // raw opening bytes; nil means API\0 + v<min>..<max>
		minV, maxV int
		want       int // 0: the gateway must close the connection
	}{
		{name: "ib_async range", srv: srv, minV: 157, maxV: 178, want: 178},
		{name: "stoqey range", srv: srv, minV: 100, maxV: 193, want: 178},
		{name: "wide range", srv: srv, minV: 38, maxV: 225, want: 178},
		{name: "narrow range", srv: srv, minV: 157, maxV: 160, want: 160},
		{name: "bare version", srv: srv, minV: 157, maxV: 157, want: 157},
		{name: "capped by MaxVersion", srv: capped, minV: 157, maxV: 178, want: 170},
		{name: "max below 157", srv: srv, minV: 100, maxV: 156},
		{name: "min above 178", srv: srv, minV: 179, maxV: 200},
		{name: "HTTP request", srv: srv, hello: []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")},
		{name: "prefix without versions", srv: srv, hello: []byte("API\x00\x00\x00\x00\x05hello")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, tt.srv.Addr())
			hello := tt.hello
			if hello == nil {
				var err error
				hello, err = tws.AppendClientHello(nil, tws.ClientHello{MinVersion: tt.minV, MaxVersion: tt.maxV, Options: "+PACEAPI"})
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := c.write(hello); err != nil {
				t.Fatal(err)
			}
			if tt.want == 0 {
				_, err := c.readFrame(replyTimeout)
				if !isClosed(err) {
					t.Fatalf("read after refused handshake: %v, want the connection closed", err)
				}
				return
			}
			h, err := c.readHello(replyTimeout)
			if err != nil {
				t.Fatalf("server hello: %v", err)
			}
			if h.Version != tt.want {
				t.Errorf("server version %d, want %d", h.Version, tt.want)
			}
			if want := testNow.Format("20060102 15:04:05 MST"); h.ConnectionTime != want {
				t.Errorf("connection time %q, want %q", h.ConnectionTime, want)
			}
			// The gateway says nothing more until startApi.
			c.expectQuiet(100*time.Millisecond, "message before startApi", anyMsg)
		})
	}
	if got := srv.State().Counters.HandshakesRejected; got != 4 {
		t.Errorf("handshakes rejected = %d, want 4", got)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	const limit = 200 * time.Millisecond
	srv := startSim(t, ibsim.Config{HandshakeTimeout: limit})
	for _, tt := range []struct {
		name  string
		hello bool
	}{
		{name: "nothing sent"},
		{name: "handshake without startApi", hello: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c := dial(t, srv.Addr())
			if tt.hello {
				if _, err := c.handshake(157, 178); err != nil {
					t.Fatal(err)
				}
			}
			c.expectClosed(limit + replyTimeout)
			if d := time.Since(start); d < limit {
				t.Errorf("closed after %v, want at least %v", d, limit)
			}
		})
	}
	t.Run("started client stays", func(t *testing.T) {
		c, _ := connect(t, srv, 1)
		c.expectQuiet(limit+100*time.Millisecond, "anything", anyMsg)
		c.currentTime()
	})
}

func TestStartupMessages(t *testing.T) {
	tests := []struct {
		name     string
		accounts []string
		want     []string
	}{
		{name: "default paper account", want: []string{"DU0000001"}},
		{name: "configured accounts", accounts: []string{"DU1111111", "U2222222"}, want: []string{"DU1111111", "U2222222"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{Accounts: tt.accounts})
			_, got := connect(t, srv, 7)
			if len(got) != 5 {
				t.Fatalf("startup messages %s, want 5", describeAll(got))
			}
			ma, ok := got[0].(*tws.ManagedAccounts)
			if !ok || !slices.Equal(ma.Accounts, tt.want) {
				t.Errorf("first message %s, want managedAccounts %v", describe(got[0]), tt.want)
			}
			if _, ok := got[1].(*tws.NextValidID); !ok {
				t.Errorf("second message %s, want nextValidId", describe(got[1]))
			}
			for i, code := range []int{ibsim.CodeMarketFarmOK, ibsim.CodeHMDSFarmOK, ibsim.CodeSecDefFarmOK} {
				e, ok := got[2+i].(*tws.ErrorMsg)
				if !ok || e.Code != code || e.ReqID != tws.NoRequestID {
					t.Errorf("message %d: %s, want notice %d for id -1", 2+i, describe(got[2+i]), code)
				}
			}
		})
	}
}

// TestLayoutsAcrossVersions negotiates each version in turn and checks that
// every reply decodes at that version and re-encodes to the same bytes, so
// no field is missing or left over.
func TestLayoutsAcrossVersions(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	for _, ver := range []int{157, 160, 163, 164, 165, 166, 170, 176, 178} {
		t.Run(strconv.Itoa(ver), func(t *testing.T) {
			c := dial(t, srv.Addr())
			h, err := c.handshake(tws.MinServerVersion, ver)
			if err != nil {
				t.Fatal(err)
			}
			if h.Version != ver {
				t.Fatalf("negotiated %d, want %d", h.Version, ver)
			}
			c.send(&tws.StartAPI{ClientID: 1000 + ver})
			var got []tws.Message
			check := func(n int) {
				for i := 0; i < n; i++ {
					p, err := c.readFrame(replyTimeout)
					if err != nil {
						t.Fatalf("after %s: %v", describeAll(got), err)
					}
					m, err := tws.DecodeIncoming(p, ver)
					if err != nil {
						t.Fatalf("decode %q at %d: %v", p, ver, err)
					}
					back, err := tws.Encode(m, ver)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(back[4:], p) {
						t.Errorf("%T at v%d does not round-trip:\n got  %q\n back %q", m, ver, p, back[4:])
					}
					if _, ok := m.(*tws.ErrorMsg); ok {
						want := 5 // 4|2|id|code|text|
						if ver >= tws.VerAdvancedOrderReject {
							want = 6
						}
						if n := bytes.Count(p, []byte{0}); n != want {
							t.Errorf("error message at v%d has %d fields, want %d", ver, n, want)
						}
					}
					got = append(got, m)
				}
			}
			check(5) // startup
			c.send(&tws.ReqContractDetails{ReqID: 1, Contract: stockContract("AAPL")})
			check(2)
			c.send(&tws.ReqMatchingSymbols{ReqID: 2, Pattern: "AAPL"})
			check(1)
			c.send(histReq(3, stockContract("AAPL"), "", "3600 S", "5 mins", "TRADES"))
			check(1)
			c.send(&tws.ReqHeadTimestamp{ReqID: 4, Contract: stockContract("AAPL"), UseRTH: true, WhatToShow: "TRADES", FormatDate: 1})
			check(1)
			c.send(&tws.ReqContractDetails{ReqID: 5, Contract: stockContract("NOSUCHSYM")})
			check(1)
			c.send(&tws.ReqCurrentTime{})
			check(1)

			cd, ok := got[5].(*tws.ContractData)
			if !ok || cd.Details.ConID != 265598 || cd.Details.Symbol != "AAPL" {
				t.Errorf("contract data %s, want AAPL 265598", describe(got[5]))
			}
			ss, ok := got[7].(*tws.SymbolSamples)
			if !ok || len(ss.Descriptions) == 0 {
				t.Fatalf("symbol samples %s", describe(got[7]))
			}
			if d := ss.Descriptions[0]; ver >= tws.VerBondIssuerID && d.Description != "APPLE INC" || ver < tws.VerBondIssuerID && d.Description != "" {
				t.Errorf("v%d: first description %+v", ver, d)
			}
			if hd, ok := got[8].(*tws.HistoricalData); !ok || len(hd.Bars) == 0 {
				t.Errorf("historical data %s", describe(got[8]))
			}
			if _, ok := got[9].(*tws.HeadTimestamp); !ok {
				t.Errorf("head timestamp %s", describe(got[9]))
			}
			if !isErr(ibsim.CodeNoSecDef, 5)(got[10]) {
				t.Errorf("unknown contract: %s, want error 200", describe(got[10]))
			}
			if ct, ok := got[11].(*tws.CurrentTime); !ok || ct.Time != testNow.Unix() {
				t.Errorf("current time %s, want %d", describe(got[11]), testNow.Unix())
			}
		})
	}
}

func TestCurrentTimeAndReqIDs(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	if got := c.currentTime().Time; got != testNow.Unix() {
		t.Errorf("current time %d, want %d", got, testNow.Unix())
	}
	c.send(&tws.ReqIDs{NumIDs: 1})
	c.waitFor(replyTimeout, "nextValidId", isType[*tws.NextValidID])
}

// frontMonth returns the catalog's earliest-expiring future of symbol.
func frontMonth(t *testing.T, symbol string) *ibsim.Instrument {
	t.Helper()
	var front *ibsim.Instrument
	for _, in := range ibsim.DefaultCatalog().All() {
		if in.SecType == "FUT" && in.Symbol == symbol && (front == nil || in.LastTradeDateOrContractMonth < front.LastTradeDateOrContractMonth) {
			front = in
		}
	}
	if front == nil {
		t.Fatalf("no %s future in the catalog", symbol)
	}
	return front
}

func TestContractDetails(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	es := frontMonth(t, "ES")
	tests := []struct {
		name      string
		contract  tws.Contract
		wantConID int64
		wantLocal string
	}{
		{name: "AAPL by symbol", contract: stockContract("AAPL"), wantConID: 265598, wantLocal: "AAPL"},
		{name: "AAPL by conId", contract: tws.Contract{ConID: 265598}, wantConID: 265598, wantLocal: "AAPL"},
		{name: "MSFT", contract: stockContract("MSFT"), wantConID: 272093, wantLocal: "MSFT"},
		{name: "EUR.USD", contract: tws.Contract{Symbol: "EUR", SecType: "CASH", Exchange: "IDEALPRO", Currency: "USD"}, wantConID: 12087792, wantLocal: "EUR.USD"},
		{name: "ES front month", contract: tws.Contract{Symbol: "ES", SecType: "FUT", Exchange: "CME", Currency: "USD"}, wantConID: es.ConID, wantLocal: es.LocalSymbol},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := int64(100 + i)
			c.send(&tws.ReqContractDetails{ReqID: id, Contract: tt.contract})
			m := c.waitFor(replyTimeout, "contract data", isReply(id))
			cd, ok := m.(*tws.ContractData)
			if !ok {
				t.Fatalf("got %s, want contractData", describe(m))
			}
			if d := cd.Details; d.ConID != tt.wantConID || d.LocalSymbol != tt.wantLocal {
				t.Errorf("conId %d localSymbol %q, want %d %q", d.ConID, d.LocalSymbol, tt.wantConID, tt.wantLocal)
			}
			if end := c.waitFor(replyTimeout, "contractDataEnd", isReply(id)); !isType[*tws.ContractDataEnd](end) {
				t.Errorf("got %s, want contractDataEnd", describe(end))
			}
		})
	}
	t.Run("unknown symbol", func(t *testing.T) {
		c.send(&tws.ReqContractDetails{ReqID: 199, Contract: stockContract("NOSUCHSYM")})
		if m := c.waitFor(replyTimeout, "reply", isReply(199)); !isErr(ibsim.CodeNoSecDef, 199)(m) {
			t.Errorf("got %s, want error 200", describe(m))
		}
	})
}

// checkBars verifies bars are in strictly ascending epoch order and OHLC-consistent.
func checkBars(t *testing.T, bars []tws.Bar) []int64 {
	t.Helper()
	times := make([]int64, len(bars))
	for i, b := range bars {
		ts, err := strconv.ParseInt(b.Time, 10, 64)
		if err != nil {
			t.Fatalf("bar %d time %q is not epoch seconds: %v", i, b.Time, err)
		}
		times[i] = ts
		if i > 0 && ts <= times[i-1] {
			t.Errorf("bar %d at %d not after bar %d at %d", i, ts, i-1, times[i-1])
		}
		if b.Low > b.Open || b.Low > b.Close || b.High < b.Open || b.High < b.Close || b.Low <= 0 {
			t.Errorf("bar %d inconsistent: %+v", i, b)
		}
	}
	return times
}

func TestHistoricalData(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	request := func(r *tws.ReqHistoricalData) *tws.HistoricalData {
		t.Helper()
		c.send(r)
		m := c.waitFor(replyTimeout, "historical data", isReply(r.ReqID))
		hd, ok := m.(*tws.HistoricalData)
		if !ok {
			t.Fatalf("request %d: got %s, want historical data", r.ReqID, describe(m))
		}
		return hd
	}

	t.Run("one day of 5 mins", func(t *testing.T) {
		hd := request(histReq(1, stockContract("AAPL"), "", "1 D", "5 mins", "TRADES"))
		times := checkBars(t, hd.Bars)
		ny, _ := time.LoadLocation("America/New_York")
		open := time.Date(2025, time.March, 12, 9, 30, 0, 0, ny)
		if want := int(testNow.Sub(open) / (5 * time.Minute)); len(times) != want {
			t.Errorf("%d bars, want %d (09:30 to 11:00 of regular hours)", len(times), want)
		}
		for _, ts := range times {
			if ts%300 != 0 || ts < open.Unix() || ts >= testNow.Unix() {
				t.Errorf("bar at %s outside 5-minute grid or today's session so far", time.Unix(ts, 0).In(ny))
			}
		}
	})

	t.Run("overlapping windows agree", func(t *testing.T) {
		aapl := stockContract("AAPL")
		a := histReq(2, aapl, "20250312 11:00:00 US/Eastern", "7200 S", "5 mins", "TRADES")
		b := histReq(3, aapl, "20250312 10:00:00 US/Eastern", "7200 S", "5 mins", "TRADES")
		a.UseRTH, b.UseRTH = false, false
		barsA, barsB := request(a).Bars, request(b).Bars
		checkBars(t, barsA)
		checkBars(t, barsB)
		byTime := map[string]tws.Bar{}
		for _, bar := range barsA {
			byTime[bar.Time] = bar
		}
		common := 0
		for _, bar := range barsB {
			if other, ok := byTime[bar.Time]; ok {
				common++
				if other != bar {
					t.Errorf("bar %s differs between windows:\n %+v\n %+v", bar.Time, other, bar)
				}
			}
		}
		if common < 12 {
			t.Errorf("%d bars in common, want at least 12 (one hour of overlap)", common)
		}
	})

	t.Run("head timestamp", func(t *testing.T) {
		aapl, _ := ibsim.DefaultCatalog().ByConID(265598)
		for i, tt := range []struct {
			formatDate int
			want       string
		}{
			{1, aapl.Head.UTC().Format("20060102-15:04:05")},
			{2, strconv.FormatInt(aapl.Head.Unix(), 10)},
		} {
			id := int64(10 + i)
			c.send(&tws.ReqHeadTimestamp{ReqID: id, Contract: stockContract("AAPL"), UseRTH: true, WhatToShow: "TRADES", FormatDate: tt.formatDate})
			m := c.waitFor(replyTimeout, "head timestamp", isReply(id))
			if ht, ok := m.(*tws.HeadTimestamp); !ok || ht.Timestamp != tt.want {
				t.Errorf("formatDate %d: got %s, want head timestamp %q", tt.formatDate, describe(m), tt.want)
			}
		}
	})

	t.Run("matching symbols", func(t *testing.T) {
		for i, tt := range []struct {
			pattern string
			conID   int64
		}{{"AAPL", 265598}, {"EUR", 12087792}, {"MSF", 272093}} {
			id := int64(20 + i)
			c.send(&tws.ReqMatchingSymbols{ReqID: id, Pattern: tt.pattern})
			m := c.waitFor(replyTimeout, "symbol samples", isReply(id))
			ss, ok := m.(*tws.SymbolSamples)
			if !ok {
				t.Fatalf("got %s, want symbol samples", describe(m))
			}
			if !slices.ContainsFunc(ss.Descriptions, func(d tws.ContractDescription) bool { return d.ConID == tt.conID }) {
				t.Errorf("pattern %q: %+v lacks conId %d", tt.pattern, ss.Descriptions, tt.conID)
			}
		}
	})

	t.Run("cancel unknown id", func(t *testing.T) {
		c.send(&tws.CancelHistoricalData{ReqID: 4242})
		c.waitErr(ibsim.CodeNoHistoricalQuery, 4242)
	})

	t.Run("keepUpToDate with end date", func(t *testing.T) {
		r := histReq(30, stockContract("AAPL"), "20250312 10:00:00 US/Eastern", "3600 S", "5 mins", "TRADES")
		r.KeepUpToDate = true
		c.send(r)
		c.waitErr(ibsim.CodeValidation, 30)
	})
}

func TestKeepUpToDate(t *testing.T) {
	// A 5 mins stream updates every 5 s of gateway time: every 50 ms here.
	srv := startSim(t, ibsim.Config{TimeScale: 100})
	c, _ := connect(t, srv, 1)
	r := histReq(7, stockContract("AAPL"), "", "3600 S", "5 mins", "TRADES")
	r.KeepUpToDate = true
	c.send(r)
	if m := c.waitFor(replyTimeout, "historical data", isReply(7)); !isType[*tws.HistoricalData](m) {
		t.Fatalf("got %s, want historical data", describe(m))
	}
	isUpdate := func(m tws.Message) bool {
		u, ok := m.(*tws.HistoricalDataUpdate)
		return ok && u.ReqID == 7
	}
	for i := 0; i < 3; i++ {
		u := c.waitFor(replyTimeout, "historicalDataUpdate", isUpdate).(*tws.HistoricalDataUpdate)
		b := u.Bar
		// The clock is fixed at 11:00:00, so the bar in progress starts then.
		if b.Time != strconv.FormatInt(testNow.Unix(), 10) {
			t.Errorf("update bar time %q, want %d", b.Time, testNow.Unix())
		}
		if b.Low > b.Open || b.Low > b.Close || b.High < b.Open || b.High < b.Close {
			t.Errorf("update bar inconsistent: %+v", b)
		}
	}
	c.send(&tws.CancelHistoricalData{ReqID: 7})
	e := c.waitErr(ibsim.CodeHMDS, 7)
	if !strings.Contains(e.Text, "query cancelled: 7") {
		t.Errorf("cancel answered %q, want a query cancelled text", e.Text)
	}
	c.expectQuiet(quietFor, "update after cancel", isUpdate)
	c.send(&tws.CancelHistoricalData{ReqID: 7})
	c.waitErr(ibsim.CodeNoHistoricalQuery, 7)
}

func TestDuplicateClientID(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	first, _ := connect(t, srv, 1)
	other, _ := connect(t, srv, 2)

	dup := dial(t, srv.Addr())
	if _, err := dup.handshake(157, 178); err != nil {
		t.Fatal(err)
	}
	dup.send(&tws.StartAPI{ClientID: 1})
	got := dup.expectClosed(replyTimeout)
	if len(got) != 1 || !isErr(ibsim.CodeClientIDInUse, tws.NoRequestID)(got[0]) {
		t.Fatalf("duplicate client id got %s then EOF, want exactly error 326", describeAll(got))
	}
	// The holder of the id is unaffected.
	first.currentTime()

	_ = first.conn.Close()
	eventually(t, replyTimeout, "client 1 to leave", func() bool {
		for _, c := range srv.State().Clients {
			if c.ClientID == 1 {
				return false
			}
		}
		return true
	})
	again, _ := connect(t, srv, 1)
	again.currentTime()
	other.currentTime()
}

func TestMaxClients(t *testing.T) {
	for _, tt := range []struct {
		name   string
		max    int
		expect int
	}{
		{name: "IB default of 32", max: 0, expect: 32},
		{name: "configured 3", max: 3, expect: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{MaxClients: tt.max})
			clients := make([]*rawClient, tt.expect)
			for i := range clients {
				clients[i], _ = connect(t, srv, i+1)
			}
			extra := dial(t, srv.Addr())
			if _, err := extra.handshake(157, 178); err != nil {
				t.Fatal(err)
			}
			extra.send(&tws.StartAPI{ClientID: 999})
			got := extra.expectClosed(replyTimeout)
			if len(got) != 1 || !isErr(502, tws.NoRequestID)(got[0]) {
				t.Fatalf("client %d got %s, want one error then EOF", tt.expect+1, describeAll(got))
			}
			_ = clients[0].conn.Close()
			eventually(t, replyTimeout, "a client slot to free", func() bool {
				return len(srv.State().Clients) == tt.expect-1
			})
			c, _ := connect(t, srv, 999)
			c.currentTime()
		})
	}
}

func TestCloseReleasesEverything(t *testing.T) {
	srv, err := ibsim.Start(ibsim.Config{Now: func() time.Time { return testNow }, TimeScale: 100, ControlAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	c, _ := connect(t, srv, 1)
	r := histReq(1, stockContract("AAPL"), "", "3600 S", "5 mins", "TRADES")
	r.KeepUpToDate = true
	c.send(r)
	c.waitFor(replyTimeout, "historical data", isReply(1))
	half := dial(t, addr) // connected, no handshake yet
	eventually(t, replyTimeout, "the half-open session", func() bool { return len(srv.State().Clients) == 2 })
	for _, f := range []ibsim.Fault{&ibsim.Latency{LatencyMS: 10}, &ibsim.ConnectivityLoss{}, &ibsim.FarmBroken{Farm: "hmds"}, &ibsim.CurrentTimeQuirk{}} {
		if _, err := srv.AddFault(f, ibsim.For(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c.expectClosed(replyTimeout)
	half.expectClosed(replyTimeout)
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := len(srv.Faults()); n != 0 {
		t.Errorf("%d faults still active after Close: %+v", n, srv.Faults())
	}
	if st := srv.State(); st.Listening || len(st.Clients) != 0 {
		t.Errorf("after Close: listening %v, %d clients", st.Listening, len(st.Clients))
	}
	if _, err := srv.AddFault(&ibsim.Silent{}); !errors.Is(err, ibsim.ErrClosed) {
		t.Errorf("AddFault after Close: %v, want ErrClosed", err)
	}
	for _, a := range []string{addr, strings.TrimPrefix(srv.ControlURL(), "http://")} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("port %s not free after Close: %v", a, err)
		}
		ln.Close()
	}
}

func TestStartPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// A free port for the gateway, to check Start releases it when the
	// control port is the one in use.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	for _, tt := range []struct {
		name string
		cfg  ibsim.Config
		want string
	}{
		{name: "gateway port", cfg: ibsim.Config{Addr: busy.Addr().String()}, want: "gateway listen on " + busy.Addr().String()},
		{name: "control port", cfg: ibsim.Config{Addr: freeAddr, ControlAddr: busy.Addr().String()}, want: "control listen on " + busy.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := ibsim.Start(tt.cfg)
			if err == nil {
				srv.Close()
				t.Fatal("Start succeeded on a port in use")
			}
			if !strings.Contains(err.Error(), tt.want) || !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("error %q, want it to contain %q and wrap EADDRINUSE", err, tt.want)
			}
		})
	}
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("gateway port %s not released after a failed Start: %v", freeAddr, err)
	}
	ln.Close()
}
