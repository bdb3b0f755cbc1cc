package tws

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sampleDetails() ContractDetails {
	return ContractDetails{
		Contract: Contract{ConID: 265598, Symbol: "AAPL", SecType: "STK", Exchange: "SMART",
			PrimaryExchange: "NASDAQ", Currency: "USD", LocalSymbol: "AAPL", TradingClass: "NMS"},
		MarketName: "NMS", MinTick: 0.01, MdSizeMultiplier: 1, OrderTypes: "LMT,MKT",
		ValidExchanges: "SMART,NASDAQ", PriceMagnifier: 1, LongName: "APPLE INC",
		Industry: "Technology", Category: "Computers", Subcategory: "Computers",
		TimeZoneID: "US/Eastern", TradingHours: "20240102:0400-20240102:2000",
		LiquidHours: "20240102:0930-20240102:1600", SecIDList: []TagValue{{"ISIN", "US0378331005"}},
		AggGroup: 1, MarketRuleIDs: "26,26", StockType: "COMMON", SizeMinTick: 0.0001,
		MinSize: 0.0001, SizeIncrement: 0.0001, SuggestedSizeIncrement: 100,
	}
}

// gated zeroes the fields a message does not carry at server version ver,
// so a round trip can be compared with the original.
func gated(m Message, ver int) Message {
	switch m := m.(type) {
	case *ErrorMsg:
		c := *m
		if ver < VerAdvancedOrderReject {
			c.AdvancedOrderRejectJSON = ""
		}
		return &c
	case *ContractData:
		c := *m
		if ver >= VerSizeRules {
			c.Details.MdSizeMultiplier = 0
		}
		if ver != VerFractionalSizeSupport {
			c.Details.SizeMinTick = 0
		}
		if ver < VerSizeRules {
			c.Details.MinSize, c.Details.SizeIncrement, c.Details.SuggestedSizeIncrement = 0, 0, 0
		}
		return &c
	case *SymbolSamples:
		c := *m
		c.Descriptions = append([]ContractDescription(nil), m.Descriptions...)
		if ver < VerBondIssuerID {
			for i := range c.Descriptions {
				c.Descriptions[i].Description, c.Descriptions[i].IssuerID = "", ""
			}
		}
		return &c
	case *ReqContractDetails:
		c := *m
		if ver < VerBondIssuerID {
			c.IssuerID = ""
		}
		return &c
	}
	return m
}

var incomingSamples = []Message{
	&ErrorMsg{ReqID: 7, Code: 200, Text: "No security definition has been found for the request", AdvancedOrderRejectJSON: `{"x":1}`},
	&ErrorMsg{ReqID: NoRequestID, Code: 2104, Text: "Market data farm connection is OK:usfarm"},
	&NextValidID{OrderID: 1},
	&ManagedAccounts{Accounts: []string{"DU0000001", "DU0000002"}},
	&CurrentTime{Time: 1700000000},
	&ContractData{ReqID: 3, Details: sampleDetails()},
	&ContractData{ReqID: 4, Details: ContractDetails{Contract: Contract{ConID: 1, Symbol: "ES", SecType: "FUT",
		LastTradeDateOrContractMonth: "20261218", Multiplier: "50", Exchange: "CME", Currency: "USD"}, LastTradeTime: "08:30"}},
	&ContractDataEnd{ReqID: 3},
	&HistoricalData{ReqID: 5, Start: "20240102 09:30:00 US/Eastern", End: "20240103 16:00:00 US/Eastern",
		Bars: []Bar{{Time: "1704205800", Open: 185.5, High: 186.1, Low: 185.01, Close: 185.9, Volume: 12345, WAP: 185.7, Count: 300},
			{Time: "1704209400", Open: 185.9, High: 186, Low: 184, Close: 184.2, Volume: -1, WAP: -1, Count: -1}}},
	&HistoricalData{ReqID: 6, Start: "a", End: "b"},
	&HistoricalDataUpdate{ReqID: 5, Bar: Bar{Time: "1704205800", Open: 1, High: 3, Low: 0.5, Close: 2, Volume: 10, WAP: 1.5, Count: 4}},
	&HeadTimestamp{ReqID: 8, Timestamp: "19801212-14:30:00"},
	&SymbolSamples{ReqID: 9, Descriptions: []ContractDescription{
		{ConID: 265598, Symbol: "AAPL", SecType: "STK", PrimaryExchange: "NASDAQ", Currency: "USD",
			DerivativeSecTypes: []string{"OPT", "WAR"}, Description: "APPLE INC", IssuerID: "e1"},
		{ConID: 12087792, Symbol: "EUR", SecType: "CASH", PrimaryExchange: "IDEALPRO", Currency: "USD"}}},
}

var outgoingSamples = []Message{
	&StartAPI{ClientID: 3, OptionalCapabilities: "+PACEAPI"},
	&ReqIDs{NumIDs: 1},
	&ReqCurrentTime{},
	&ReqContractDetails{ReqID: 1, Contract: Contract{Symbol: "EUR", SecType: "CASH", Exchange: "IDEALPRO", Currency: "USD"}, IssuerID: "x"},
	&ReqHistoricalData{ReqID: 2, Contract: Contract{ConID: 265598, Symbol: "AAPL", SecType: "STK", Exchange: "SMART", Currency: "USD"},
		EndDateTime: "20240102 16:00:00 US/Eastern", BarSize: "1 hour", Duration: "2 D", UseRTH: true, WhatToShow: "TRADES", FormatDate: 2, KeepUpToDate: true},
	&ReqHistoricalData{ReqID: 3, Contract: Contract{SecType: "BAG", Symbol: "SPY", ComboLegs: []ComboLeg{{ConID: 1, Ratio: 1, Action: "BUY", Exchange: "SMART"}}},
		BarSize: "1 day", Duration: "1 M", WhatToShow: "TRADES", FormatDate: 1},
	&CancelHistoricalData{ReqID: 2},
	&ReqHeadTimestamp{ReqID: 4, Contract: Contract{ConID: 265598}, UseRTH: true, WhatToShow: "TRADES", FormatDate: 1},
	&CancelHeadTimestamp{ReqID: 4},
	&ReqMatchingSymbols{ReqID: 5, Pattern: "AAP"},
}

func TestRoundTripEveryVersion(t *testing.T) {
	for ver := MinServerVersion; ver <= MaxServerVersion; ver++ {
		for _, dir := range []struct {
			name    string
			samples []Message
			decode  func([]byte, int) (Message, error)
		}{{"in", incomingSamples, DecodeIncoming}, {"out", outgoingSamples, DecodeOutgoing}} {
			for _, m := range dir.samples {
				frame, err := Encode(m, ver)
				if err != nil {
					t.Fatalf("v%d %s %T: encode: %v", ver, dir.name, m, err)
				}
				payload, err := NewFrameReader(bytes.NewReader(frame), 0).Next()
				if err != nil {
					t.Fatalf("v%d %T: frame: %v", ver, m, err)
				}
				got, err := dir.decode(payload, ver)
				if err != nil {
					t.Fatalf("v%d %s %T: decode: %v", ver, dir.name, m, err)
				}
				if want := gated(m, ver); !reflect.DeepEqual(got, want) {
					t.Errorf("v%d %s %T:\n got %+v\nwant %+v", ver, dir.name, m, got, want)
				}
			}
		}
	}
}

func TestContractDataLayoutGates(t *testing.T) {
	count := func(ver int) int {
		f, _ := Encode(&ContractData{Details: sampleDetails()}, ver)
		return bytes.Count(f, []byte{0})
	}
	// 157..162: version + mdSizeMultiplier; 163: + sizeMinTick; 164+: neither, + 3 size rules.
	if a, b, c := count(162), count(163), count(164); b != a+1 || c != a-2+3 {
		t.Fatalf("field counts v162=%d v163=%d v164=%d", a, b, c)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	cases := []struct {
		name    string
		payload string
		want    error
	}{
		{"empty id", "\x00", nil},
		{"not terminated", "49\x001", ErrUnterminated},
		{"bad id", "x\x00", ErrBadField},
		{"underrun", "49\x00", ErrUnderrun},
		{"bad int", "49\x001\x00abc\x00", ErrBadField},
		{"huge count", "17\x001\x00a\x00b\x00999999\x00", ErrTooMany},
		{"negative count", "17\x001\x00a\x00b\x00-1\x00", ErrBadField},
		{"bar underrun", "17\x001\x00a\x00b\x001\x00t\x001\x001\x001\x00", ErrUnderrun},
		{"int overflow", "4\x002\x001\x0099999999999\x00m\x00\x00", ErrBadField},
		{"bad float", "17\x001\x00a\x00b\x001\x00t\x00x\x001\x001\x001\x001\x001\x001\x00", ErrBadField},
	}
	for _, c := range cases {
		_, err := DecodeIncoming([]byte(c.payload), MaxServerVersion)
		if err == nil {
			t.Errorf("%s: decoded without error", c.name)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
	var unk *UnknownMessageError
	if _, err := DecodeIncoming([]byte("12345\x00"), MaxServerVersion); !errors.As(err, &unk) || unk.ID != 12345 {
		t.Errorf("unknown id: %v", err)
	}
}

func TestLenientNumbers(t *testing.T) {
	d := NewDecoder([]byte(" 12 \x0012.0\x00\x000\x00true\x001.7976931348623157E308\x00"))
	if a, b, c := d.Int(), d.Int(), d.Int(); a != 12 || b != 12 || c != 0 {
		t.Fatalf("ints %d %d %d", a, b, c)
	}
	if v := d.Float(); v != 0 {
		t.Fatalf("float %v", v)
	}
	if !d.Bool() {
		t.Fatal("bool")
	}
	if v := d.Float(); v < 1e308 {
		t.Fatalf("unset double %v", v)
	}
	if err := d.Err(); err != nil || !d.AtEnd() {
		t.Fatalf("err %v end %v", err, d.AtEnd())
	}
}

func TestEncoderReplacesNUL(t *testing.T) {
	e := NewEncoder(1).Str("a\x00b")
	if got := string(e.Payload()); got != "1\x00a b\x00" {
		t.Fatalf("payload %q", got)
	}
}
