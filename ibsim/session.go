package ibsim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// outQueueLen bounds what a session buffers for a client that does not read;
// past it the client is disconnected, as a gateway drops a stuck API client.
const outQueueLen = 4096

// writeTimeout bounds one socket write to a client.
const writeTimeout = 10 * time.Second

// outItem is one frame waiting for the session's writer.
type outItem struct {
	frame      []byte
	due        time.Time   // not before (latency faults)
	valid      func() bool // checked just before writing; false skips the frame
	counted    bool        // a protocol message (counted in messages out)
	closeAfter string      // close the connection after writing, with this reason
}

// session is one client connection. The reader goroutine (run) owns the
// request state; the writer goroutine owns the socket's write side.
type session struct {
	s      *Server
	conn   net.Conn
	remote string
	since  time.Time

	ver      int // negotiated; set before any reply is queued
	clientID atomic.Int64
	started  atomic.Bool

	msgsIn, msgsOut atomic.Int64

	out        chan outItem
	done       chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
	reason     atomic.Value // string

	mu      sync.Mutex
	queries map[int64]*query // running historical and head-timestamp queries
	lastCT  time.Time        // previous reqCurrentTime (reader only)
	rate    []time.Time      // arrival times of recent messages (reader only)
	streams sync.WaitGroup   // keepUpToDate streams
}

// query is a request whose answer is still pending or streaming.
type query struct {
	stop chan struct{} // closed on cancel
}

func newSession(s *Server, c net.Conn) *session {
	return &session{
		s: s, conn: c, remote: c.RemoteAddr().String(), since: s.cfg.Now(),
		out: make(chan outItem, outQueueLen), done: make(chan struct{}), writerDone: make(chan struct{}),
		queries: map[int64]*query{},
	}
}

// run serves the connection until it ends, then releases everything.
func (ss *session) run() {
	defer ss.s.wg.Done()
	ss.s.log.Info("client connected", "remote", ss.remote)
	go ss.writeLoop()
	reason, flush := ss.serve()
	if flush {
		// Let the writer deliver what was queued (e.g. a 326) before closing.
		select {
		case <-ss.writerDone:
		case <-time.After(writeTimeout):
		}
	}
	ss.close(reason)
	<-ss.writerDone
	ss.streams.Wait()
	ss.s.removeSession(ss)
	r, _ := ss.reason.Load().(string)
	ss.s.log.Info("client disconnected", "remote", ss.remote, "client_id", ss.clientID.Load(),
		"started", ss.started.Load(), "reason", r, "messages_in", ss.msgsIn.Load(), "messages_out", ss.msgsOut.Load())
}

// close ends the session once: the socket closes, which ends the reader, and
// done closes, which ends the writer and every stream.
func (ss *session) close(reason string) {
	ss.closeOnce.Do(func() {
		ss.reason.Store(reason)
		close(ss.done)
		ss.conn.Close()
	})
}

func (ss *session) writeLoop() {
	defer close(ss.writerDone)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var it outItem
		select {
		case <-ss.done:
			return
		case it = <-ss.out:
		}
		if wait := time.Until(it.due); wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-ss.done:
				return
			case <-timer.C:
			}
		}
		if it.valid != nil && !it.valid() {
			continue
		}
		_ = ss.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := ss.conn.Write(it.frame); err != nil {
			ss.close("write failed: " + err.Error())
			return
		}
		if it.counted {
			ss.msgsOut.Add(1)
		}
		if it.closeAfter != "" {
			ss.close(it.closeAfter)
			return
		}
	}
}

// enqueue hands a frame to the writer without ever blocking the caller.
func (ss *session) enqueue(it outItem) {
	select {
	case <-ss.done:
		return
	default:
	}
	select {
	case ss.out <- it:
	default:
		ss.close("client not reading: output queue full")
	}
}

// send queues m after the reply faults had their say (latency, silence).
func (ss *session) send(m tws.Message, valid func() bool) {
	ss.queueReply(m, valid, "", false)
}

// sendStartup queues a reply to startApi: the session's greeting, which a
// silent gateway still completes.
func (ss *session) sendStartup(m tws.Message) {
	ss.queueReply(m, nil, "", true)
}

// sendClosing queues a startApi refusal, closing the connection after it.
func (ss *session) sendClosing(m tws.Message, valid func() bool, closeAfter string) {
	ss.queueReply(m, valid, closeAfter, true)
}

func (ss *session) queueReply(m tws.Message, valid func() bool, closeAfter string, startup bool) {
	ev := Event{Kind: EvReply, ClientID: int(ss.clientID.Load()), Message: m, Startup: startup}
	ss.s.intercept(&ev)
	if ev.Silence {
		return
	}
	frame, err := tws.Encode(m, ss.ver)
	if err != nil {
		ss.s.log.Error("cannot encode reply", "msg", fmt.Sprintf("%T", m), "err", err)
		return
	}
	if e, ok := m.(*tws.ErrorMsg); ok {
		if e.Code >= 2100 && e.Code < 2200 {
			ss.s.counters.noticesSent.Add(1)
		} else {
			ss.s.counters.errorsSent.Add(1)
		}
	}
	ss.enqueue(outItem{frame: frame, due: time.Now().Add(ev.Delay), valid: valid, counted: true, closeAfter: closeAfter})
}

// serve runs the protocol. It returns why the session ends and whether
// queued frames should be flushed before the socket closes.
func (ss *session) serve() (reason string, flush bool) {
	s := ss.s
	_ = ss.conn.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	br := bufio.NewReader(ss.conn)
	hello, err := tws.ReadClientHello(br)
	if err != nil {
		s.counters.rejectedHandshakes.Add(1)
		s.log.Warn("closing client: bad handshake", "remote", ss.remote, "err", err)
		return "bad handshake: " + err.Error(), false
	}
	ver, err := tws.Negotiate(hello, tws.MinServerVersion, s.cfg.MaxVersion)
	if err != nil {
		s.counters.rejectedHandshakes.Add(1)
		s.log.Warn("closing client: unsupported versions", "remote", ss.remote, "min", hello.MinVersion, "max", hello.MaxVersion)
		return "unsupported versions: " + err.Error(), false
	}
	ev := Event{Kind: EvHandshake}
	s.intercept(&ev)
	if ev.Silence {
		s.log.Info("not answering handshake (silent_handshake)", "remote", ss.remote)
		_ = ss.conn.SetReadDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, br)
		return "handshake left unanswered", false
	}
	// Under the server lock: State reads ver from other goroutines.
	s.mu.Lock()
	ss.ver = ver
	s.mu.Unlock()
	hdr, err := tws.AppendServerHello(nil, tws.ServerHello{Version: ver, ConnectionTime: s.cfg.Now().Format("20060102 15:04:05 MST")})
	if err != nil {
		return "cannot encode server hello", false
	}
	rev := Event{Kind: EvReply}
	s.intercept(&rev)
	ss.enqueue(outItem{frame: hdr, due: time.Now().Add(rev.Delay)})

	fr := tws.NewFrameReader(br, 0)
	for !ss.started.Load() {
		payload, err := fr.Next()
		if err != nil {
			return readEndReason(err), false
		}
		ss.msgsIn.Add(1)
		m, err := tws.DecodeOutgoing(payload, ver)
		if err != nil {
			s.log.Warn("ignoring message before startApi", "remote", ss.remote, "err", err)
			continue
		}
		start, ok := m.(*tws.StartAPI)
		if !ok {
			s.log.Warn("ignoring message before startApi", "remote", ss.remote, "msg", fmt.Sprintf("%T", m))
			continue
		}
		if reason, refused := ss.startAPI(start); refused {
			return reason, true
		}
	}
	_ = ss.conn.SetReadDeadline(time.Time{})
	for {
		payload, err := fr.Next()
		if err != nil {
			return readEndReason(err), false
		}
		ss.msgsIn.Add(1)
		if !ss.admitRate() {
			continue
		}
		m, err := tws.DecodeOutgoing(payload, ver)
		if err != nil {
			var unk *tws.UnknownMessageError
			if errors.As(err, &unk) {
				s.counters.unknownMessages.Add(1)
				s.log.Debug("ignoring unsupported request", "client_id", ss.clientID.Load(), "msg_id", unk.ID)
				continue
			}
			s.log.Warn("malformed request", "client_id", ss.clientID.Load(), "err", err)
			ss.send(&tws.ErrorMsg{ReqID: tws.NoRequestID, Code: 320, Text: "Error reading request:Unable to parse data. " + err.Error()}, nil)
			continue
		}
		ss.handle(m)
	}
}

func readEndReason(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return "closed"
	}
	return "read failed: " + err.Error()
}

// startAPI admits or refuses a client id; refused sessions end after the
// error is flushed.
func (ss *session) startAPI(m *tws.StartAPI) (reason string, refused bool) {
	s := ss.s
	ev := Event{Kind: EvStartAPI, ClientID: m.ClientID}
	s.intercept(&ev)
	if ev.Reject != nil {
		s.log.Info("refusing client id (fault)", "client_id", m.ClientID, "code", ev.Reject.Code)
		ss.sendClosing(ev.Reject, nil, "refused by fault")
		return fmt.Sprintf("client id %d refused by fault", m.ClientID), true
	}
	switch err := s.claimClientID(ss, m.ClientID); {
	case errors.Is(err, errDuplicateID):
		s.log.Info("refusing duplicate client id", "client_id", m.ClientID, "remote", ss.remote)
		ss.sendClosing(errClientIDInUse(), nil, "client id in use")
		return fmt.Sprintf("client id %d already in use", m.ClientID), true
	case errors.Is(err, errTooManyClients):
		s.log.Warn("refusing client: too many clients", "client_id", m.ClientID, "max", s.cfg.MaxClients)
		ss.sendClosing(&tws.ErrorMsg{ReqID: tws.NoRequestID, Code: 502,
			Text: fmt.Sprintf("Couldn't connect to TWS. Maximum number of API clients (%d) reached.", s.cfg.MaxClients)}, nil, "too many clients")
		return "too many clients", true
	}
	s.log.Info("client started", "client_id", m.ClientID, "remote", ss.remote, "server_version", ss.ver)
	ss.sendStartup(&tws.ManagedAccounts{Accounts: s.cfg.Accounts})
	ss.sendStartup(&tws.NextValidID{OrderID: 1})
	for _, n := range ss.s.startupNotices(m.ClientID) {
		ss.sendStartup(n)
	}
	return "", false
}

// admitRate enforces IB's 50 messages per second from one client: the
// message over the limit gets error 100 and is not processed.
func (ss *session) admitRate() bool {
	const limit = 50
	now := time.Now()
	window := scaled(time.Second, ss.s.cfg.TimeScale)
	if len(ss.rate) == limit {
		if now.Sub(ss.rate[0]) < window {
			ss.s.counters.rateViolations.Add(1)
			ss.send(&tws.ErrorMsg{ReqID: tws.NoRequestID, Code: CodeRateExceeded,
				Text: fmt.Sprintf("Max rate of messages per second has been exceeded:max=%d rec=%d (1)", limit, limit+1)}, nil)
			return false
		}
		copy(ss.rate, ss.rate[1:])
		ss.rate = ss.rate[:limit-1]
	}
	ss.rate = append(ss.rate, now)
	return true
}

// scaled divides a gateway window by the time scale.
func scaled(d time.Duration, scale float64) time.Duration {
	return time.Duration(float64(d) / scale)
}

// startupNotices are the farm notices a new client receives, reflecting
// the farm and connectivity faults active for it.
func (s *Server) startupNotices(clientID int) []*tws.ErrorMsg {
	ok := map[string]*tws.ErrorMsg{
		"usfarm": notice(CodeMarketFarmOK, "Market data farm connection is OK:usfarm"),
		"hmds":   notice(CodeHMDSFarmOK, "HMDS data farm connection is OK:ushmds"),
		"secdef": notice(CodeSecDefFarmOK, "Sec-def data farm connection is OK:secdefil"),
	}
	var lost bool
	s.mu.Lock()
	for _, a := range s.faults {
		if !a.applies(clientID) {
			continue
		}
		switch f := a.fault.(type) {
		case *FarmBroken:
			ok[f.Farm], _ = f.farmNotices()
		case *ConnectivityLoss:
			lost = true
		}
	}
	s.mu.Unlock()
	out := []*tws.ErrorMsg{ok["usfarm"], ok["hmds"], ok["secdef"]}
	if lost {
		out = append(out, notice(CodeConnectivityLost, "Connectivity between IB and Trader Workstation has been lost."))
	}
	return out
}
