package tws

// Contract identifies an instrument as requests carry it. Either ConID alone
// or Symbol with SecType, Exchange and Currency usually suffices.
type Contract struct {
	ConID                        int64
	Symbol                       string
	SecType                      string // STK, CASH, FUT, IND, OPT, BAG...
	LastTradeDateOrContractMonth string // yyyyMMdd or yyyyMM for derivatives
	Strike                       float64
	Right                        string
	Multiplier                   string
	Exchange                     string
	PrimaryExchange              string
	Currency                     string
	LocalSymbol                  string
	TradingClass                 string
	IncludeExpired               bool
	ComboLegs                    []ComboLeg // only for SecType BAG, in historical data requests
}

// ComboLeg is one leg of a BAG contract.
type ComboLeg struct {
	ConID    int64
	Ratio    int
	Action   string
	Exchange string
}

// appendContract writes the 13 contract fields requests share, from conId to includeExpired.
func (c *Contract) appendTo(e *Encoder) {
	e.Int64(c.ConID).Str(c.Symbol).Str(c.SecType).Str(c.LastTradeDateOrContractMonth).
		Float(c.Strike).Str(c.Right).Str(c.Multiplier).Str(c.Exchange).Str(c.PrimaryExchange).
		Str(c.Currency).Str(c.LocalSymbol).Str(c.TradingClass).Bool(c.IncludeExpired)
}

func (c *Contract) decode(d *Decoder) {
	c.ConID = d.Int64()
	c.Symbol = d.Str()
	c.SecType = d.Str()
	c.LastTradeDateOrContractMonth = d.Str()
	c.Strike = d.Float()
	c.Right = d.Str()
	c.Multiplier = d.Str()
	c.Exchange = d.Str()
	c.PrimaryExchange = d.Str()
	c.Currency = d.Str()
	c.LocalSymbol = d.Str()
	c.TradingClass = d.Str()
	c.IncludeExpired = d.Bool()
}

// TagValue is one entry of IB's tag/value lists.
type TagValue struct {
	Tag, Value string
}

// ContractDetails is the payload of a contractData message.
type ContractDetails struct {
	Contract
	LastTradeTime          string // the time part IB may append to the expiry, e.g. "16:00"
	MarketName             string
	MinTick                float64
	MdSizeMultiplier       int // before VerSizeRules only
	OrderTypes             string
	ValidExchanges         string
	PriceMagnifier         int
	UnderConID             int64
	LongName               string
	ContractMonth          string
	Industry               string
	Category               string
	Subcategory            string
	TimeZoneID             string
	TradingHours           string
	LiquidHours            string
	EvRule                 string
	EvMultiplier           float64
	SecIDList              []TagValue
	AggGroup               int
	UnderSymbol            string
	UnderSecType           string
	MarketRuleIDs          string
	RealExpirationDate     string
	StockType              string
	SizeMinTick            float64 // VerFractionalSizeSupport only
	MinSize                float64 // from VerSizeRules
	SizeIncrement          float64 // from VerSizeRules
	SuggestedSizeIncrement float64 // from VerSizeRules
}

// ContractDescription is one match of a reqMatchingSymbols search.
type ContractDescription struct {
	ConID              int64
	Symbol             string
	SecType            string
	PrimaryExchange    string
	Currency           string
	DerivativeSecTypes []string
	Description        string // from VerBondIssuerID
	IssuerID           string // from VerBondIssuerID
}

// Bar is one historical bar as the gateway sends it. Time is the date field
// verbatim: its format depends on the request's formatDate and bar size.
// Volume and WAP are IB decimals; -1 means "not available".
type Bar struct {
	Time                   string
	Open, High, Low, Close float64
	Volume, WAP            float64
	Count                  int
}
