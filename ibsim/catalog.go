package ibsim

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Instrument is one contract the simulator knows, with the fields IB's
// contractData carries plus what the price generator needs. Instruments
// handed out by a Catalog are shared: treat them as read-only.
type Instrument struct {
	ConID                                                 int64
	Symbol, SecType, Exchange, PrimaryExchange, Currency  string
	LocalSymbol, TradingClass                             string
	LastTradeDateOrContractMonth                          string // futures: yyyyMMdd, the last trading day
	ContractMonth                                         string // futures: yyyyMM, the delivery month IB's contractMonth field carries
	Multiplier                                            string // "" for STK/CASH, "50" for ES...
	MinTick                                               float64
	LongName, MarketName, Industry, Category, Subcategory string
	StockType                                             string
	ValidExchanges, OrderTypes                            string
	TimeZoneID                                            string      // IB's zone ids, e.g. "US/Eastern", "US/Central"
	Sessions                                              SessionKind // weekly schedule, see hours.go
	Head                                                  time.Time   // earliest data (head timestamp), UTC
	BasePrice                                             float64     // price level the generator oscillates around
	Spread                                                float64     // typical bid/ask spread (absolute)
	Digits                                                int         // price decimals (2 for stocks, 5 for EUR.USD, 3 for USD.JPY, ...)
}

// Catalog is the simulator's set of instruments. It is immutable after
// construction and safe for concurrent use.
type Catalog struct {
	list    []*Instrument
	byConID map[int64]*Instrument
}

// NewCatalog builds a catalog from instruments, copying them; conIds must be
// non-zero and unique.
func NewCatalog(instruments []Instrument) (*Catalog, error) {
	c := &Catalog{byConID: make(map[int64]*Instrument, len(instruments))}
	for i := range instruments {
		in := instruments[i]
		if in.ConID == 0 {
			return nil, fmt.Errorf("ibsim: instrument %q has no conId", in.Symbol)
		}
		if _, dup := c.byConID[in.ConID]; dup {
			return nil, fmt.Errorf("ibsim: duplicate conId %d", in.ConID)
		}
		p := &in
		c.list = append(c.list, p)
		c.byConID[in.ConID] = p
	}
	return c, nil
}

// All returns every instrument in catalog order (a fresh slice).
func (c *Catalog) All() []*Instrument {
	return append([]*Instrument(nil), c.list...)
}

// ByConID finds an instrument by IB contract id.
func (c *Catalog) ByConID(id int64) (*Instrument, bool) {
	in, ok := c.byConID[id]
	return in, ok
}

// ContractQuery is the contract part of reqContractDetails,
// reqHistoricalData and reqHeadTimestamp.
type ContractQuery struct {
	ConID                                         int64
	Symbol, SecType, LastTradeDateOrContractMonth string
	Exchange, PrimaryExchange, Currency           string
	LocalSymbol, TradingClass                     string
}

// IB's error 200 texts. The ambiguity text is the one IB sends for stocks and
// futures alike; for some derivatives it appends a hint such as "; you must
// specify the multiplier", which this catalog never needs.
const (
	noSecDefMsg     = "No security definition has been found for the request"
	ambiguousFormat = "The contract description specified for %s is ambiguous."
)

// errNoSecDef is a fresh "not found" error (callers may keep the pointer).
func errNoSecDef() error { return &RequestError{Code: CodeNoSecDef, Msg: noSecDefMsg} }

// Resolve returns the single instrument a query designates, as IB does:
//   - by conId: every other non-empty field must agree with that contract;
//   - otherwise by the non-empty fields among symbol, secType, exchange,
//     primaryExchange, currency, localSymbol, tradingClass and expiry,
//     compared case-insensitively. Exchange "SMART" matches any US stock or
//     ETF, as does its primary exchange; "GLOBEX" is accepted for CME.
//     Expiry is yyyyMMdd (last trading day) or yyyyMM (contract month).
//
// Several futures of one product with no expiry given resolve to the front
// month (the earliest expiry), which is what clients asking for "ES" expect.
// Any other multiple match is ambiguous, e.g. symbol "EUR" without a secType
// (the FX pair and the Euro FX future). Both failures are error 200.
func (c *Catalog) Resolve(q ContractQuery) (*Instrument, error) {
	if q.ConID != 0 {
		in, ok := c.byConID[q.ConID]
		if !ok || !queryMatches(in, q) {
			return nil, errNoSecDef()
		}
		return in, nil
	}
	if q.Symbol == "" && q.LocalSymbol == "" {
		return nil, errNoSecDef()
	}
	var found []*Instrument
	for _, in := range c.list {
		if queryMatches(in, q) {
			found = append(found, in)
		}
	}
	switch {
	case len(found) == 0:
		return nil, errNoSecDef()
	case len(found) == 1:
		return found[0], nil
	case q.LastTradeDateOrContractMonth == "" && oneFuturesProduct(found):
		front := found[0]
		for _, in := range found[1:] {
			if in.LastTradeDateOrContractMonth < front.LastTradeDateOrContractMonth {
				front = in
			}
		}
		return front, nil
	}
	name := q.Symbol
	if name == "" {
		name = q.LocalSymbol
	}
	return nil, &RequestError{Code: CodeNoSecDef, Msg: fmt.Sprintf(ambiguousFormat, strings.ToUpper(name))}
}

// oneFuturesProduct reports whether all instruments are expiries of one
// futures product.
func oneFuturesProduct(list []*Instrument) bool {
	for _, in := range list {
		if in.SecType != "FUT" || in.TradingClass != list[0].TradingClass || in.Exchange != list[0].Exchange {
			return false
		}
	}
	return true
}

// queryMatches reports whether every non-empty query field agrees with in.
func queryMatches(in *Instrument, q ContractQuery) bool {
	eq := strings.EqualFold
	switch {
	case q.Symbol != "" && !eq(q.Symbol, in.Symbol),
		q.SecType != "" && !eq(q.SecType, in.SecType),
		q.Currency != "" && !eq(q.Currency, in.Currency),
		q.LocalSymbol != "" && !eq(q.LocalSymbol, in.LocalSymbol),
		q.TradingClass != "" && !eq(q.TradingClass, in.TradingClass),
		q.Exchange != "" && !exchangeMatches(in, q.Exchange),
		q.PrimaryExchange != "" && !eq(q.PrimaryExchange, in.PrimaryExchange) && !eq(q.PrimaryExchange, in.Exchange):
		return false
	}
	if e := q.LastTradeDateOrContractMonth; e != "" {
		switch len(e) {
		case 8:
			return e == in.LastTradeDateOrContractMonth
		case 6:
			return e == in.ContractMonth
		default:
			return false
		}
	}
	return true
}

// exchangeMatches applies IB's routing names: SMART stocks can also be
// addressed on their primary exchange, and GLOBEX is the old name of CME's
// electronic market that clients still send.
func exchangeMatches(in *Instrument, ex string) bool {
	eq := strings.EqualFold
	switch {
	case eq(ex, in.Exchange):
		return true
	case in.Exchange == "SMART" && eq(ex, in.PrimaryExchange):
		return true
	case in.Exchange == "CME" && eq(ex, "GLOBEX"):
		return true
	}
	return false
}

// maxMatches is how many descriptions IB returns for reqMatchingSymbols.
const maxMatches = 16

// Match answers reqMatchingSymbols(pattern): instruments whose symbol starts
// with the pattern (exact symbol first), then those with a long-name word
// starting with it, case-insensitively, at most 16. Futures appear once per
// product, as their front month, since IB lists products, not expiries.
// Ties are broken by symbol, security type and conId, so the order is stable.
func (c *Catalog) Match(pattern string) []*Instrument {
	p := strings.ToUpper(strings.TrimSpace(pattern))
	if p == "" {
		return nil
	}
	type hit struct {
		in   *Instrument
		tier int
	}
	var hits []hit
	for _, in := range c.list {
		if in.SecType == "FUT" && !c.isFrontMonth(in) {
			continue
		}
		sym := strings.ToUpper(in.Symbol)
		switch {
		case sym == p:
			hits = append(hits, hit{in, 0})
		case strings.HasPrefix(sym, p):
			hits = append(hits, hit{in, 1})
		case longNameWordPrefix(in.LongName, p):
			hits = append(hits, hit{in, 2})
		}
	}
	sort.Slice(hits, func(i, j int) bool {
		a, b := hits[i], hits[j]
		if a.tier != b.tier {
			return a.tier < b.tier
		}
		if a.in.Symbol != b.in.Symbol {
			return a.in.Symbol < b.in.Symbol
		}
		if ra, rb := secTypeRank(a.in.SecType), secTypeRank(b.in.SecType); ra != rb {
			return ra < rb
		}
		return a.in.ConID < b.in.ConID
	})
	if len(hits) > maxMatches {
		hits = hits[:maxMatches]
	}
	out := make([]*Instrument, len(hits))
	for i, h := range hits {
		out[i] = h.in
	}
	return out
}

// isFrontMonth reports whether no other future of the same product expires earlier.
func (c *Catalog) isFrontMonth(in *Instrument) bool {
	for _, o := range c.list {
		if o.SecType == "FUT" && o.TradingClass == in.TradingClass && o.Exchange == in.Exchange &&
			o.LastTradeDateOrContractMonth < in.LastTradeDateOrContractMonth {
			return false
		}
	}
	return true
}

// longNameWordPrefix reports whether a word of name starts with upper-case p.
func longNameWordPrefix(name, p string) bool {
	for _, w := range strings.FieldsFunc(strings.ToUpper(name), func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		if strings.HasPrefix(w, p) {
			return true
		}
	}
	return false
}

// secTypeRank orders security types in match results: stocks first, as IB does.
func secTypeRank(s string) int {
	switch s {
	case "STK":
		return 0
	case "CASH":
		return 1
	case "FUT":
		return 2
	}
	return 3
}

// Routing and order-type lists as contractData carries them; abbreviated
// from the gateway's much longer strings, which clients only display.
const (
	stkValidExchanges = "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,NASDAQ,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,EDGX,FOXRIVER,PEARL,NYSENAT,LTSE,MEMX,IBEOS,OVERNIGHT,TPLUS0,PSX"
	stkOrderTypes     = "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,LOC,MIT,MKT,MOC,MTL,OCA,OPG,PEGMID,POSTONLY,REL,RTH,SCALE,SNAPMID,SNAPMKT,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
	fxOrderTypes      = "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,CASHQTY,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,REL,RELPCTOFS,SCALE,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
	futOrderTypes     = "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,LTH,MIT,MKT,MTL,NGCOMB,NONALGO,OCA,SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)

// stock describes a US stock or ETF routed through SMART. The head timestamp
// is 09:30 New York time on the first day IB has data, as IB reports it for
// TRADES with RTH.
func stock(conID int64, sym, primary, tradingClass, longName, industry, category, subcategory, stockType string, headY int, headM time.Month, headD int, base float64) Instrument {
	ny, _ := loadZone("US/Eastern")
	if tradingClass == "" {
		tradingClass = sym
	}
	return Instrument{
		ConID: conID, Symbol: sym, SecType: "STK", Exchange: "SMART", PrimaryExchange: primary,
		Currency: "USD", LocalSymbol: sym, TradingClass: tradingClass, MinTick: 0.01,
		LongName: longName, MarketName: tradingClass, Industry: industry, Category: category,
		Subcategory: subcategory, StockType: stockType,
		ValidExchanges: stkValidExchanges, OrderTypes: stkOrderTypes,
		TimeZoneID: "US/Eastern", Sessions: StockSessions,
		Head:      time.Date(headY, headM, headD, 9, 30, 0, 0, ny).UTC(),
		BasePrice: base, Spread: 0.01, Digits: 2,
	}
}

// forex describes an IDEALPRO currency pair base.quote. Its head timestamp
// is the first session open of the given year, data starting in the
// mid-2000s as IB's FX history does.
func forex(conID int64, base, quote, longName string, headYear int, price float64) Instrument {
	pair := base + "." + quote
	digits, tick, spread := 5, 0.00005, 0.0001
	if quote == "JPY" {
		digits, tick, spread = 3, 0.005, 0.01
	}
	in := Instrument{
		ConID: conID, Symbol: base, SecType: "CASH", Exchange: "IDEALPRO", Currency: quote,
		LocalSymbol: pair, TradingClass: pair, MinTick: tick,
		LongName: longName, MarketName: pair, Industry: "", Category: "", Subcategory: "",
		ValidExchanges: "IDEALPRO", OrderTypes: fxOrderTypes,
		TimeZoneID: "US/Eastern", Sessions: ForexSessions,
		BasePrice: price, Spread: spread, Digits: digits,
	}
	ny, _ := loadZone("US/Eastern")
	in.Head = in.nextOpen(time.Date(headYear, time.January, 1, 0, 0, 0, 0, ny), false).UTC()
	return in
}

// future describes one CME-group futures expiry. Its head timestamp is the
// first session open about two years before expiry, roughly when IB starts
// carrying a quarterly contract.
func future(conID int64, sym, exchange, localSymbol, tradingClass, ltd, month, mult, longName string, tick float64, digits int, base, spread float64) Instrument {
	in := Instrument{
		ConID: conID, Symbol: sym, SecType: "FUT", Exchange: exchange, Currency: "USD",
		LocalSymbol: localSymbol, TradingClass: tradingClass,
		LastTradeDateOrContractMonth: ltd, ContractMonth: month, Multiplier: mult, MinTick: tick,
		LongName: longName, MarketName: tradingClass, ValidExchanges: exchange, OrderTypes: futOrderTypes,
		TimeZoneID: "US/Central", Sessions: FuturesCMESessions,
		BasePrice: base, Spread: spread, Digits: digits,
	}
	if exp, err := time.ParseInLocation("20060102", ltd, in.Location()); err == nil {
		td := civilOf(exp.AddDate(-2, 0, 0))
		for i := 0; i < 7; i++ { // the first trading date from then on
			if o, _, ok := in.Sessions.session(td.add(i), false, in.Location()); ok {
				in.Head = o.UTC()
				break
			}
		}
	}
	return in
}

// defaultInstruments is the built-in catalog. ConIds of the well-known US
// stocks and EUR.USD are IB's; the others are fixed plausible values. The
// futures are a fixed pair of expiries per product (front and next), so the
// catalog does not depend on the clock.
func defaultInstruments() []Instrument {
	const etf = "ETF"
	return []Instrument{
		stock(265598, "AAPL", "NASDAQ", "NMS", "APPLE INC", "Technology", "Computers", "Computers", "COMMON", 1980, time.December, 12, 230),
		stock(272093, "MSFT", "NASDAQ", "NMS", "MICROSOFT CORP", "Technology", "Software", "Applications Software", "COMMON", 1986, time.March, 13, 420),
		stock(756733, "SPY", "ARCA", "", "SPDR S&P 500 ETF TRUST", "Funds", "Equity Fund", "Growth&Income-Large Cap", etf, 1993, time.January, 29, 580),
		stock(208813719, "GOOGL", "NASDAQ", "NMS", "ALPHABET INC-CL A", "Communications", "Internet", "Web Portals/ISP", "COMMON", 2004, time.August, 19, 175),
		stock(3691937, "AMZN", "NASDAQ", "NMS", "AMAZON.COM INC", "Communications", "Internet", "E-Commerce/Products", "COMMON", 1997, time.May, 15, 200),
		stock(4815747, "NVDA", "NASDAQ", "NMS", "NVIDIA CORP", "Technology", "Semiconductors", "Electronic Compo-Semicon", "COMMON", 1999, time.January, 22, 140),
		stock(107113386, "META", "NASDAQ", "NMS", "META PLATFORMS INC-CLASS A", "Communications", "Internet", "Internet Content-Entmnt", "COMMON", 2012, time.May, 18, 580),
		stock(76792991, "TSLA", "NASDAQ", "NMS", "TESLA INC", "Consumer, Cyclical", "Auto Manufacturers", "Auto-Cars/Light Trucks", "COMMON", 2010, time.June, 29, 300),
		stock(1520593, "JPM", "NYSE", "", "JPMORGAN CHASE & CO", "Financial", "Banks", "Money Center Banks", "COMMON", 1980, time.March, 17, 240),
		stock(13977, "XOM", "NYSE", "", "EXXON MOBIL CORP", "Energy", "Oil&Gas", "Oil Comp-Integrated", "COMMON", 1980, time.March, 17, 115),
		stock(8719, "JNJ", "NYSE", "", "JOHNSON & JOHNSON", "Consumer, Non-cyclical", "Pharmaceuticals", "Medical-Drugs", "COMMON", 1980, time.March, 17, 155),
		stock(8894, "KO", "NYSE", "", "COCA-COLA CO/THE", "Consumer, Non-cyclical", "Beverages", "Beverages-Non-alcoholic", "COMMON", 1980, time.March, 17, 68),
		stock(270639, "INTC", "NASDAQ", "NMS", "INTEL CORP", "Technology", "Semiconductors", "Electronic Compo-Semicon", "COMMON", 1980, time.March, 17, 24),
		stock(4391, "AMD", "NASDAQ", "NMS", "ADVANCED MICRO DEVICES", "Technology", "Semiconductors", "Electronic Compo-Semicon", "COMMON", 1980, time.March, 17, 150),
		stock(8314, "IBM", "NYSE", "", "INTL BUSINESS MACHINES CORP", "Technology", "Computers", "Computer Services", "COMMON", 1980, time.March, 17, 220),
		stock(10098, "BAC", "NYSE", "", "BANK OF AMERICA CORP", "Financial", "Banks", "Super-Regional Banks-US", "COMMON", 1980, time.March, 17, 44),
		stock(320227571, "QQQ", "NASDAQ", "NMS", "INVESCO QQQ TRUST SERIES 1", "Funds", "Equity Fund", "Large Cap", etf, 1999, time.March, 10, 500),
		stock(9579970, "IWM", "ARCA", "", "ISHARES RUSSELL 2000 ETF", "Funds", "Equity Fund", "Small Cap", etf, 2000, time.May, 26, 220),
		stock(73128548, "DIA", "ARCA", "", "SPDR DJIA TRUST", "Funds", "Equity Fund", "Large Cap", etf, 1998, time.January, 20, 430),
		stock(15547841, "TLT", "NASDAQ", "NMS", "ISHARES 20+ YEAR TREASURY BO", "Funds", "Debt Fund", "Government", etf, 2002, time.July, 30, 92),
		stock(51529211, "GLD", "ARCA", "", "SPDR GOLD SHARES", "Funds", "Commodity Fund", "Precious Metals", etf, 2004, time.November, 18, 240),

		forex(12087792, "EUR", "USD", "European Monetary Union Euro", 2005, 1.10),
		forex(12087797, "GBP", "USD", "British pound", 2005, 1.28),
		forex(15016059, "USD", "JPY", "US dollar", 2005, 150),
		forex(14433401, "AUD", "USD", "Australian dollar", 2005, 0.66),
		forex(12087820, "USD", "CHF", "US dollar", 2005, 0.88),
		forex(15016062, "USD", "CAD", "US dollar", 2005, 1.36),
		forex(14321016, "EUR", "JPY", "European Monetary Union Euro", 2005, 162),
		forex(12087807, "EUR", "GBP", "European Monetary Union Euro", 2005, 0.85),
		forex(39453441, "NZD", "USD", "New Zealand dollar", 2007, 0.60),

		future(730283085, "ES", "CME", "ESZ6", "ES", "20261218", "202612", "50", "E-mini S&P 500", 0.25, 2, 6000, 0.25),
		future(750150193, "ES", "CME", "ESH7", "ES", "20270319", "202703", "50", "E-mini S&P 500", 0.25, 2, 6000, 0.25),
		future(730283097, "NQ", "CME", "NQZ6", "NQ", "20261218", "202612", "20", "E-mini NASDAQ 100", 0.25, 2, 21000, 0.25),
		future(750150198, "NQ", "CME", "NQH7", "NQ", "20270319", "202703", "20", "E-mini NASDAQ 100", 0.25, 2, 21000, 0.25),
		future(721589310, "CL", "NYMEX", "CLF7", "CL", "20261221", "202701", "1000", "Light Sweet Crude Oil", 0.01, 2, 70, 0.01),
		future(721589315, "CL", "NYMEX", "CLG7", "CL", "20270120", "202702", "1000", "Light Sweet Crude Oil", 0.01, 2, 70, 0.01),
		future(730283120, "EUR", "CME", "6EZ6", "6E", "20261214", "202612", "125000", "European Monetary Union Euro", 0.00005, 5, 1.10, 0.00005),
		future(750150212, "EUR", "CME", "6EH7", "6E", "20270315", "202703", "125000", "European Monetary Union Euro", 0.00005, 5, 1.10, 0.00005),
	}
}

// DefaultCatalog returns the built-in catalog: 21 US stocks and ETFs, 9 FX
// pairs and 8 futures expiries (ES, NQ, CL, 6E; front and next). Being
// immutable, one instance is shared by all callers.
func DefaultCatalog() *Catalog { return defaultCatalog() }

// defaultCatalog builds the built-in catalog once.
var defaultCatalog = sync.OnceValue(func() *Catalog {
	c, err := NewCatalog(defaultInstruments())
	if err != nil {
		panic(err) // the built-in list is fixed; a test guards it
	}
	return c
})
