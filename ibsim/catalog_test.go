package ibsim

import (
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDefaultCatalogContents(t *testing.T) {
	c := DefaultCatalog()
	all := c.All()
	if len(all) < 30 {
		t.Fatalf("%d instruments, want at least 30", len(all))
	}
	seen := map[int64]bool{}
	kinds := map[string]int{}
	for _, in := range all {
		if seen[in.ConID] {
			t.Errorf("duplicate conId %d", in.ConID)
		}
		seen[in.ConID] = true
		kinds[in.SecType]++
		if got, ok := c.ByConID(in.ConID); !ok || got != in {
			t.Errorf("ByConID(%d) does not return the listed instrument", in.ConID)
		}
		for name, v := range map[string]string{
			"Symbol": in.Symbol, "SecType": in.SecType, "Exchange": in.Exchange, "Currency": in.Currency,
			"LocalSymbol": in.LocalSymbol, "TradingClass": in.TradingClass, "LongName": in.LongName,
			"MarketName": in.MarketName, "ValidExchanges": in.ValidExchanges, "OrderTypes": in.OrderTypes,
			"TimeZoneID": in.TimeZoneID,
		} {
			if v == "" {
				t.Errorf("%s: %s empty", in.LocalSymbol, name)
			}
		}
		if _, err := time.LoadLocation(in.TimeZoneID); err != nil {
			t.Errorf("%s: zone %q: %v", in.LocalSymbol, in.TimeZoneID, err)
		}
		if in.MinTick <= 0 || in.BasePrice <= 0 || in.Spread <= 0 {
			t.Errorf("%s: tick %v price %v spread %v", in.LocalSymbol, in.MinTick, in.BasePrice, in.Spread)
		}
		// The tick must be representable with the instrument's decimals.
		if ticks := in.MinTick * math.Pow10(in.Digits); math.Abs(ticks-math.Round(ticks)) > 1e-9 || ticks < 1 {
			t.Errorf("%s: tick %v not on %d decimals", in.LocalSymbol, in.MinTick, in.Digits)
		}
		if in.Head.IsZero() || in.Head.Location() != time.UTC || !in.Head.Before(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("%s: head %v", in.LocalSymbol, in.Head)
		}
		if !in.InSession(in.Head, false) {
			t.Errorf("%s: head %v outside trading hours", in.LocalSymbol, in.Head)
		}
		switch in.SecType {
		case "STK":
			if in.Exchange != "SMART" || in.PrimaryExchange == "" || in.TimeZoneID != "US/Eastern" || in.Sessions != StockSessions || in.Digits != 2 || in.Multiplier != "" {
				t.Errorf("%s: stock fields %+v", in.Symbol, in)
			}
		case "CASH":
			if in.Exchange != "IDEALPRO" || in.LocalSymbol != in.Symbol+"."+in.Currency || in.Sessions != ForexSessions || in.Multiplier != "" {
				t.Errorf("%s: forex fields %+v", in.LocalSymbol, in)
			}
		case "FUT":
			if len(in.LastTradeDateOrContractMonth) != 8 || len(in.ContractMonth) != 6 || in.Multiplier == "" || in.TimeZoneID != "US/Central" || in.Sessions != FuturesCMESessions {
				t.Errorf("%s: futures fields %+v", in.LocalSymbol, in)
			}
		default:
			t.Errorf("%s: unexpected secType %q", in.LocalSymbol, in.SecType)
		}
	}
	if kinds["STK"] < 15 || kinds["CASH"] < 7 || kinds["FUT"] < 6 {
		t.Errorf("mix of security types %v", kinds)
	}
	known := map[int64]string{265598: "AAPL", 272093: "MSFT", 756733: "SPY", 12087792: "EUR.USD"}
	for id, ls := range known {
		if in, ok := c.ByConID(id); !ok || in.LocalSymbol != ls {
			t.Errorf("conId %d is not %s", id, ls)
		}
	}
	aapl := testInstrument(t, conAAPL)
	if want := time.Date(1980, 12, 12, 14, 30, 0, 0, time.UTC); !aapl.Head.Equal(want) {
		t.Errorf("AAPL head %v, want %v", aapl.Head, want)
	}
	if eur := testInstrument(t, conEURUSD); eur.MinTick != 5e-05 || eur.Digits != 5 {
		t.Errorf("EUR.USD tick %v digits %d", eur.MinTick, eur.Digits)
	}
	if jpy := testInstrument(t, conUSDJPY); jpy.MinTick != 0.005 || jpy.Digits != 3 {
		t.Errorf("USD.JPY tick %v digits %d", jpy.MinTick, jpy.Digits)
	}
	if DefaultCatalog() != c {
		t.Error("DefaultCatalog should return the shared immutable instance")
	}
	if a := c.All(); &a[0] == &all[0] {
		t.Error("All must return a fresh slice")
	}
}

func TestNewCatalogRejects(t *testing.T) {
	if _, err := NewCatalog([]Instrument{{ConID: 1, Symbol: "A"}, {ConID: 1, Symbol: "B"}}); err == nil {
		t.Error("duplicate conId accepted")
	}
	if _, err := NewCatalog([]Instrument{{Symbol: "A"}}); err == nil {
		t.Error("zero conId accepted")
	}
}

func TestResolve(t *testing.T) {
	c := DefaultCatalog()
	tests := []struct {
		name      string
		q         ContractQuery
		want      int64  // 0: an error is expected
		ambiguous string // expected ambiguity message, else "not found"
	}{
		{"conId alone", ContractQuery{ConID: conAAPL}, conAAPL, ""},
		{"conId consistent", ContractQuery{ConID: conAAPL, Symbol: "aapl", SecType: "STK", Exchange: "SMART", Currency: "USD"}, conAAPL, ""},
		{"conId with primary exchange", ContractQuery{ConID: conAAPL, Exchange: "NASDAQ"}, conAAPL, ""},
		{"conId inconsistent symbol", ContractQuery{ConID: conAAPL, Symbol: "MSFT"}, 0, ""},
		{"conId inconsistent secType", ContractQuery{ConID: conAAPL, SecType: "FUT"}, 0, ""},
		{"unknown conId", ContractQuery{ConID: 1}, 0, ""},
		{"SMART stock", ContractQuery{Symbol: "AAPL", SecType: "STK", Exchange: "SMART", Currency: "USD"}, conAAPL, ""},
		{"SMART stock lower case", ContractQuery{Symbol: "msft", SecType: "stk", Exchange: "smart", Currency: "usd"}, conMSFT, ""},
		{"ETF on SMART", ContractQuery{Symbol: "SPY", SecType: "STK", Exchange: "SMART", Currency: "USD"}, conSPY, ""},
		{"stock on primary", ContractQuery{Symbol: "SPY", SecType: "STK", Exchange: "ARCA"}, conSPY, ""},
		{"SMART with primaryExchange", ContractQuery{Symbol: "AAPL", SecType: "STK", Exchange: "SMART", PrimaryExchange: "NASDAQ"}, conAAPL, ""},
		{"stock wrong exchange", ContractQuery{Symbol: "AAPL", SecType: "STK", Exchange: "NYSE"}, 0, ""},
		{"stock wrong currency", ContractQuery{Symbol: "AAPL", SecType: "STK", Exchange: "SMART", Currency: "EUR"}, 0, ""},
		{"symbol only", ContractQuery{Symbol: "AAPL"}, conAAPL, ""},
		{"forex", ContractQuery{Symbol: "EUR", SecType: "CASH", Exchange: "IDEALPRO", Currency: "USD"}, conEURUSD, ""},
		{"forex by localSymbol", ContractQuery{LocalSymbol: "EUR.USD", SecType: "CASH"}, conEURUSD, ""},
		{"forex JPY", ContractQuery{Symbol: "USD", SecType: "CASH", Currency: "JPY", Exchange: "IDEALPRO"}, conUSDJPY, ""},
		{"forex without currency", ContractQuery{Symbol: "EUR", SecType: "CASH", Exchange: "IDEALPRO"}, 0, "The contract description specified for EUR is ambiguous."},
		{"EUR without secType", ContractQuery{Symbol: "EUR", Currency: "USD"}, 0, "The contract description specified for EUR is ambiguous."},
		{"future front month", ContractQuery{Symbol: "ES", SecType: "FUT", Exchange: "CME", Currency: "USD"}, conESZ6, ""},
		{"future on GLOBEX", ContractQuery{Symbol: "ES", SecType: "FUT", Exchange: "GLOBEX"}, conESZ6, ""},
		{"future contract month", ContractQuery{Symbol: "ES", SecType: "FUT", Exchange: "CME", LastTradeDateOrContractMonth: "202703"}, conESH7, ""},
		{"future expiry date", ContractQuery{Symbol: "ES", SecType: "FUT", Exchange: "CME", LastTradeDateOrContractMonth: "20270319"}, conESH7, ""},
		{"future by localSymbol", ContractQuery{LocalSymbol: "ESH7", SecType: "FUT"}, conESH7, ""},
		{"CL front month", ContractQuery{Symbol: "CL", SecType: "FUT", Exchange: "NYMEX"}, conCLF7, ""},
		{"CL contract month differs from expiry", ContractQuery{Symbol: "CL", SecType: "FUT", Exchange: "NYMEX", LastTradeDateOrContractMonth: "202701"}, conCLF7, ""},
		{"CL expiry month is not a contract month", ContractQuery{Symbol: "CL", SecType: "FUT", Exchange: "NYMEX", LastTradeDateOrContractMonth: "202612"}, 0, ""},
		{"CL next", ContractQuery{Symbol: "CL", SecType: "FUT", Exchange: "NYMEX", LastTradeDateOrContractMonth: "202702"}, conCLG7, ""},
		{"CL on CME", ContractQuery{Symbol: "CL", SecType: "FUT", Exchange: "CME"}, 0, ""},
		{"bad expiry", ContractQuery{Symbol: "ES", SecType: "FUT", LastTradeDateOrContractMonth: "2027"}, 0, ""},
		{"unknown symbol", ContractQuery{Symbol: "NOPE", SecType: "STK", Exchange: "SMART"}, 0, ""},
		{"empty query", ContractQuery{}, 0, ""},
	}
	for _, tt := range tests {
		in, err := c.Resolve(tt.q)
		if tt.want != 0 {
			if err != nil || in == nil || in.ConID != tt.want {
				t.Errorf("%s: got %v, %v; want conId %d", tt.name, in, err, tt.want)
			}
			continue
		}
		if in != nil {
			t.Errorf("%s: resolved to %s, want an error", tt.name, in.LocalSymbol)
		}
		re := requireCode(t, err, 200)
		want := "No security definition has been found for the request"
		if tt.ambiguous != "" {
			want = tt.ambiguous
		}
		if re.Msg != want {
			t.Errorf("%s: message %q, want %q", tt.name, re.Msg, want)
		}
		if !strings.Contains(re.Error(), "200") {
			t.Errorf("%s: Error() = %q", tt.name, re.Error())
		}
	}
}

func TestMatch(t *testing.T) {
	c := DefaultCatalog()
	syms := func(list []*Instrument) []string {
		var out []string
		for _, in := range list {
			out = append(out, in.LocalSymbol)
		}
		return out
	}
	tests := []struct {
		pattern string
		prefix  []string // expected leading results
		absent  []string
	}{
		{"AAPL", []string{"AAPL"}, nil},
		{"aa", []string{"AAPL"}, nil},
		{"apple", []string{"AAPL"}, nil},
		{"AM", []string{"AMD", "AMZN"}, nil},
		{"ES", []string{"ESZ6"}, []string{"ESH7"}},
		{"EUR", []string{"EUR.USD", "EUR.GBP", "EUR.JPY", "6EZ6"}, []string{"6EH7"}},
		{"euro", []string{"EUR.USD", "EUR.GBP", "EUR.JPY", "6EZ6"}, nil},
		{"trust", []string{"DIA", "QQQ", "SPY"}, nil},
	}
	for _, tt := range tests {
		got := syms(c.Match(tt.pattern))
		if len(got) < len(tt.prefix) || !reflect.DeepEqual(got[:len(tt.prefix)], tt.prefix) {
			t.Errorf("Match(%q) = %v, want it to start with %v", tt.pattern, got, tt.prefix)
		}
		for _, a := range tt.absent {
			for _, g := range got {
				if g == a {
					t.Errorf("Match(%q) lists %s", tt.pattern, a)
				}
			}
		}
	}
	for _, p := range []string{"", "  ", "ZZZZ"} {
		if got := c.Match(p); len(got) != 0 {
			t.Errorf("Match(%q) = %v", p, syms(got))
		}
	}
	// A broad pattern is capped and stable.
	a, b := c.Match("a"), c.Match("A")
	if len(a) == 0 || len(a) > 16 || !reflect.DeepEqual(a, b) {
		t.Errorf("Match(a) = %v, Match(A) = %v", syms(a), syms(b))
	}
	if many := c.Match("U"); len(many) > 16 {
		t.Errorf("Match(U) returned %d", len(many))
	}
}

func TestCatalogConcurrentUse(t *testing.T) {
	c := DefaultCatalog()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if _, err := c.Resolve(ContractQuery{Symbol: "ES", SecType: "FUT", Exchange: "CME"}); err != nil {
					t.Error(err)
					return
				}
				c.Match("E")
				c.All()
				in, _ := c.ByConID(conEURUSD)
				in.TradingHours(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
			}
		}()
	}
	wg.Wait()
}
