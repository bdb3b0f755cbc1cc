package ibsim

import (
	"errors"
	"fmt"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// handle answers one request after the request faults had their say.
func (ss *session) handle(m tws.Message) {
	s := ss.s
	clientID := int(ss.clientID.Load())
	ev := Event{Kind: EvRequest, ClientID: clientID, Message: m, SincePrevCurrentTime: -1}
	if _, ok := m.(*tws.ReqCurrentTime); ok {
		now := time.Now()
		if !ss.lastCT.IsZero() {
			ev.SincePrevCurrentTime = now.Sub(ss.lastCT)
		}
		ss.lastCT = now
	}
	s.intercept(&ev)
	if ev.Silence {
		s.log.Debug("not answering request (fault)", "client_id", clientID, "msg", fmt.Sprintf("%T", m))
		return
	}
	if ev.Reject != nil {
		if ev.Close {
			ss.sendClosing(ev.Reject, nil, "closed by fault")
		} else {
			ss.send(ev.Reject, nil)
		}
		return
	}
	switch m := m.(type) {
	case *tws.ReqCurrentTime:
		ss.send(&tws.CurrentTime{Time: s.cfg.Now().Unix()}, nil)
	case *tws.ReqIDs:
		ss.send(&tws.NextValidID{OrderID: 1}, nil)
	case *tws.ReqContractDetails:
		ss.contractDetails(m)
	case *tws.ReqHistoricalData:
		ss.historicalData(m)
	case *tws.CancelHistoricalData:
		ss.cancelHistorical(m.ReqID)
	case *tws.ReqHeadTimestamp:
		ss.headTimestamp(m)
	case *tws.CancelHeadTimestamp:
		ss.endQuery(m.ReqID) // IB sends no acknowledgement
	case *tws.ReqMatchingSymbols:
		ss.matchingSymbols(m)
	case *tws.StartAPI:
		s.log.Warn("ignoring repeated startApi", "client_id", clientID)
	}
}

// requestError answers reqID with err: the IB error it carries, or a 321.
func (ss *session) requestError(reqID int64, err error) {
	var re *RequestError
	if !errors.As(err, &re) {
		re = &RequestError{Code: CodeValidation, Msg: "Error validating request.-'bS' : cause - " + err.Error()}
	}
	ss.send(&tws.ErrorMsg{ReqID: reqID, Code: re.Code, Text: re.Msg}, nil)
}

func contractQuery(c *tws.Contract) ContractQuery {
	return ContractQuery{ConID: c.ConID, Symbol: c.Symbol, SecType: c.SecType,
		LastTradeDateOrContractMonth: c.LastTradeDateOrContractMonth, Exchange: c.Exchange,
		PrimaryExchange: c.PrimaryExchange, Currency: c.Currency, LocalSymbol: c.LocalSymbol,
		TradingClass: c.TradingClass}
}

func (ss *session) contractDetails(m *tws.ReqContractDetails) {
	in, err := ss.s.cfg.Catalog.Resolve(contractQuery(&m.Contract))
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	ss.send(&tws.ContractData{ReqID: m.ReqID, Details: details(in, ss.s.cfg.Now())}, nil)
	ss.send(&tws.ContractDataEnd{ReqID: m.ReqID}, nil)
}

// details renders an instrument as contractData carries it.
func details(in *Instrument, now time.Time) tws.ContractDetails {
	return tws.ContractDetails{
		Contract: tws.Contract{ConID: in.ConID, Symbol: in.Symbol, SecType: in.SecType,
			LastTradeDateOrContractMonth: in.LastTradeDateOrContractMonth, Multiplier: in.Multiplier,
			Exchange: in.Exchange, PrimaryExchange: in.PrimaryExchange, Currency: in.Currency,
			LocalSymbol: in.LocalSymbol, TradingClass: in.TradingClass},
		MarketName: in.MarketName, MinTick: in.MinTick, MdSizeMultiplier: 1, OrderTypes: in.OrderTypes,
		ValidExchanges: in.ValidExchanges, PriceMagnifier: 1, LongName: in.LongName,
		ContractMonth: in.ContractMonth, Industry: in.Industry, Category: in.Category,
		Subcategory: in.Subcategory, TimeZoneID: in.TimeZoneID, TradingHours: in.TradingHours(now),
		LiquidHours: in.LiquidHours(now), StockType: in.StockType, RealExpirationDate: in.LastTradeDateOrContractMonth,
		MinSize: 1, SizeIncrement: 1, SuggestedSizeIncrement: 1, SizeMinTick: 1,
	}
}

func (ss *session) matchingSymbols(m *tws.ReqMatchingSymbols) {
	var out []tws.ContractDescription
	for _, in := range ss.s.cfg.Catalog.Match(m.Pattern) {
		d := tws.ContractDescription{ConID: in.ConID, Symbol: in.Symbol, SecType: in.SecType,
			PrimaryExchange: in.PrimaryExchange, Currency: in.Currency, Description: in.LongName}
		if d.PrimaryExchange == "" {
			d.PrimaryExchange = in.Exchange
		}
		if in.SecType == "STK" {
			d.DerivativeSecTypes = []string{"CFD", "OPT", "IOPT", "WAR"}
		}
		out = append(out, d)
	}
	ss.send(&tws.SymbolSamples{ReqID: m.ReqID, Descriptions: out}, nil)
}

// startQuery registers a pending query; false if the id is already running.
func (ss *session) startQuery(id int64) (*query, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, dup := ss.queries[id]; dup {
		return nil, false
	}
	q := &query{stop: make(chan struct{})}
	ss.queries[id] = q
	return q, true
}

// endQuery forgets a query, reporting whether it was still running.
func (ss *session) endQuery(id int64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	q, ok := ss.queries[id]
	if ok {
		delete(ss.queries, id)
		close(q.stop)
	}
	return ok
}

// deliver returns a writer check that lets the answer out only if the
// query was not cancelled meanwhile; unless keep, the query ends there.
func (ss *session) deliver(id int64, q *query, keep bool) func() bool {
	return func() bool {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.queries[id] != q {
			return false
		}
		if !keep {
			delete(ss.queries, id)
			close(q.stop)
		}
		return true
	}
}

func (ss *session) duplicateID(id int64) {
	ss.send(&tws.ErrorMsg{ReqID: id, Code: 322, Text: fmt.Sprintf("Error processing request.-'bS' : cause - Duplicate ticker id %d", id)}, nil)
}

func (ss *session) historicalData(m *tws.ReqHistoricalData) {
	s := ss.s
	in, err := s.cfg.Catalog.Resolve(contractQuery(&m.Contract))
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	bs, err := ParseBarSize(m.BarSize)
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	if m.KeepUpToDate && m.EndDateTime != "" {
		ss.requestError(m.ReqID, &RequestError{Code: CodeValidation,
			Msg: "Error validating request.-'bX' : cause - End date not supported with live updates"})
		return
	}
	now := s.cfg.Now()
	if bs.Intraday() && bs.Dur <= 30*time.Second {
		if rule := s.pacer.admit(time.Now(), pacingKeys(in, m)); rule != "" {
			s.counters.pacingViolations.Add(1)
			s.log.Info("historical pacing violation", "client_id", ss.clientID.Load(), "req_id", m.ReqID, "rule", rule)
			ss.send(&tws.ErrorMsg{ReqID: m.ReqID, Code: CodeHMDS, Text: hmdsPrefix + "Historical data request pacing violation"}, nil)
			return
		}
	}
	end, err := ParseEndDateTime(m.EndDateTime, in.Location(), now)
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	res, err := s.history.Bars(HistoryQuery{Inst: in, End: end, Now: now, Duration: m.Duration,
		BarSize: m.BarSize, WhatToShow: m.WhatToShow, UseRTH: m.UseRTH})
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	q, ok := ss.startQuery(m.ReqID)
	if !ok {
		ss.duplicateID(m.ReqID)
		return
	}
	msg := &tws.HistoricalData{ReqID: m.ReqID, Start: formatRange(res.Start, in), End: formatRange(res.End, in),
		Bars: make([]tws.Bar, len(res.Bars))}
	for i, b := range res.Bars {
		msg.Bars[i] = wireBar(b, bs, m.FormatDate, in)
	}
	ss.send(msg, ss.deliver(m.ReqID, q, m.KeepUpToDate))
	if m.KeepUpToDate {
		ss.streams.Add(1)
		go ss.stream(m, q, in, bs)
	}
}

func wireBar(b Bar, bs BarSize, formatDate int, in *Instrument) tws.Bar {
	return tws.Bar{Time: FormatBarTime(b.Time, bs, formatDate, in), Open: b.Open, High: b.High,
		Low: b.Low, Close: b.Close, Volume: b.Volume, WAP: b.WAP, Count: b.Count}
}

// formatRange renders the start and end fields of a historicalData reply.
func formatRange(t time.Time, in *Instrument) string {
	return t.In(in.Location()).Format("20060102 15:04:05") + " " + in.TimeZoneID
}

// stream sends the bar in progress of a keepUpToDate request until the
// request is cancelled or the session ends.
func (ss *session) stream(m *tws.ReqHistoricalData, q *query, in *Instrument, bs BarSize) {
	defer ss.streams.Done()
	every := 5 * time.Second
	if bs.Intraday() && bs.Dur < every {
		every = bs.Dur
	}
	t := time.NewTicker(scaled(every, ss.s.cfg.TimeScale))
	defer t.Stop()
	for {
		select {
		case <-ss.done:
			return
		case <-q.stop:
			return
		case <-t.C:
		}
		now := ss.s.cfg.Now()
		if !in.InSession(now, m.UseRTH) {
			continue
		}
		start := barStart(now, bs, in)
		b := ss.s.history.Bar(in, bs, m.WhatToShow, start)
		ss.send(&tws.HistoricalDataUpdate{ReqID: m.ReqID, Bar: wireBar(b, bs, m.FormatDate, in)},
			ss.deliver(m.ReqID, q, true))
	}
}

// barStart is the start of the bar of size bs containing t: intraday bars
// align from midnight in the instrument's zone, longer bars to the day.
func barStart(t time.Time, bs BarSize, in *Instrument) time.Time {
	lt := t.In(in.Location())
	midnight := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, lt.Location())
	if !bs.Intraday() {
		return midnight.UTC()
	}
	return midnight.Add(lt.Sub(midnight).Truncate(bs.Dur)).UTC()
}

func (ss *session) cancelHistorical(id int64) {
	if ss.endQuery(id) {
		ss.send(&tws.ErrorMsg{ReqID: id, Code: CodeHMDS, Text: fmt.Sprintf("%sAPI historical data query cancelled: %d", hmdsPrefix, id)}, nil)
		return
	}
	ss.send(&tws.ErrorMsg{ReqID: id, Code: CodeNoHistoricalQuery, Text: fmt.Sprintf("No historical data query found for ticker id:%d", id)}, nil)
}

func (ss *session) headTimestamp(m *tws.ReqHeadTimestamp) {
	in, err := ss.s.cfg.Catalog.Resolve(contractQuery(&m.Contract))
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	t, err := ss.s.history.HeadTimestamp(in, m.WhatToShow, m.UseRTH)
	if err != nil {
		ss.requestError(m.ReqID, err)
		return
	}
	q, ok := ss.startQuery(m.ReqID)
	if !ok {
		ss.duplicateID(m.ReqID)
		return
	}
	ss.send(&tws.HeadTimestamp{ReqID: m.ReqID, Timestamp: FormatHeadTimestamp(t, m.FormatDate, in)}, ss.deliver(m.ReqID, q, false))
}
