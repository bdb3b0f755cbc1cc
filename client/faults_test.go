package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

// TestFaultsSeenFromTheClient covers the fault kinds the other tests do not:
// malformed data ends the connection and fails pending requests at once, a
// restart drops the connection and refuses redials until it is over, and a
// broken farm arrives as events and fails historical requests only.
func TestFaultsSeenFromTheClient(t *testing.T) {
	for _, mode := range []string{"oversize", "fields"} {
		t.Run("garbage_"+mode, func(t *testing.T) {
			srv := startSim(t, ibsim.Config{})
			c := dial(t, srv, 1)
			if _, err := srv.AddFault(&ibsim.Silent{}); err != nil {
				t.Fatal(err)
			}
			pending := make(chan error, 1)
			go func() {
				_, err := c.ContractDetails(ctxFor(t, 30*time.Second), aapl)
				pending <- err
			}()
			waitFor(t, func() bool { return srv.State().Clients[0].MessagesIn >= 2 })
			srv.ClearFaults()
			if _, err := srv.AddFault(&ibsim.Garbage{Mode: mode}); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-pending:
				if !errors.Is(err, client.ErrConnectionLost) {
					t.Fatalf("pending request: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("pending request still waiting after malformed data")
			}
			if c.IsConnected() {
				t.Fatal("connection still up after malformed data")
			}
		})
	}
	t.Run("restart", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c := dial(t, srv, 1)
		if _, err := srv.AddFault(&ibsim.Restart{DownMS: 300}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("connection not dropped by the restart")
		}
		_, err := client.Dial(ctxFor(t, time.Second), client.Config{Addr: srv.Addr(), ClientID: 1})
		var ce *client.ConnectError
		if !errors.As(err, &ce) || ce.Stage != client.StageTCP {
			t.Fatalf("dial while down: %v", err)
		}
		waitFor(t, func() bool { return srv.State().Listening })
		c2 := dial(t, srv, 1)
		if _, err := c2.CurrentTime(ctxFor(t, 3*time.Second)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("farm_broken", func(t *testing.T) {
		srv := startSim(t, ibsim.Config{})
		c := dial(t, srv, 1)
		sub := c.Subscribe(16)
		defer sub.Close()
		if _, err := srv.AddFault(&ibsim.FarmBroken{Farm: "hmds"}, ibsim.For(300*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := c.HistoricalData(ctxFor(t, 3*time.Second), client.HistoricalRequest{Contract: aapl,
			Duration: "1 D", BarSize: "1 hour", WhatToShow: "TRADES"})
		var ib *client.IBError
		if !errors.As(err, &ib) || ib.Code != 162 {
			t.Fatalf("historical during hmds outage: %v", err)
		}
		if _, err := c.ContractDetails(ctxFor(t, 3*time.Second), tws.Contract{ConID: 265598}); err != nil {
			t.Fatalf("contract details need no hmds: %v", err)
		}
		// The connect's own 2106 may arrive first: wait for 2105, then a 2106 after it.
		var broken, restored bool
		deadline := time.After(5 * time.Second)
		for !restored {
			select {
			case ev := <-sub.C:
				broken = broken || ev.Code == 2105
				restored = broken && ev.Code == 2106
			case <-deadline:
				t.Fatalf("broken %v restored %v: want 2105 then 2106", broken, restored)
			}
		}
	})
}
