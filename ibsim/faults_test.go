package ibsim_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

// addFault adds f and fails the test on error.
func addFault(t *testing.T, srv *ibsim.Server, f ibsim.Fault, opts ...ibsim.FaultOption) string {
	t.Helper()
	id, err := srv.AddFault(f, opts...)
	if err != nil {
		t.Fatalf("AddFault(%s): %v", f.Kind(), err)
	}
	return id
}

func removeFault(t *testing.T, srv *ibsim.Server, id string) {
	t.Helper()
	if err := srv.RemoveFault(id); err != nil {
		t.Fatalf("RemoveFault(%s): %v", id, err)
	}
}

// addFaultJSON adds a fault as the control API receives it.
func addFaultJSON(t *testing.T, srv *ibsim.Server, body string) string {
	t.Helper()
	spec, err := ibsim.ParseFaultSpec([]byte(body))
	if err != nil {
		t.Fatalf("ParseFaultSpec(%s): %v", body, err)
	}
	id, err := srv.AddFaultSpec(spec)
	if err != nil {
		t.Fatalf("AddFaultSpec(%s): %v", body, err)
	}
	return id
}

// requestHistory sends a small 5 mins AAPL request (never paced) and
// returns the reply: data or an error.
func requestHistory(t *testing.T, c *rawClient, id int64) tws.Message {
	t.Helper()
	c.send(histReq(id, stockContract("AAPL"), "", "3600 S", "5 mins", "TRADES"))
	return c.waitFor(replyTimeout, "historical reply", isReply(id))
}

func requestDetails(t *testing.T, c *rawClient, id int64) tws.Message {
	t.Helper()
	c.send(&tws.ReqContractDetails{ReqID: id, Contract: stockContract("AAPL")})
	return c.waitFor(replyTimeout, "contract details reply", isReply(id))
}

func isCurrentTime(m tws.Message) bool { return isType[*tws.CurrentTime](m) }

func TestFaultSilentHandshake(t *testing.T) {
	// The fault acts before the client id is known, so a client scope does
	// not narrow it.
	for _, tt := range []struct {
		name string
		opts []ibsim.FaultOption
	}{
		{name: "all clients"},
		{name: "scope ignored", opts: []ibsim.FaultOption{ibsim.ForClients(99)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{})
			id := addFault(t, srv, &ibsim.SilentHandshake{}, tt.opts...)
			c := dial(t, srv.Addr()) // TCP is accepted...
			hello, _ := tws.AppendClientHello(nil, tws.ClientHello{MinVersion: 157, MaxVersion: 178})
			if err := c.write(hello); err != nil {
				t.Fatal(err)
			}
			// ...and the handshake is never answered, nor the socket closed.
			if _, err := c.readHello(quietFor); !isTimeout(err) {
				t.Fatalf("handshake reply: %v, want a read timeout", err)
			}
			removeFault(t, srv, id)
			c2, _ := connect(t, srv, 1)
			c2.currentTime()
		})
	}
}

func TestFaultSilent(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	before, _ := connect(t, srv, 1)
	id := addFault(t, srv, &ibsim.Silent{})

	before.send(&tws.ReqCurrentTime{})
	before.expectQuiet(quietFor, "currentTime on a connection opened before the fault", isCurrentTime)

	// Handshake and startApi still work: only requests go unanswered.
	after, _ := connect(t, srv, 2)
	after.send(&tws.ReqCurrentTime{})
	after.send(&tws.ReqContractDetails{ReqID: 1, Contract: stockContract("AAPL")})
	after.expectQuiet(quietFor, "any reply on a connection opened during the fault", anyMsg)

	removeFault(t, srv, id)
	before.currentTime()
	after.currentTime()
}

func TestFaultLatency(t *testing.T) {
	const latency = 200 * time.Millisecond
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	id := addFault(t, srv, &ibsim.Latency{LatencyMS: latency.Milliseconds()})

	start := time.Now()
	c.currentTime()
	if d := time.Since(start); d < latency {
		t.Errorf("currentTime answered after %v, want at least %v", d, latency)
	}
	// Replies keep their order under latency.
	start = time.Now()
	c.send(&tws.ReqContractDetails{ReqID: 1, Contract: stockContract("AAPL")})
	c.send(&tws.ReqCurrentTime{})
	for _, want := range []func(tws.Message) bool{isType[*tws.ContractData], isType[*tws.ContractDataEnd], isCurrentTime} {
		m, err := c.next(replyTimeout)
		if err != nil || !want(m) {
			t.Fatalf("reply out of order or missing: %v %v", describeOrNil(m), err)
		}
	}
	if d := time.Since(start); d < latency {
		t.Errorf("replies after %v, want at least %v", d, latency)
	}
	// A new connection waits for its handshake reply too.
	c2 := dial(t, srv.Addr())
	start = time.Now()
	if _, err := c2.handshake(157, 178); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < latency {
		t.Errorf("handshake answered after %v, want at least %v", d, latency)
	}
	removeFault(t, srv, id)
	c.currentTime()
}

func describeOrNil(m tws.Message) string {
	if m == nil {
		return "nothing"
	}
	return describe(m)
}

func TestFaultDrop(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	c1, _ := connect(t, srv, 1)
	c2, _ := connect(t, srv, 2)
	pending := dial(t, srv.Addr()) // before its handshake
	// A connection still in the kernel's accept queue is not a session yet.
	eventually(t, replyTimeout, "the pending connection to be accepted", func() bool { return len(srv.State().Clients) == 3 })
	addFault(t, srv, &ibsim.Drop{})
	for i, c := range []*rawClient{c1, c2, pending} {
		if got := c.expectClosed(replyTimeout); len(got) != 0 {
			t.Errorf("client %d got %s before EOF", i, describeAll(got))
		}
	}
	if f := srv.Faults(); len(f) != 0 {
		t.Errorf("drop still active after acting: %+v", f)
	}
	eventually(t, replyTimeout, "sessions to end", func() bool { return len(srv.State().Clients) == 0 })
	c, _ := connect(t, srv, 1)
	c.currentTime()
}

func TestFaultRefuse(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	id := addFault(t, srv, &ibsim.Refuse{})
	if _, err := tryDial(t, srv.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: %v, want connection refused", err)
	}
	if srv.State().Listening {
		t.Error("state says listening while refusing")
	}
	c.currentTime() // existing sessions go on
	removeFault(t, srv, id)
	c2, _ := connect(t, srv, 2) // same address again
	c2.currentTime()
}

func TestFaultRestart(t *testing.T) {
	const down = 300 * time.Millisecond
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	c2, _ := connect(t, srv, 2)
	start := time.Now()
	// A gateway restart cannot spare anyone: the client limit is ignored.
	addFault(t, srv, &ibsim.Restart{DownMS: down.Milliseconds()}, ibsim.ForClients(2))
	c.expectClosed(replyTimeout)
	c2.expectClosed(replyTimeout)
	if _, err := tryDial(t, srv.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial during restart: %v, want connection refused", err)
	}
	var upAfter time.Duration
	eventually(t, down+replyTimeout, "the gateway to listen again", func() bool {
		conn, err := net.DialTimeout("tcp", srv.Addr(), replyTimeout)
		if err != nil {
			return false
		}
		upAfter = time.Since(start)
		conn.Close()
		return true
	})
	if upAfter < down {
		t.Errorf("connect worked again after %v, want at least down_ms %v", upAfter, down)
	}
	if f := srv.Faults(); len(f) != 0 {
		t.Errorf("restart still active once listening again: %+v", f)
	}
	eventually(t, replyTimeout, "the dropped session to end", func() bool {
		for _, ci := range srv.State().Clients {
			if ci.Started {
				return false
			}
		}
		return true
	})
	c3, _ := connect(t, srv, 1)
	c3.currentTime()
}

func TestFaultConnectivityLoss(t *testing.T) {
	const lasts = 400 * time.Millisecond
	for _, tt := range []struct {
		dataLost bool
		restored int
	}{
		{dataLost: false, restored: ibsim.CodeRestoredDataKept},
		{dataLost: true, restored: ibsim.CodeRestoredDataLost},
	} {
		name := "data kept"
		if tt.dataLost {
			name = "data lost"
		}
		t.Run(name, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{})
			c, _ := connect(t, srv, 1)
			start := time.Now()
			addFault(t, srv, &ibsim.ConnectivityLoss{DataLost: tt.dataLost}, ibsim.For(lasts))
			c.waitErr(ibsim.CodeConnectivityLost, tws.NoRequestID)

			if m := requestHistory(t, c, 1); !isErr(ibsim.CodeHMDS, 1)(m) {
				t.Errorf("historical request during the loss: %s, want error 162", describe(m))
			}
			if m := requestDetails(t, c, 2); !isErr(ibsim.CodeNoSecDef, 2)(m) {
				t.Errorf("contract details during the loss: %s, want error 200", describe(m))
			}
			c.currentTime() // the gateway's own clock still answers

			// A client connecting meanwhile is told at once.
			late, _ := connect(t, srv, 2)
			late.waitErr(ibsim.CodeConnectivityLost, tws.NoRequestID)

			c.waitFor(lasts+replyTimeout, "restored notice", isErr(tt.restored, tws.NoRequestID))
			if d := time.Since(start); d < lasts {
				t.Errorf("restored after %v, want at least %v", d, lasts)
			}
			late.waitErr(tt.restored, tws.NoRequestID)
			if m := requestHistory(t, c, 3); !isType[*tws.HistoricalData](m) {
				t.Errorf("historical request after restore: %s", describe(m))
			}
		})
	}
}

func TestFaultFarmBroken(t *testing.T) {
	for _, tt := range []struct {
		farm         string
		broken, ok   int
		histFails    bool
		detailsFails bool
	}{
		{farm: "hmds", broken: ibsim.CodeHMDSFarmBroken, ok: ibsim.CodeHMDSFarmOK, histFails: true},
		{farm: "secdef", broken: ibsim.CodeSecDefFarmBroken, ok: ibsim.CodeSecDefFarmOK, detailsFails: true},
		{farm: "usfarm", broken: ibsim.CodeMarketFarmBroken, ok: ibsim.CodeMarketFarmOK},
	} {
		t.Run(tt.farm, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{})
			c, _ := connect(t, srv, 1)
			id := addFault(t, srv, &ibsim.FarmBroken{Farm: tt.farm})
			c.waitErr(tt.broken, tws.NoRequestID)

			probe := func(c *rawClient, base int64, broken bool) {
				t.Helper()
				h := requestHistory(t, c, base)
				if failed := isErr(ibsim.CodeHMDS, base)(h); failed != (broken && tt.histFails) {
					t.Errorf("historical request (farm broken %v): %s", broken, describe(h))
				}
				d := requestDetails(t, c, base+1)
				if failed := isErr(ibsim.CodeNoSecDef, base+1)(d); failed != (broken && tt.detailsFails) {
					t.Errorf("contract details (farm broken %v): %s", broken, describe(d))
				}
			}
			probe(c, 10, true)

			// A client connecting meanwhile gets the broken notice in its
			// startup messages instead of the OK one.
			late, startup := connect(t, srv, 2)
			codes := map[int]bool{}
			for _, m := range startup {
				if e, ok := m.(*tws.ErrorMsg); ok {
					codes[e.Code] = true
				}
			}
			if !codes[tt.broken] || codes[tt.ok] {
				t.Errorf("startup during the fault: %s, want %d and not %d", describeAll(startup), tt.broken, tt.ok)
			}

			removeFault(t, srv, id)
			c.waitErr(tt.ok, tws.NoRequestID)
			late.waitErr(tt.ok, tws.NoRequestID)
			probe(c, 20, false)
		})
	}
}

func TestFaultClientIDInUse(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	holder, _ := connect(t, srv, 5) // connected before: unaffected
	addFaultJSON(t, srv, `{"kind":"client_id_in_use","client_ids":[5,6]}`)
	for _, id := range []int{5, 6} {
		c := dial(t, srv.Addr())
		if _, err := c.handshake(157, 178); err != nil {
			t.Fatal(err)
		}
		c.send(&tws.StartAPI{ClientID: id})
		got := c.expectClosed(replyTimeout)
		if len(got) != 1 || !isErr(ibsim.CodeClientIDInUse, tws.NoRequestID)(got[0]) {
			t.Errorf("client id %d: got %s then EOF, want exactly error 326", id, describeAll(got))
		}
	}
	other, _ := connect(t, srv, 7)
	other.currentTime()
	holder.currentTime()
}

func TestFaultCurrentTimeQuirk(t *testing.T) {
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	other, _ := connect(t, srv, 2)
	addFault(t, srv, &ibsim.CurrentTimeQuirk{})

	c.currentTime()
	other.currentTime() // the quirk is per connection
	c.send(&tws.ReqCurrentTime{})
	// Watching for just over a second also spaces the next request more
	// than a second from this one.
	c.expectQuiet(1100*time.Millisecond, "second currentTime within 1 s", isCurrentTime)
	c.currentTime()
	if m := requestDetails(t, c, 1); !isType[*tws.ContractData](m) {
		t.Errorf("other requests affected: %s", describe(m))
	}
}

func TestFaultGarbage(t *testing.T) {
	for _, tt := range []struct {
		mode    string
		wantErr error // from the frame reader; nil means the frame reads but does not decode
	}{
		{mode: "", wantErr: tws.ErrFrameTooLarge},
		{mode: "oversize", wantErr: tws.ErrFrameTooLarge},
		{mode: "fields"},
	} {
		t.Run("mode "+tt.mode, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{})
			c1, _ := connect(t, srv, 1)
			c2, _ := connect(t, srv, 2)
			addFault(t, srv, &ibsim.Garbage{Mode: tt.mode})
			for _, c := range []*rawClient{c1, c2} {
				p, err := c.readFrame(replyTimeout)
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("frame reader: %v, want %v", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("frame reader: %v, want a well-framed message", err)
				}
				var de *tws.DecodeError
				if m, err := tws.DecodeIncoming(p, c.ver); !errors.As(err, &de) {
					t.Fatalf("decoding %q: %v %v, want a DecodeError", p, describeOrNil(m), err)
				}
				c.currentTime() // a well-framed bad message leaves the stream usable
			}
			if f := srv.Faults(); len(f) != 0 {
				t.Errorf("garbage still active after acting: %+v", f)
			}
		})
	}
}

// TestFaultClientScope limits each fault to client 2 and checks client 1
// sees nothing of it.
func TestFaultClientScope(t *testing.T) {
	const latency = 400 * time.Millisecond
	for _, tt := range []struct {
		name     string
		fault    ibsim.Fault
		affected func(t *testing.T, c *rawClient)
	}{
		{name: "silent", fault: &ibsim.Silent{}, affected: func(t *testing.T, c *rawClient) {
			c.send(&tws.ReqCurrentTime{})
			c.expectQuiet(quietFor, "currentTime", isCurrentTime)
		}},
		{name: "latency", fault: &ibsim.Latency{LatencyMS: latency.Milliseconds()}, affected: func(t *testing.T, c *rawClient) {
			start := time.Now()
			c.currentTime()
			if d := time.Since(start); d < latency {
				t.Errorf("affected client answered after %v, want at least %v", d, latency)
			}
		}},
		{name: "drop", fault: &ibsim.Drop{}, affected: func(t *testing.T, c *rawClient) {
			c.expectClosed(replyTimeout)
		}},
		{name: "connectivity_loss", fault: &ibsim.ConnectivityLoss{}, affected: func(t *testing.T, c *rawClient) {
			c.waitErr(ibsim.CodeConnectivityLost, tws.NoRequestID)
			if m := requestHistory(t, c, 1); !isErr(ibsim.CodeHMDS, 1)(m) {
				t.Errorf("historical request: %s, want 162", describe(m))
			}
		}},
		{name: "farm_broken", fault: &ibsim.FarmBroken{Farm: "hmds"}, affected: func(t *testing.T, c *rawClient) {
			c.waitErr(ibsim.CodeHMDSFarmBroken, tws.NoRequestID)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{})
			c1, _ := connect(t, srv, 1)
			c2, _ := connect(t, srv, 2)
			addFault(t, srv, tt.fault, ibsim.ForClients(2))
			tt.affected(t, c2)

			start := time.Now()
			c1.currentTime()
			if d := time.Since(start); d >= latency/2 {
				t.Errorf("unaffected client answered after %v", d)
			}
			if m := requestHistory(t, c1, 1); !isType[*tws.HistoricalData](m) {
				t.Errorf("unaffected client's historical request: %s", describe(m))
			}
			if c1.sawErr(ibsim.CodeConnectivityLost) || c1.sawErr(ibsim.CodeHMDSFarmBroken) {
				t.Errorf("unaffected client got notices: %s", describeAll(c1.skipped))
			}
		})
	}
}

func TestFaultDurationExpiry(t *testing.T) {
	const lasts = 300 * time.Millisecond
	t.Run("silent", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c, _ := connect(t, srv, 1)
		start := time.Now()
		id := addFaultJSON(t, srv, `{"kind":"silent","duration_ms":300}`)
		f := srv.Faults()
		if len(f) != 1 || f[0].ID != id || f[0].ExpiresAt == nil || f[0].ExpiresAt.Sub(f[0].Since) != lasts {
			t.Fatalf("active faults %+v, want %s expiring after %v", f, id, lasts)
		}
		c.send(&tws.ReqCurrentTime{})
		c.expectQuiet(100*time.Millisecond, "currentTime", isCurrentTime)
		eventually(t, lasts+replyTimeout, "the fault to expire", func() bool { return len(srv.Faults()) == 0 })
		if d := time.Since(start); d < lasts {
			t.Errorf("expired after %v, want at least %v", d, lasts)
		}
		c.currentTime()
		if err := srv.RemoveFault(id); !errors.Is(err, ibsim.ErrNoFault) {
			t.Errorf("RemoveFault of an expired fault: %v, want ErrNoFault", err)
		}
	})
	t.Run("farm_broken", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c, _ := connect(t, srv, 1)
		start := time.Now()
		addFaultJSON(t, srv, `{"kind":"farm_broken","farm":"hmds","duration_ms":300}`)
		c.waitErr(ibsim.CodeHMDSFarmBroken, tws.NoRequestID)
		c.waitFor(lasts+replyTimeout, "HMDS OK notice", isErr(ibsim.CodeHMDSFarmOK, tws.NoRequestID))
		if d := time.Since(start); d < lasts {
			t.Errorf("farm OK after %v, want at least %v", d, lasts)
		}
	})
}

func TestFaultCombination(t *testing.T) {
	const latency = 200 * time.Millisecond
	srv := startSim(t, ibsim.Config{})
	c, _ := connect(t, srv, 1)
	lat := addFault(t, srv, &ibsim.Latency{LatencyMS: latency.Milliseconds()})
	farm := addFault(t, srv, &ibsim.FarmBroken{Farm: "hmds"})
	if n := len(srv.Faults()); n != 2 {
		t.Fatalf("%d active faults, want 2", n)
	}
	c.waitErr(ibsim.CodeHMDSFarmBroken, tws.NoRequestID)

	start := time.Now()
	if m := requestHistory(t, c, 1); !isErr(ibsim.CodeHMDS, 1)(m) {
		t.Errorf("historical request: %s, want 162", describe(m))
	}
	if d := time.Since(start); d < latency {
		t.Errorf("the 162 came after %v, want it delayed by at least %v", d, latency)
	}

	removeFault(t, srv, lat)
	if m := requestHistory(t, c, 2); !isErr(ibsim.CodeHMDS, 2)(m) {
		t.Errorf("historical request with the farm still broken: %s, want 162", describe(m))
	}
	removeFault(t, srv, farm)
	c.waitErr(ibsim.CodeHMDSFarmOK, tws.NoRequestID)
	if m := requestHistory(t, c, 3); !isType[*tws.HistoricalData](m) {
		t.Errorf("historical request with no fault: %s", describe(m))
	}
}
