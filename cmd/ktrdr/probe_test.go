package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
)

// TestProbeUnderEveryFault runs `ktrdr ib probe` against the simulator in
// each fault mode: it must finish within --timeout plus 0.5 s, exit 0 or 1
// as the gateway deserves, and name the failing stage.
func TestProbeUnderEveryFault(t *testing.T) {
	const timeout = 600 * time.Millisecond
	cases := []struct {
		fault   ibsim.Fault
		healthy bool
		stage   string
	}{
		{nil, true, ""},
		{&ibsim.SilentHandshake{}, false, "handshake"},
		{&ibsim.Silent{}, false, "reqCurrentTime"},
		{&ibsim.Latency{LatencyMS: 2000}, false, "handshake"},
		{&ibsim.Latency{LatencyMS: 20}, true, ""},
		{&ibsim.Drop{}, true, ""}, // one-shot: over before the probe connects
		{&ibsim.Refuse{}, false, "tcp connect"},
		{&ibsim.Restart{DownMS: 5000}, false, "tcp connect"},
		{&ibsim.ConnectivityLoss{}, true, ""}, // the gateway still answers its clock
		{&ibsim.FarmBroken{Farm: "hmds"}, true, ""},
		{&ibsim.ClientIDInUse{ClientIDs: []int{999}}, false, "start api"},
		{&ibsim.CurrentTimeQuirk{}, true, ""}, // the probe sends one reqCurrentTime
		{&ibsim.Garbage{}, true, ""},          // one-shot, before the probe connects
	}
	for _, c := range cases {
		name := "none"
		if c.fault != nil {
			name = c.fault.Kind()
		}
		t.Run(name, func(t *testing.T) {
			srv, err := ibsim.Start(ibsim.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if c.fault != nil {
				if _, err := srv.AddFault(c.fault); err != nil {
					t.Fatal(err)
				}
			}
			var out, errOut bytes.Buffer
			start := time.Now()
			code := run([]string{"ib", "probe", "--ib-port", strconv.Itoa(srv.Port()), "--timeout", timeout.String(), "-o", "json"}, &out, &errOut)
			took := time.Since(start)
			if took > timeout+500*time.Millisecond {
				t.Errorf("probe took %v, limit %v", took, timeout+500*time.Millisecond)
			}
			var res probeResult
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("output %q: %v (stderr %q)", out.String(), err, errOut.String())
			}
			wantCode := exitFailed
			if c.healthy {
				wantCode = exitOK
			}
			if code != wantCode || res.Healthy != c.healthy || res.Stage != c.stage {
				t.Fatalf("exit %d healthy %v stage %q error %q; want exit %d stage %q", code, res.Healthy, res.Stage, res.Error, wantCode, c.stage)
			}
			if !c.healthy && !strings.Contains(res.line(), "failed at "+c.stage) {
				t.Fatalf("line %q does not name the stage", res.line())
			}
		})
	}
}
