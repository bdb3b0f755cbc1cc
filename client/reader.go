package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// readLoop is the connection's only reader. It never blocks on a consumer:
// answers go to calls that buffer them, events to bounded subscriptions.
func (c *Conn) readLoop(fr *tws.FrameReader) {
	defer c.wg.Done()
	for {
		payload, err := fr.Next()
		if err != nil {
			c.fail(err)
			return
		}
		c.lastMsg.Store(time.Now().UnixNano())
		m, err := tws.DecodeIncoming(payload, c.version)
		if err != nil {
			var unk *tws.UnknownMessageError
			if errors.As(err, &unk) {
				c.unknown.Add(1)
				continue
			}
			// A message we cannot decode means the gateway speaks a layout
			// we do not: no later answer on this connection can be trusted.
			c.fail(fmt.Errorf("malformed message from gateway: %w", err))
			return
		}
		c.dispatch(m)
	}
}

// isWarning reports codes IB sends with a request id that do not fail the request.
func isWarning(code int) bool {
	return (code >= 2100 && code < 2200) || code == 10167 || code == 165
}

func (c *Conn) dispatch(m tws.Message) {
	switch m := m.(type) {
	case *tws.ErrorMsg:
		if m.Code == CodeClientIDInUse {
			c.recordEvent(m)
			c.fail(&ClientIDInUseError{ClientID: c.clientID, Text: m.Text})
			return
		}
		if m.ReqID == tws.NoRequestID || isWarning(m.Code) {
			c.recordEvent(m)
			return
		}
		if cl := c.takeCall(m.ReqID); cl != nil {
			cl.finish(&IBError{Code: m.Code, ReqID: m.ReqID, Text: m.Text})
			return
		}
		c.log.Debug("error for no pending request", "req_id", m.ReqID, "code", m.Code, "text", m.Text)
	case *tws.CurrentTime:
		c.mu.Lock()
		f := c.ct
		c.ct = nil
		if f != nil {
			// Finished under c.mu so that lastCT and the flight agree; the
			// gap to the next request counts from this answer, when the
			// gateway has surely seen the request.
			f.finish(time.Unix(m.Time, 0), nil)
			c.lastCT = &f.res
		}
		c.mu.Unlock()
	case *tws.ContractData:
		if cl := c.peekCall(m.ReqID); cl != nil {
			cl.add(m)
		}
	case *tws.ContractDataEnd:
		if cl := c.takeCall(m.ReqID); cl != nil {
			cl.finish(nil)
		}
	case *tws.HistoricalData:
		c.answer(m.ReqID, m)
	case *tws.HistoricalDataUpdate:
		if cl := c.peekCall(m.ReqID); cl != nil {
			cl.add(m)
		}
	case *tws.HeadTimestamp:
		c.answer(m.ReqID, m)
	case *tws.SymbolSamples:
		c.answer(m.ReqID, m)
	case *tws.ManagedAccounts, *tws.NextValidID:
		// Repeated after reqIds; nothing waits for them after connect.
	}
}

// answer completes a one-message call, or feeds a stream its first message.
func (c *Conn) answer(id int64, m tws.Message) {
	cl := c.peekCall(id)
	if cl == nil {
		return // a late answer to a call that gave up
	}
	if cl.stream {
		cl.add(m)
		return
	}
	if c.takeCall(id) == cl {
		cl.add(m)
		cl.finish(nil)
	}
}

func (c *Conn) peekCall(id int64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func (c *Conn) takeCall(id int64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.calls[id]
	delete(c.calls, id)
	return cl
}
