package ibsim_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

// Every wait in these tests is bounded: a simulator that stops answering must
// fail a test, never hang it.
const (
	// replyTimeout bounds the wait for a message that should arrive.
	replyTimeout = 5 * time.Second
	// quietFor is how long a client watches for a message that must not come.
	quietFor = 300 * time.Millisecond
)

// testNow is the simulator clock of most tests: Wednesday 12 March 2025,
// 11:00 New York time, inside US stock regular hours, so intraday bars and
// keepUpToDate streams are deterministic.
var testNow = time.Date(2025, time.March, 12, 15, 0, 0, 0, time.UTC)

// startSim starts a simulator for one test, on a fixed clock unless cfg sets
// one, and closes it when the test ends.
func startSim(t testing.TB, cfg ibsim.Config) *ibsim.Server {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	srv, err := ibsim.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// rawClient is a minimal synchronous TWS API client built on package tws.
// It starts no goroutines and every read carries a deadline.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	fr   *tws.FrameReader
	ver  int // negotiated server version, 0 before the handshake
	// skipped keeps the messages waitFor passed over, for failure reports
	// and for tests that check what else arrived.
	skipped []tws.Message
}

// tryDial opens a TCP connection to addr; the socket closes with the test.
func tryDial(t testing.TB, addr string) (*rawClient, error) {
	conn, err := net.DialTimeout("tcp", addr, replyTimeout)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, fr: tws.NewFrameReader(bufio.NewReader(conn), 0)}, nil
}

func dial(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := tryDial(t, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return c
}

// connect dials srv, negotiates v157..178, starts the API as clientID and
// consumes the startup messages (managedAccounts, nextValidId and the three
// farm notices), which it returns in arrival order.
func connect(t testing.TB, srv *ibsim.Server, clientID int) (*rawClient, []tws.Message) {
	t.Helper()
	c := dial(t, srv.Addr())
	if _, err := c.handshake(tws.MinServerVersion, tws.MaxServerVersion); err != nil {
		t.Fatalf("client %d: handshake: %v", clientID, err)
	}
	c.send(&tws.StartAPI{ClientID: clientID})
	return c, c.readStartup()
}

// readStartup reads until managedAccounts, nextValidId and three farm
// notices have arrived; anything the gateway sends later (a 1100) stays unread.
func (c *rawClient) readStartup() []tws.Message {
	c.t.Helper()
	var got []tws.Message
	var accounts, nextID bool
	farms := 0
	deadline := time.Now().Add(replyTimeout)
	for !accounts || !nextID || farms < 3 {
		m, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("startup messages: %v (so far %s)", err, describeAll(got))
		}
		got = append(got, m)
		switch m := m.(type) {
		case *tws.ManagedAccounts:
			accounts = true
		case *tws.NextValidID:
			nextID = true
		case *tws.ErrorMsg:
			if isFarmNotice(m.Code) {
				farms++
			}
		}
	}
	return got
}

func isFarmNotice(code int) bool {
	switch code {
	case ibsim.CodeMarketFarmOK, ibsim.CodeMarketFarmBroken, ibsim.CodeHMDSFarmOK, ibsim.CodeHMDSFarmBroken, ibsim.CodeSecDefFarmOK, ibsim.CodeSecDefFarmBroken:
		return true
	}
	return false
}

// write sends raw bytes with a deadline.
func (c *rawClient) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err := c.conn.Write(b)
	return err
}

// handshake sends "API\0" and v<minV>..<maxV>, then reads the server's reply.
func (c *rawClient) handshake(minV, maxV int) (tws.ServerHello, error) {
	b, err := tws.AppendClientHello(nil, tws.ClientHello{MinVersion: minV, MaxVersion: maxV})
	if err != nil {
		return tws.ServerHello{}, err
	}
	if err := c.write(b); err != nil {
		return tws.ServerHello{}, err
	}
	return c.readHello(replyTimeout)
}

// readHello reads the server's first frame within timeout.
func (c *rawClient) readHello(timeout time.Duration) (tws.ServerHello, error) {
	payload, err := c.readFrame(timeout)
	if err != nil {
		return tws.ServerHello{}, err
	}
	h, err := tws.ParseServerHello(payload)
	if err != nil {
		return tws.ServerHello{}, err
	}
	c.ver = h.Version
	return h, nil
}

// send encodes m for the negotiated version and writes it.
func (c *rawClient) send(m tws.Message) {
	c.t.Helper()
	b, err := tws.Encode(m, c.ver)
	if err != nil {
		c.t.Fatalf("encode %T: %v", m, err)
	}
	if err := c.write(b); err != nil {
		c.t.Fatalf("send %T: %v", m, err)
	}
}

// readFrame reads one frame within timeout and returns a copy of its payload.
func (c *rawClient) readFrame(timeout time.Duration) ([]byte, error) {
	if timeout <= 0 {
		timeout = time.Millisecond
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	p, err := c.fr.Next()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), p...), nil
}

// next reads and decodes one message within timeout.
func (c *rawClient) next(timeout time.Duration) (tws.Message, error) {
	p, err := c.readFrame(timeout)
	if err != nil {
		return nil, err
	}
	return tws.DecodeIncoming(p, c.ver)
}

// waitFor reads until a message satisfies match and returns it, skipping
// others; it fails the test if none arrives within timeout.
func (c *rawClient) waitFor(timeout time.Duration, what string, match func(tws.Message) bool) tws.Message {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v (skipped: %s)", what, err, describeAll(c.skipped))
		}
		if match(m) {
			return m
		}
		c.skipped = append(c.skipped, m)
	}
}

// waitErr waits for error code on reqID (tws.NoRequestID for connection-level codes).
func (c *rawClient) waitErr(code int, reqID int64) *tws.ErrorMsg {
	c.t.Helper()
	return c.waitFor(replyTimeout, fmt.Sprintf("error %d for id %d", code, reqID), isErr(code, reqID)).(*tws.ErrorMsg)
}

// currentTime asks for the gateway's clock and waits for the answer.
func (c *rawClient) currentTime() *tws.CurrentTime {
	c.t.Helper()
	c.send(&tws.ReqCurrentTime{})
	return c.waitFor(replyTimeout, "currentTime", isType[*tws.CurrentTime]).(*tws.CurrentTime)
}

// expectQuiet fails if a message satisfying match arrives within d; other
// messages are allowed. It also fails if the connection ends meanwhile.
func (c *rawClient) expectQuiet(d time.Duration, what string, match func(tws.Message) bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		m, err := c.next(time.Until(deadline))
		if isTimeout(err) {
			return
		}
		if err != nil {
			c.t.Fatalf("waiting for silence (%s): %v", what, err)
		}
		if match(m) {
			c.t.Fatalf("got %s, want no %s within %v", describe(m), what, d)
		}
	}
}

// expectClosed reads until the gateway closes the connection, which must
// happen within timeout, and returns the messages that came before.
func (c *rawClient) expectClosed(timeout time.Duration) []tws.Message {
	c.t.Helper()
	var got []tws.Message
	deadline := time.Now().Add(timeout)
	for {
		m, err := c.next(time.Until(deadline))
		if isClosed(err) {
			return got
		}
		if err != nil {
			var unk *tws.UnknownMessageError
			if !errors.As(err, &unk) {
				c.t.Fatalf("want the connection closed, got %v (after %s)", err, describeAll(got))
			}
			continue
		}
		got = append(got, m)
	}
}

// isClosed reports an end of connection as a client sees it: EOF, or a reset
// when the gateway closed with bytes still unread on its side.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isErr(code int, reqID int64) func(tws.Message) bool {
	return func(m tws.Message) bool {
		e, ok := m.(*tws.ErrorMsg)
		return ok && e.Code == code && e.ReqID == reqID
	}
}

func isType[T tws.Message](m tws.Message) bool {
	_, ok := m.(T)
	return ok
}

// sawErr reports whether waitFor skipped error code.
func (c *rawClient) sawErr(code int) bool {
	return slices.ContainsFunc(c.skipped, func(m tws.Message) bool { return isErr(code, tws.NoRequestID)(m) })
}

// anyMsg matches every message.
func anyMsg(tws.Message) bool { return true }

func describe(m tws.Message) string {
	if e, ok := m.(*tws.ErrorMsg); ok {
		return fmt.Sprintf("error(id=%d code=%d %q)", e.ReqID, e.Code, e.Text)
	}
	return fmt.Sprintf("%T%+v", m, m)
}

func describeAll(ms []tws.Message) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = describe(m)
	}
	return "[" + strings.Join(s, "; ") + "]"
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// stockContract is a US stock routed through SMART, as clients ask for it.
func stockContract(sym string) tws.Contract {
	return tws.Contract{Symbol: sym, SecType: "STK", Exchange: "SMART", Currency: "USD"}
}

// histReq is a historical data request with the fields tests vary.
func histReq(id int64, c tws.Contract, end, dur, bar, what string) *tws.ReqHistoricalData {
	return &tws.ReqHistoricalData{ReqID: id, Contract: c, EndDateTime: end, Duration: dur,
		BarSize: bar, WhatToShow: what, UseRTH: true, FormatDate: 2}
}

// isReply matches a message answering reqID: data, its end, or an error.
func isReply(reqID int64) func(tws.Message) bool {
	return func(m tws.Message) bool {
		switch m := m.(type) {
		case *tws.HistoricalData:
			return m.ReqID == reqID
		case *tws.HeadTimestamp:
			return m.ReqID == reqID
		case *tws.ContractData:
			return m.ReqID == reqID
		case *tws.ContractDataEnd:
			return m.ReqID == reqID
		case *tws.SymbolSamples:
			return m.ReqID == reqID
		case *tws.ErrorMsg:
			return m.ReqID == reqID
		}
		return false
	}
}
