// Package ibsim is an IB Gateway simulator that speaks the TWS API socket
// protocol (server versions 157..178), serves deterministic market data from
// a built-in instrument catalog, enforces the gateway's limits and injects
// faults on demand.
//
// It is importable like net/http/httptest:
//
//	srv, err := ibsim.Start(ibsim.Config{})
//	defer srv.Close()
//	conn := dial(srv.Addr())
//	id, _ := srv.AddFault(&ibsim.Silent{}, ibsim.For(5*time.Second))
package ibsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// Config configures a simulator. The zero value is usable.
type Config struct {
	// Addr is the gateway's listen address; default "127.0.0.1:0" (an ephemeral port).
	Addr string
	// ControlAddr, when set, serves the HTTP control API there.
	ControlAddr string
	// Seed selects the deterministic market data; default 1.
	Seed int64
	// TimeScale divides every gateway time window (message rate, pacing) so
	// tests run fast; default 1 (real time).
	TimeScale float64
	// Accounts are the managed accounts announced after startApi; default DU0000001 (paper).
	Accounts []string
	// MaxClients is the number of concurrent API clients; default 32, IB's limit.
	MaxClients int
	// MaxVersion caps the server version the simulator answers with; default 178.
	MaxVersion int
	// Catalog is the instrument catalog; default DefaultCatalog().
	Catalog *Catalog
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives connect/disconnect and fault logs; default discards.
	Logger *slog.Logger
	// HandshakeTimeout bounds how long a client may take to send its
	// handshake and startApi; default 30s.
	HandshakeTimeout time.Duration
}

// Server is a running simulator. All methods are safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	history History
	pacer   *pacer
	start   time.Time

	mu        sync.Mutex
	ln        net.Listener
	addr      string // stays the same across refuse/restart
	listening bool
	closed    bool
	sessions  map[*session]struct{}
	faults    []*activeFault
	nextFault int
	ctl       *http.Server
	ctlAddr   string

	wg sync.WaitGroup // accept loops, sessions, control server

	counters counters
}

type counters struct {
	accepted, rejectedHandshakes, pacingViolations, rateViolations atomic.Int64
	errorsSent, noticesSent, unknownMessages                       atomic.Int64
}

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("ibsim: server closed")

// Start starts a simulator listening on cfg.Addr (and cfg.ControlAddr).
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.TimeScale <= 0 {
		cfg.TimeScale = 1
	}
	if len(cfg.Accounts) == 0 {
		cfg.Accounts = []string{"DU0000001"}
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 32
	}
	if cfg.MaxVersion == 0 || cfg.MaxVersion > tws.MaxServerVersion {
		cfg.MaxVersion = tws.MaxServerVersion
	}
	if cfg.MaxVersion < tws.MinServerVersion {
		return nil, fmt.Errorf("ibsim: MaxVersion %d below %d", cfg.MaxVersion, tws.MinServerVersion)
	}
	if cfg.Catalog == nil {
		cfg.Catalog = DefaultCatalog()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		history:  History{Seed: cfg.Seed},
		pacer:    newPacer(cfg.TimeScale),
		start:    cfg.Now(),
		sessions: map[*session]struct{}{},
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ibsim: gateway listen on %s: %w", cfg.Addr, err)
	}
	s.ln, s.addr, s.listening = ln, ln.Addr().String(), true
	if cfg.ControlAddr != "" {
		cln, err := net.Listen("tcp", cfg.ControlAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("ibsim: control listen on %s: %w", cfg.ControlAddr, err)
		}
		s.ctlAddr = cln.Addr().String()
		s.ctl = &http.Server{Handler: s.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.ctl.Serve(cln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("control API stopped", "err", err)
			}
		}()
	}
	s.wg.Add(1)
	go s.acceptLoop(ln)
	return s, nil
}

// Addr returns the gateway's address, host:port.
func (s *Server) Addr() string { return s.addr }

// Port returns the gateway's port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// ControlURL returns the control API's base URL, or "" when not serving it.
func (s *Server) ControlURL() string {
	if s.ctlAddr == "" {
		return ""
	}
	return "http://" + s.ctlAddr
}

// Close stops listening, ends every fault, closes every client socket and
// the control API, and waits for every goroutine the server started.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln := s.ln
	s.ln, s.listening = nil, false
	// A copy: End removes each fault from s.faults in place, which would
	// shift the shared array under this loop and skip faults.
	faults := append([]*activeFault(nil), s.faults...)
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()

	if ln != nil {
		ln.Close()
	}
	for _, a := range faults {
		(&faultControl{s: s, a: a}).End()
	}
	for _, ss := range sessions {
		ss.close("simulator closing")
	}
	if s.ctl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.ctl.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
	return nil
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // listener closed: Close, refuse or restart
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		ss := newSession(s, c)
		s.sessions[ss] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.counters.accepted.Add(1)
		go ss.run()
	}
}

// setListening closes or reopens the gateway listener on the same address.
func (s *Server) setListening(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if on == s.listening {
		return nil
	}
	if !on {
		s.ln.Close()
		s.ln, s.listening = nil, false
		s.log.Info("gateway stopped listening", "addr", s.addr)
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.log.Error("gateway could not listen again", "addr", s.addr, "err", err)
		return fmt.Errorf("ibsim: listen again on %s: %w", s.addr, err)
	}
	s.ln, s.listening = ln, true
	s.wg.Add(1)
	go s.acceptLoop(ln)
	s.log.Info("gateway listening again", "addr", s.addr)
	return nil
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

// claimClientID registers ss under id unless another live session holds it
// or the client limit is reached.
func (s *Server) claimClientID(ss *session, id int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	started := 0
	for o := range s.sessions {
		if o == ss || !o.started.Load() {
			continue
		}
		started++
		if o.clientID.Load() == int64(id) {
			return errDuplicateID
		}
	}
	if started >= s.cfg.MaxClients {
		return errTooManyClients
	}
	ss.clientID.Store(int64(id))
	ss.started.Store(true)
	return nil
}

var (
	errDuplicateID    = errors.New("client id in use")
	errTooManyClients = errors.New("too many clients")
)

// intercept offers ev to every active fault that applies to the session.
func (s *Server) intercept(ev *Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.faults {
		if ev.Kind == EvHandshake || a.applies(ev.ClientID) {
			a.fault.Intercept(ev)
		}
	}
}

// AddFault activates f and returns its id. Options limit it to some client
// ids or to a duration. A one-shot fault (drop, garbage) has acted and ended
// by the time AddFault returns.
func (s *Server) AddFault(f Fault, opts ...FaultOption) (string, error) {
	if f == nil {
		return "", fmt.Errorf("%w: nil fault", ErrBadFault)
	}
	if v, ok := f.(validator); ok {
		if err := v.validate(); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrBadFault, f.Kind(), err)
		}
	}
	a := &activeFault{fault: f, since: s.cfg.Now()}
	for _, o := range opts {
		o(a)
	}
	switch f.(type) {
	case *SilentHandshake, *Refuse, *Restart:
		// They act before a client id is known, so a limit cannot apply
		// (see ForClients); without this a restart would drop only the
		// listed clients.
		a.clientIDs = nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", ErrClosed
	}
	s.nextFault++
	a.id = "f" + strconv.Itoa(s.nextFault)
	s.faults = append(s.faults, a)
	s.mu.Unlock()

	s.log.Info("fault added", "id", a.id, "kind", f.Kind(), "client_ids", a.clientIDs, "duration", a.duration)
	ctl := &faultControl{s: s, a: a}
	if a.duration > 0 {
		ctl.After(a.duration, ctl.End)
	}
	f.Start(ctl)
	return a.id, nil
}

// AddFaultSpec activates a fault described as the control API receives it.
func (s *Server) AddFaultSpec(spec FaultSpec) (string, error) {
	f, opts, err := spec.Build()
	if err != nil {
		return "", err
	}
	return s.AddFault(f, opts...)
}

// ErrNoFault is returned by RemoveFault for an id that is not active.
var ErrNoFault = errors.New("ibsim: no such active fault")

// RemoveFault ends the fault with this id.
func (s *Server) RemoveFault(id string) error {
	s.mu.Lock()
	var found *activeFault
	for _, a := range s.faults {
		if a.id == id {
			found = a
		}
	}
	s.mu.Unlock()
	if found == nil {
		return fmt.Errorf("%w: %q", ErrNoFault, id)
	}
	(&faultControl{s: s, a: found}).End()
	return nil
}

// ClearFaults ends every active fault and returns how many there were.
func (s *Server) ClearFaults() int {
	s.mu.Lock()
	faults := append([]*activeFault(nil), s.faults...)
	s.mu.Unlock()
	for _, a := range faults {
		(&faultControl{s: s, a: a}).End()
	}
	return len(faults)
}

// Faults lists the active faults.
func (s *Server) Faults() []FaultInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FaultInfo, 0, len(s.faults))
	for _, a := range s.faults {
		out = append(out, a.info())
	}
	return out
}

// faultControl is the Control a fault acts through.
type faultControl struct {
	s *Server
	a *activeFault
}

func (c *faultControl) targets() []*session {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	var out []*session
	for ss := range c.s.sessions {
		if c.a.applies(int(ss.clientID.Load())) {
			out = append(out, ss)
		}
	}
	return out
}

func (c *faultControl) Send(m tws.Message) {
	for _, ss := range c.targets() {
		if ss.started.Load() {
			ss.send(m, nil)
		}
	}
}

func (c *faultControl) SendRaw(b []byte) {
	for _, ss := range c.targets() {
		ss.enqueue(outItem{frame: b})
	}
}

func (c *faultControl) Drop() {
	for _, ss := range c.targets() {
		ss.close("dropped by fault " + c.a.id)
	}
}

func (c *faultControl) SetListening(on bool) error { return c.s.setListening(on) }

func (c *faultControl) After(d time.Duration, f func()) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.a.ended || c.s.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.s.mu.Lock()
		if c.a.ended || c.s.closed {
			c.s.mu.Unlock()
			return
		}
		// Registered under the lock Close takes before it waits, so Close
		// waits for a callback that has begun.
		c.s.wg.Add(1)
		c.s.mu.Unlock()
		defer c.s.wg.Done()
		f()
	})
	c.a.timers = append(c.a.timers, t)
}

func (c *faultControl) End() {
	c.s.mu.Lock()
	if c.a.ended {
		c.s.mu.Unlock()
		return
	}
	c.a.ended = true
	for _, t := range c.a.timers {
		t.Stop()
	}
	for i, a := range c.s.faults {
		if a == c.a {
			c.s.faults = append(c.s.faults[:i], c.s.faults[i+1:]...)
			break
		}
	}
	c.s.mu.Unlock()
	c.a.fault.Stop(c)
	c.s.log.Info("fault ended", "id", c.a.id, "kind", c.a.fault.Kind())
}
