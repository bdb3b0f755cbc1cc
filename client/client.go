// Package client is a TWS API client that cannot hang: one connection, one
// client id, one gateway. Every call takes a context and returns when it
// ends; every connect stage has a deadline and names itself when it fails;
// when the connection fails, every pending request fails at once.
//
// The client is read-only by construction: it has no way to send orders.
package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// Defaults of Config.
const (
	DefaultConnectTimeout = 3 * time.Second
	DefaultMaxRate        = 45 // messages per second; IB disconnects or rejects above 50
	DefaultEventBuffer    = 64
)

// Config configures a connection.
type Config struct {
	// Addr is the gateway's host:port.
	Addr string
	// ClientID is the API client id; each live connection to a gateway needs its own.
	ClientID int
	// ConnectTimeout bounds the whole connect (TCP, handshake, startApi and
	// the first nextValidId/managedAccounts); default 3s.
	ConnectTimeout time.Duration
	// MaxRate caps outgoing messages per second over any one-second window; default 45.
	MaxRate int
	// WriteTimeout bounds one socket write; default 5s.
	WriteTimeout time.Duration
	// Logger; default discards.
	Logger *slog.Logger
	// Dialer opens the TCP connection; default net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is one API session. All methods are safe for concurrent use.
type Conn struct {
	cfg       Config
	nc        net.Conn
	log       *slog.Logger
	version   int
	connTime  string
	accounts  []string
	clientID  int
	connected time.Time

	lastMsg atomic.Int64 // unix nanos of the last message received
	nextID  atomic.Int64

	out *writer

	mu       sync.Mutex
	calls    map[int64]*call
	ct       *ctFlight   // the one reqCurrentTime in flight
	lastCT   *ServerTime // the last answered reqCurrentTime
	subs     map[*Subscription]struct{}
	recent   []Event // the last events, for status pages
	dropped  int64
	closeErr error // why the connection ended

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	unknown   atomic.Int64
}

// Dial connects, handshakes, sends startApi and waits for nextValidId and
// managedAccounts, all within cfg.ConnectTimeout (or ctx's deadline if
// sooner). A failure is a *ConnectError naming the stage, or a
// *ClientIDInUseError; either way the socket is closed and nothing is left
// running.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxRate <= 0 {
		cfg.MaxRate = DefaultMaxRate
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Dialer == nil {
		var d net.Dialer
		cfg.Dialer = d.DialContext
	}
	budget := cfg.ConnectTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < budget {
		budget = max(time.Until(dl), 0)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	deadline, _ := ctx.Deadline()

	nc, err := cfg.Dialer(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, connectError(ctx, cfg.Addr, budget, &ConnectError{Stage: StageTCP, Err: err})
	}
	// The socket deadline bounds every read and write of the connect; a
	// cancelled ctx pulls it in to now so a blocked read returns at once.
	_ = nc.SetDeadline(deadline)
	stopCancel := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	c, err := handshake(nc, cfg)
	stopCancel()
	if err != nil {
		nc.Close()
		return nil, connectError(ctx, cfg.Addr, budget, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// connectError completes a connect failure with the address, the deadline
// and whether the stage timed out or the caller cancelled.
func connectError(ctx context.Context, addr string, budget time.Duration, err error) error {
	var ce *ConnectError
	if !errors.As(err, &ce) {
		return err // *ClientIDInUseError
	}
	ce.Addr, ce.Deadline = addr, budget
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		ce.Err = ctx.Err()
	case errors.Is(ce.Err, os.ErrDeadlineExceeded), errors.Is(ce.Err, context.DeadlineExceeded), ctx.Err() != nil:
		ce.timedOut = true
	}
	return ce
}

// handshake runs the connect protocol on nc and returns a started Conn.
func handshake(nc net.Conn, cfg Config) (*Conn, error) {
	stageErr := func(s Stage, err error) error { return &ConnectError{Stage: s, Err: err} }
	hello, err := tws.AppendClientHello(nil, tws.ClientHello{MinVersion: tws.MinServerVersion, MaxVersion: tws.MaxServerVersion})
	if err != nil {
		return nil, stageErr(StageHandshake, err)
	}
	if _, err := nc.Write(hello); err != nil {
		return nil, stageErr(StageHandshake, err)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	fr := tws.NewFrameReader(br, 0)
	payload, err := fr.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("gateway closed the connection before answering the handshake (version %d..%d refused?): %w",
				tws.MinServerVersion, tws.MaxServerVersion, err)
		}
		return nil, stageErr(StageHandshake, err)
	}
	sh, err := tws.ParseServerHello(payload)
	if err != nil {
		return nil, stageErr(StageHandshake, err)
	}
	if sh.Version < tws.MinServerVersion || sh.Version > tws.MaxServerVersion {
		return nil, stageErr(StageHandshake, fmt.Errorf("%w: gateway chose %d, we speak %d..%d",
			tws.ErrVersionMismatch, sh.Version, tws.MinServerVersion, tws.MaxServerVersion))
	}
	start, err := tws.Encode(&tws.StartAPI{ClientID: cfg.ClientID}, sh.Version)
	if err != nil {
		return nil, stageErr(StageStartAPI, err)
	}
	if _, err := nc.Write(start); err != nil {
		return nil, stageErr(StageStartAPI, err)
	}
	c := &Conn{
		cfg: cfg, nc: nc, log: cfg.Logger, version: sh.Version, connTime: sh.ConnectionTime,
		clientID: cfg.ClientID, calls: map[int64]*call{}, subs: map[*Subscription]struct{}{},
		done: make(chan struct{}),
	}
	var gotID, gotAccounts bool
	for !gotID || !gotAccounts {
		payload, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, tws.ErrTruncatedFrame) || isReset(err) {
				return nil, &ClientIDInUseError{ClientID: cfg.ClientID}
			}
			return nil, stageErr(StageStartAPI, err)
		}
		m, err := tws.DecodeIncoming(payload, sh.Version)
		if err != nil {
			var unk *tws.UnknownMessageError
			if errors.As(err, &unk) {
				continue
			}
			return nil, stageErr(StageStartAPI, err)
		}
		switch m := m.(type) {
		case *tws.NextValidID:
			gotID = true
			c.nextID.Store(max(m.OrderID, 1))
		case *tws.ManagedAccounts:
			gotAccounts = true
			c.accounts = m.Accounts
		case *tws.ErrorMsg:
			if m.Code == 326 {
				return nil, &ClientIDInUseError{ClientID: cfg.ClientID, Text: m.Text}
			}
			c.recordEvent(m)
		}
	}
	now := time.Now()
	c.connected = now
	c.lastMsg.Store(now.UnixNano())
	c.out = newWriter(c)
	c.wg.Add(2)
	go c.readLoop(fr)
	go c.out.loop()
	return c, nil
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// ServerVersion is the version negotiated in the handshake.
func (c *Conn) ServerVersion() int { return c.version }

// ConnectionTime is the gateway's own connection time stamp, as it sent it.
func (c *Conn) ConnectionTime() string { return c.connTime }

// ConnectedAt is when Dial completed.
func (c *Conn) ConnectedAt() time.Time { return c.connected }

// Accounts are the managed accounts the gateway announced.
func (c *Conn) Accounts() []string { return append([]string(nil), c.accounts...) }

// ClientID is the connection's client id.
func (c *Conn) ClientID() int { return c.clientID }

// Addr is the gateway's address.
func (c *Conn) Addr() string { return c.cfg.Addr }

// LastMessageAt is when the last message from the gateway arrived.
func (c *Conn) LastMessageAt() time.Time { return time.Unix(0, c.lastMsg.Load()) }

// IsConnected reports whether the connection is still up. It says nothing
// about whether the gateway answers: only a round trip proves that.
func (c *Conn) IsConnected() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Done is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// UnknownMessages counts messages the client had no layout for and skipped.
func (c *Conn) UnknownMessages() int64 { return c.unknown.Load() }

// Close ends the connection and waits for its goroutines. It is idempotent.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

// fail ends the connection once: the socket closes, every pending call and
// stream fails with a ConnectionError, and subscriptions close.
func (c *Conn) fail(cause error) {
	c.closeOnce.Do(func() {
		err := &ConnectionError{Err: cause}
		c.mu.Lock()
		c.closeErr = err
		calls := c.calls
		c.calls = map[int64]*call{}
		ct := c.ct
		c.ct = nil
		subs := c.subs
		c.subs = map[*Subscription]struct{}{}
		c.mu.Unlock()
		close(c.done)
		c.nc.Close()
		for _, cl := range calls {
			cl.finish(err)
		}
		if ct != nil {
			ct.finish(time.Time{}, err)
		}
		for s := range subs {
			s.closeChan()
		}
		if !errors.Is(cause, ErrClosed) {
			c.log.Warn("connection to gateway ended", "addr", c.cfg.Addr, "client_id", c.clientID, "err", cause)
		}
	})
}

// AccountType classifies the managed accounts a gateway announced: "paper"
// when every account is a paper one (IB's paper accounts start with "DU"),
// "live" when any is not, "unknown" when there are none.
func AccountType(accounts []string) string {
	if len(accounts) == 0 {
		return "unknown"
	}
	for _, a := range accounts {
		if !strings.HasPrefix(a, "DU") {
			return "live"
		}
	}
	return "paper"
}
