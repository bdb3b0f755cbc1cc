package tws

import (
	"fmt"
	"strings"
)

// Ids of messages the gateway sends (incoming, from a client's point of view).
const (
	InError                = 4
	InNextValidID          = 9
	InContractData         = 10
	InManagedAccounts      = 15
	InHistoricalData       = 17
	InCurrentTime          = 49
	InContractDataEnd      = 52
	InSymbolSamples        = 79
	InHeadTimestamp        = 88
	InHistoricalDataUpdate = 90
)

// Ids of messages a client sends (outgoing). The two id spaces overlap
// (9, 49, 90 mean different things each way), hence two decoders.
const (
	OutReqIDs               = 8
	OutReqContractDetails   = 9
	OutReqHistoricalData    = 20
	OutCancelHistoricalData = 25
	OutReqCurrentTime       = 49
	OutStartAPI             = 71
	OutReqMatchingSymbols   = 81
	OutReqHeadTimestamp     = 87
	OutCancelHeadTimestamp  = 90
)

// NoRequestID is the id of errors and notices that concern no request
// (connection-level messages such as 326, 1100 or the farm notices).
const NoRequestID = -1

// Message is a typed message of either direction.
type Message interface {
	// MsgID is the id that opens the message's payload.
	MsgID() int
	// AppendFields appends the fields after the id, laid out for server version ver.
	AppendFields(e *Encoder, ver int)
}

// Encode returns m framed for server version ver, ready to write.
func Encode(m Message, ver int) ([]byte, error) {
	e := NewEncoder(m.MsgID())
	m.AppendFields(e, ver)
	return e.Frame()
}

// UnknownMessageError reports a message id this package has no layout for.
// A client skips such messages; they are not a protocol failure.
type UnknownMessageError struct {
	ID       int
	Incoming bool
}

func (e *UnknownMessageError) Error() string {
	dir := "outgoing"
	if e.Incoming {
		dir = "incoming"
	}
	return fmt.Sprintf("tws: no layout for %s message id %d", dir, e.ID)
}

// DecodeError wraps a field error with the message it happened in.
type DecodeError struct {
	ID       int
	Incoming bool
	Err      error
}

func (e *DecodeError) Error() string {
	dir := "outgoing"
	if e.Incoming {
		dir = "incoming"
	}
	return fmt.Sprintf("tws: decoding %s message %d: %v", dir, e.ID, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// DecodeIncoming decodes a message the gateway sent, for server version ver.
// It returns *UnknownMessageError for ids it has no layout for and
// *DecodeError for a malformed payload; it never panics on any input.
func DecodeIncoming(payload []byte, ver int) (Message, error) {
	d := NewDecoder(payload)
	id := d.Int()
	if err := d.Err(); err != nil {
		return nil, &DecodeError{ID: -1, Incoming: true, Err: err}
	}
	var m interface {
		Message
		decode(d *Decoder, ver int)
	}
	switch id {
	case InError:
		m = &ErrorMsg{}
	case InNextValidID:
		m = &NextValidID{}
	case InContractData:
		m = &ContractData{}
	case InManagedAccounts:
		m = &ManagedAccounts{}
	case InHistoricalData:
		m = &HistoricalData{}
	case InCurrentTime:
		m = &CurrentTime{}
	case InContractDataEnd:
		m = &ContractDataEnd{}
	case InSymbolSamples:
		m = &SymbolSamples{}
	case InHeadTimestamp:
		m = &HeadTimestamp{}
	case InHistoricalDataUpdate:
		m = &HistoricalDataUpdate{}
	default:
		return nil, &UnknownMessageError{ID: id, Incoming: true}
	}
	m.decode(d, ver)
	if err := d.Err(); err != nil {
		return nil, &DecodeError{ID: id, Incoming: true, Err: err}
	}
	return m, nil
}

// DecodeOutgoing decodes a message a client sent, for server version ver.
// Trailing fields beyond the layout are tolerated (newer clients add some).
func DecodeOutgoing(payload []byte, ver int) (Message, error) {
	d := NewDecoder(payload)
	id := d.Int()
	if err := d.Err(); err != nil {
		return nil, &DecodeError{ID: -1, Err: err}
	}
	var m interface {
		Message
		decode(d *Decoder, ver int)
	}
	switch id {
	case OutReqIDs:
		m = &ReqIDs{}
	case OutReqContractDetails:
		m = &ReqContractDetails{}
	case OutReqHistoricalData:
		m = &ReqHistoricalData{}
	case OutCancelHistoricalData:
		m = &CancelHistoricalData{}
	case OutReqCurrentTime:
		m = &ReqCurrentTime{}
	case OutStartAPI:
		m = &StartAPI{}
	case OutReqMatchingSymbols:
		m = &ReqMatchingSymbols{}
	case OutReqHeadTimestamp:
		m = &ReqHeadTimestamp{}
	case OutCancelHeadTimestamp:
		m = &CancelHeadTimestamp{}
	default:
		return nil, &UnknownMessageError{ID: id}
	}
	m.decode(d, ver)
	if err := d.Err(); err != nil {
		return nil, &DecodeError{ID: id, Err: err}
	}
	return m, nil
}

// ---- Incoming messages ----

// ErrorMsg is IB's error/notice message. ReqID is NoRequestID for
// connection-level codes.
type ErrorMsg struct {
	ReqID                   int64
	Code                    int
	Text                    string
	AdvancedOrderRejectJSON string // from VerAdvancedOrderReject
}

// MsgID implements Message.
func (*ErrorMsg) MsgID() int { return InError }

// AppendFields implements Message.
func (m *ErrorMsg) AppendFields(e *Encoder, ver int) {
	e.Int(2).Int64(m.ReqID).Int(m.Code).Str(m.Text)
	if ver >= VerAdvancedOrderReject {
		e.Str(m.AdvancedOrderRejectJSON)
	}
}

func (m *ErrorMsg) decode(d *Decoder, ver int) {
	d.Skip(1) // version
	m.ReqID = d.Int64()
	m.Code = d.Int()
	m.Text = d.Str()
	if ver >= VerAdvancedOrderReject {
		m.AdvancedOrderRejectJSON = d.Str()
	}
}

// NextValidID carries the next order id; the gateway sends it after startApi.
type NextValidID struct{ OrderID int64 }

// MsgID implements Message.
func (*NextValidID) MsgID() int { return InNextValidID }

// AppendFields implements Message.
func (m *NextValidID) AppendFields(e *Encoder, _ int) { e.Int(1).Int64(m.OrderID) }

func (m *NextValidID) decode(d *Decoder, _ int) { d.Skip(1); m.OrderID = d.Int64() }

// ManagedAccounts lists the accounts the session may use; paper accounts
// start with "DU", live ones with "U".
type ManagedAccounts struct{ Accounts []string }

// MsgID implements Message.
func (*ManagedAccounts) MsgID() int { return InManagedAccounts }

// AppendFields implements Message.
func (m *ManagedAccounts) AppendFields(e *Encoder, _ int) {
	e.Int(1).Str(strings.Join(m.Accounts, ","))
}

func (m *ManagedAccounts) decode(d *Decoder, _ int) {
	d.Skip(1)
	m.Accounts = nil
	for _, a := range strings.Split(d.Str(), ",") {
		if a = strings.TrimSpace(a); a != "" {
			m.Accounts = append(m.Accounts, a)
		}
	}
}

// CurrentTime is the gateway's clock in epoch seconds.
type CurrentTime struct{ Time int64 }

// MsgID implements Message.
func (*CurrentTime) MsgID() int { return InCurrentTime }

// AppendFields implements Message.
func (m *CurrentTime) AppendFields(e *Encoder, _ int) { e.Int(1).Int64(m.Time) }

func (m *CurrentTime) decode(d *Decoder, _ int) { d.Skip(1); m.Time = d.Int64() }

// ContractData is one answer to reqContractDetails.
type ContractData struct {
	ReqID   int64
	Details ContractDetails
}

// MsgID implements Message.
func (*ContractData) MsgID() int { return InContractData }

// AppendFields implements Message.
func (m *ContractData) AppendFields(e *Encoder, ver int) {
	c := &m.Details
	if ver < VerSizeRules {
		e.Int(8)
	}
	ltd := c.LastTradeDateOrContractMonth
	if c.LastTradeTime != "" {
		ltd += " " + c.LastTradeTime
	}
	e.Int64(m.ReqID).Str(c.Symbol).Str(c.SecType).Str(ltd).Float(c.Strike).Str(c.Right).
		Str(c.Exchange).Str(c.Currency).Str(c.LocalSymbol).Str(c.MarketName).Str(c.TradingClass).
		Int64(c.ConID).Float(c.MinTick)
	if ver < VerSizeRules {
		e.Int(c.MdSizeMultiplier)
	}
	e.Str(c.Multiplier).Str(c.OrderTypes).Str(c.ValidExchanges).Int(c.PriceMagnifier).
		Int64(c.UnderConID).Str(c.LongName).Str(c.PrimaryExchange).Str(c.ContractMonth).
		Str(c.Industry).Str(c.Category).Str(c.Subcategory).Str(c.TimeZoneID).
		Str(c.TradingHours).Str(c.LiquidHours).Str(c.EvRule).Float(c.EvMultiplier)
	e.Int(len(c.SecIDList))
	for _, tv := range c.SecIDList {
		e.Str(tv.Tag).Str(tv.Value)
	}
	e.Int(c.AggGroup).Str(c.UnderSymbol).Str(c.UnderSecType).Str(c.MarketRuleIDs).
		Str(c.RealExpirationDate).Str(c.StockType)
	if ver >= VerFractionalSizeSupport && ver < VerSizeRules {
		e.Float(c.SizeMinTick)
	}
	if ver >= VerSizeRules {
		e.Float(c.MinSize).Float(c.SizeIncrement).Float(c.SuggestedSizeIncrement)
	}
}

func (m *ContractData) decode(d *Decoder, ver int) {
	c := &m.Details
	if ver < VerSizeRules {
		d.Skip(1) // message version
	}
	m.ReqID = d.Int64()
	c.Symbol = d.Str()
	c.SecType = d.Str()
	ltd := d.Str()
	c.LastTradeDateOrContractMonth, c.LastTradeTime, _ = strings.Cut(ltd, " ")
	c.Strike = d.Float()
	c.Right = d.Str()
	c.Exchange = d.Str()
	c.Currency = d.Str()
	c.LocalSymbol = d.Str()
	c.MarketName = d.Str()
	c.TradingClass = d.Str()
	c.ConID = d.Int64()
	c.MinTick = d.Float()
	if ver < VerSizeRules {
		c.MdSizeMultiplier = d.Int()
	}
	c.Multiplier = d.Str()
	c.OrderTypes = d.Str()
	c.ValidExchanges = d.Str()
	c.PriceMagnifier = d.Int()
	c.UnderConID = d.Int64()
	c.LongName = d.Str()
	c.PrimaryExchange = d.Str()
	c.ContractMonth = d.Str()
	c.Industry = d.Str()
	c.Category = d.Str()
	c.Subcategory = d.Str()
	c.TimeZoneID = d.Str()
	c.TradingHours = d.Str()
	c.LiquidHours = d.Str()
	c.EvRule = d.Str()
	c.EvMultiplier = d.Float()
	if n := d.Count(2); n > 0 {
		c.SecIDList = make([]TagValue, n)
		for i := range c.SecIDList {
			c.SecIDList[i] = TagValue{Tag: d.Str(), Value: d.Str()}
		}
	}
	c.AggGroup = d.Int()
	c.UnderSymbol = d.Str()
	c.UnderSecType = d.Str()
	c.MarketRuleIDs = d.Str()
	c.RealExpirationDate = d.Str()
	c.StockType = d.Str()
	if ver >= VerFractionalSizeSupport && ver < VerSizeRules {
		c.SizeMinTick = d.Float()
	}
	if ver >= VerSizeRules {
		c.MinSize = d.Float()
		c.SizeIncrement = d.Float()
		c.SuggestedSizeIncrement = d.Float()
	}
}

// ContractDataEnd ends the answers to one reqContractDetails.
type ContractDataEnd struct{ ReqID int64 }

// MsgID implements Message.
func (*ContractDataEnd) MsgID() int { return InContractDataEnd }

// AppendFields implements Message.
func (m *ContractDataEnd) AppendFields(e *Encoder, _ int) { e.Int(1).Int64(m.ReqID) }

func (m *ContractDataEnd) decode(d *Decoder, _ int) { d.Skip(1); m.ReqID = d.Int64() }

// HistoricalData is the whole answer to a reqHistoricalData.
type HistoricalData struct {
	ReqID      int64
	Start, End string
	Bars       []Bar
}

// MsgID implements Message.
func (*HistoricalData) MsgID() int { return InHistoricalData }

// AppendFields implements Message.
func (m *HistoricalData) AppendFields(e *Encoder, _ int) {
	e.Int64(m.ReqID).Str(m.Start).Str(m.End).Int(len(m.Bars))
	for i := range m.Bars {
		b := &m.Bars[i]
		e.Str(b.Time).Float(b.Open).Float(b.High).Float(b.Low).Float(b.Close).
			Float(b.Volume).Float(b.WAP).Int(b.Count)
	}
}

func (m *HistoricalData) decode(d *Decoder, _ int) {
	m.ReqID = d.Int64()
	m.Start = d.Str()
	m.End = d.Str()
	n := d.Count(8)
	if d.Err() != nil || n == 0 {
		return
	}
	m.Bars = make([]Bar, n)
	for i := range m.Bars {
		b := &m.Bars[i]
		b.Time = d.Str()
		b.Open = d.Float()
		b.High = d.Float()
		b.Low = d.Float()
		b.Close = d.Float()
		b.Volume = d.Float()
		b.WAP = d.Float()
		b.Count = d.Int()
	}
}

// HistoricalDataUpdate is one streamed bar of a keepUpToDate request. Its
// fields travel in the order barCount, date, open, close, high, low, wap, volume.
type HistoricalDataUpdate struct {
	ReqID int64
	Bar   Bar
}

// MsgID implements Message.
func (*HistoricalDataUpdate) MsgID() int { return InHistoricalDataUpdate }

// AppendFields implements Message.
func (m *HistoricalDataUpdate) AppendFields(e *Encoder, _ int) {
	b := &m.Bar
	e.Int64(m.ReqID).Int(b.Count).Str(b.Time).Float(b.Open).Float(b.Close).Float(b.High).
		Float(b.Low).Float(b.WAP).Float(b.Volume)
}

func (m *HistoricalDataUpdate) decode(d *Decoder, _ int) {
	b := &m.Bar
	m.ReqID = d.Int64()
	b.Count = d.Int()
	b.Time = d.Str()
	b.Open = d.Float()
	b.Close = d.Float()
	b.High = d.Float()
	b.Low = d.Float()
	b.WAP = d.Float()
	b.Volume = d.Float()
}

// HeadTimestamp answers reqHeadTimestamp: the earliest data available.
type HeadTimestamp struct {
	ReqID     int64
	Timestamp string
}

// MsgID implements Message.
func (*HeadTimestamp) MsgID() int { return InHeadTimestamp }

// AppendFields implements Message.
func (m *HeadTimestamp) AppendFields(e *Encoder, _ int) { e.Int64(m.ReqID).Str(m.Timestamp) }

func (m *HeadTimestamp) decode(d *Decoder, _ int) { m.ReqID = d.Int64(); m.Timestamp = d.Str() }

// SymbolSamples answers reqMatchingSymbols.
type SymbolSamples struct {
	ReqID        int64
	Descriptions []ContractDescription
}

// MsgID implements Message.
func (*SymbolSamples) MsgID() int { return InSymbolSamples }

// AppendFields implements Message.
func (m *SymbolSamples) AppendFields(e *Encoder, ver int) {
	e.Int64(m.ReqID).Int(len(m.Descriptions))
	for i := range m.Descriptions {
		c := &m.Descriptions[i]
		e.Int64(c.ConID).Str(c.Symbol).Str(c.SecType).Str(c.PrimaryExchange).Str(c.Currency)
		e.Int(len(c.DerivativeSecTypes))
		for _, s := range c.DerivativeSecTypes {
			e.Str(s)
		}
		if ver >= VerBondIssuerID {
			e.Str(c.Description).Str(c.IssuerID)
		}
	}
}

func (m *SymbolSamples) decode(d *Decoder, ver int) {
	m.ReqID = d.Int64()
	n := d.Count(6)
	if d.Err() != nil || n == 0 {
		return
	}
	m.Descriptions = make([]ContractDescription, n)
	for i := range m.Descriptions {
		c := &m.Descriptions[i]
		c.ConID = d.Int64()
		c.Symbol = d.Str()
		c.SecType = d.Str()
		c.PrimaryExchange = d.Str()
		c.Currency = d.Str()
		if k := d.Count(1); k > 0 {
			c.DerivativeSecTypes = make([]string, k)
			for j := range c.DerivativeSecTypes {
				c.DerivativeSecTypes[j] = d.Str()
			}
		}
		if ver >= VerBondIssuerID {
			c.Description = d.Str()
			c.IssuerID = d.Str()
		}
		if d.Err() != nil {
			return
		}
	}
}

// ---- Outgoing messages ----

// StartAPI opens the API session with a client id, after the handshake.
type StartAPI struct {
	ClientID             int
	OptionalCapabilities string
}

// MsgID implements Message.
func (*StartAPI) MsgID() int { return OutStartAPI }

// AppendFields implements Message.
func (m *StartAPI) AppendFields(e *Encoder, _ int) {
	e.Int(2).Int(m.ClientID).Str(m.OptionalCapabilities)
}

func (m *StartAPI) decode(d *Decoder, _ int) {
	d.Skip(1)
	m.ClientID = d.Int()
	if d.Remaining() > 0 {
		m.OptionalCapabilities = d.Str()
	}
}

// ReqIDs asks for the next valid order id; the gateway answers NextValidID.
type ReqIDs struct{ NumIDs int }

// MsgID implements Message.
func (*ReqIDs) MsgID() int { return OutReqIDs }

// AppendFields implements Message.
func (m *ReqIDs) AppendFields(e *Encoder, _ int) { e.Int(1).Int(m.NumIDs) }

func (m *ReqIDs) decode(d *Decoder, _ int) { d.Skip(1); m.NumIDs = d.Int() }

// ReqCurrentTime asks for the gateway's clock.
type ReqCurrentTime struct{}

// MsgID implements Message.
func (*ReqCurrentTime) MsgID() int { return OutReqCurrentTime }

// AppendFields implements Message.
func (*ReqCurrentTime) AppendFields(e *Encoder, _ int) { e.Int(1) }

func (*ReqCurrentTime) decode(d *Decoder, _ int) { d.Skip(1) }

// ReqContractDetails asks for every contract matching Contract.
type ReqContractDetails struct {
	ReqID     int64
	Contract  Contract
	SecIDType string
	SecID     string
	IssuerID  string // from VerBondIssuerID
}

// MsgID implements Message.
func (*ReqContractDetails) MsgID() int { return OutReqContractDetails }

// AppendFields implements Message.
func (m *ReqContractDetails) AppendFields(e *Encoder, ver int) {
	e.Int(8).Int64(m.ReqID)
	m.Contract.appendTo(e)
	e.Str(m.SecIDType).Str(m.SecID)
	if ver >= VerBondIssuerID {
		e.Str(m.IssuerID)
	}
}

func (m *ReqContractDetails) decode(d *Decoder, ver int) {
	d.Skip(1)
	m.ReqID = d.Int64()
	m.Contract.decode(d)
	m.SecIDType = d.Str()
	m.SecID = d.Str()
	if ver >= VerBondIssuerID && d.Remaining() > 0 {
		m.IssuerID = d.Str()
	}
}

// ReqHistoricalData asks for bars. EndDateTime empty means now;
// KeepUpToDate streams HistoricalDataUpdate until cancelled.
type ReqHistoricalData struct {
	ReqID        int64
	Contract     Contract
	EndDateTime  string
	BarSize      string // "1 min", "1 hour", "1 day"...
	Duration     string // "N S|D|W|M|Y"
	UseRTH       bool
	WhatToShow   string // TRADES, MIDPOINT, BID, ASK, BID_ASK...
	FormatDate   int    // 1: text dates, 2: epoch seconds
	KeepUpToDate bool
	ChartOptions string // tag/value list, unused by IB
}

// MsgID implements Message.
func (*ReqHistoricalData) MsgID() int { return OutReqHistoricalData }

// AppendFields implements Message.
func (m *ReqHistoricalData) AppendFields(e *Encoder, _ int) {
	e.Int64(m.ReqID)
	m.Contract.appendTo(e)
	e.Str(m.EndDateTime).Str(m.BarSize).Str(m.Duration).Bool(m.UseRTH).Str(m.WhatToShow).Int(m.FormatDate)
	if strings.EqualFold(m.Contract.SecType, "BAG") {
		e.Int(len(m.Contract.ComboLegs))
		for _, l := range m.Contract.ComboLegs {
			e.Int64(l.ConID).Int(l.Ratio).Str(l.Action).Str(l.Exchange)
		}
	}
	e.Bool(m.KeepUpToDate).Str(m.ChartOptions)
}

func (m *ReqHistoricalData) decode(d *Decoder, _ int) {
	m.ReqID = d.Int64()
	m.Contract.decode(d)
	m.EndDateTime = d.Str()
	m.BarSize = d.Str()
	m.Duration = d.Str()
	m.UseRTH = d.Bool()
	m.WhatToShow = d.Str()
	m.FormatDate = d.Int()
	if strings.EqualFold(m.Contract.SecType, "BAG") {
		if n := d.Count(4); n > 0 {
			m.Contract.ComboLegs = make([]ComboLeg, n)
			for i := range m.Contract.ComboLegs {
				l := &m.Contract.ComboLegs[i]
				l.ConID = d.Int64()
				l.Ratio = d.Int()
				l.Action = d.Str()
				l.Exchange = d.Str()
			}
		}
	}
	m.KeepUpToDate = d.Bool()
	m.ChartOptions = d.Str()
}

// CancelHistoricalData cancels a running historical query or keepUpToDate stream.
type CancelHistoricalData struct{ ReqID int64 }

// MsgID implements Message.
func (*CancelHistoricalData) MsgID() int { return OutCancelHistoricalData }

// AppendFields implements Message.
func (m *CancelHistoricalData) AppendFields(e *Encoder, _ int) { e.Int(1).Int64(m.ReqID) }

func (m *CancelHistoricalData) decode(d *Decoder, _ int) { d.Skip(1); m.ReqID = d.Int64() }

// ReqHeadTimestamp asks for the earliest data available for a contract.
type ReqHeadTimestamp struct {
	ReqID      int64
	Contract   Contract
	UseRTH     bool
	WhatToShow string
	FormatDate int
}

// MsgID implements Message.
func (*ReqHeadTimestamp) MsgID() int { return OutReqHeadTimestamp }

// AppendFields implements Message.
func (m *ReqHeadTimestamp) AppendFields(e *Encoder, _ int) {
	e.Int64(m.ReqID)
	m.Contract.appendTo(e)
	e.Bool(m.UseRTH).Str(m.WhatToShow).Int(m.FormatDate)
}

func (m *ReqHeadTimestamp) decode(d *Decoder, _ int) {
	m.ReqID = d.Int64()
	m.Contract.decode(d)
	m.UseRTH = d.Bool()
	m.WhatToShow = d.Str()
	m.FormatDate = d.Int()
}

// CancelHeadTimestamp cancels a pending reqHeadTimestamp.
type CancelHeadTimestamp struct{ ReqID int64 }

// MsgID implements Message.
func (*CancelHeadTimestamp) MsgID() int { return OutCancelHeadTimestamp }

// AppendFields implements Message.
func (m *CancelHeadTimestamp) AppendFields(e *Encoder, _ int) { e.Int64(m.ReqID) }

func (m *CancelHeadTimestamp) decode(d *Decoder, _ int) { m.ReqID = d.Int64() }

// ReqMatchingSymbols searches contracts by symbol or name prefix.
type ReqMatchingSymbols struct {
	ReqID   int64
	Pattern string
}

// MsgID implements Message.
func (*ReqMatchingSymbols) MsgID() int { return OutReqMatchingSymbols }

// AppendFields implements Message.
func (m *ReqMatchingSymbols) AppendFields(e *Encoder, _ int) { e.Int64(m.ReqID).Str(m.Pattern) }

func (m *ReqMatchingSymbols) decode(d *Decoder, _ int) { m.ReqID = d.Int64(); m.Pattern = d.Str() }
