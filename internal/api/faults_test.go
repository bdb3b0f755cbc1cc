package api_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
)

// TestHealthUnderSilentGateway: 200, then 503 with the check's data once
// the gateway stops answering, every endpoint answering within its
// deadline meanwhile, and 200 again after the fault clears.
func TestHealthUnderSilentGateway(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	e.waitHealthy(t)
	// Warm the discovery cache so one lookup is served without the gateway.
	if rep := e.send(t, http.MethodPost, "/api/v1/ib/symbols/discover", `{"symbol":"AAPL"}`); rep.status != 200 {
		t.Fatalf("discover %d %s", rep.status, rep.body)
	}
	if _, err := e.sim.AddFault(&ibsim.Silent{}); err != nil {
		t.Fatal(err)
	}
	var last reply
	eventually(t, 10*time.Second, "ib health 503", func() (bool, string) {
		last = e.get(t, "/api/v1/ib/health")
		return last.status == http.StatusServiceUnavailable, string(last.body)
	})
	d := last.data(t)
	if d["healthy"] != false || d["checked_at"] == nil || d["error_message"] == "" || d["stage"] == "" {
		t.Fatalf("503 without the check's data: %s", last.body)
	}
	if last.env.Error.Code == "" || last.env.Error.Details["stage"] == "" {
		t.Fatalf("503 error %s", last.raw["error"])
	}

	// Every endpoint at once, against the silent gateway: each answers
	// within its 5s deadline (plus scheduling slack), in the envelope.
	reqs := []req{
		{method: "GET", path: "/api/v1/health"},
		{method: "GET", path: "/api/v1/ib/health"},
		{method: "GET", path: "/api/v1/ib/status"},
		{method: "GET", path: "/api/v1/ib/resilience"},
		{method: "GET", path: "/api/v1/ib/config"},
		{method: "PUT", path: "/api/v1/ib/config", body: `{}`},
		{method: "GET", path: "/api/v1/ib/circuit-breakers"},
		{method: "POST", path: "/api/v1/ib/symbols/discover", body: `{"symbol":"AAPL"}`},
		{method: "POST", path: "/api/v1/ib/symbols/discover", body: `{"symbol":"MSFT"}`},
		{method: "GET", path: "/api/v1/ib/symbols/discovered"},
		{method: "GET", path: "/metrics"},
		{method: "POST", path: "/api/v1/ib/cleanup", body: `{"force":false}`},
	}
	var wg sync.WaitGroup
	results := make([]reply, len(reqs))
	for i, q := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.do(t, q)
		}()
	}
	wg.Wait()
	for i, rep := range results {
		q := reqs[i]
		t.Logf("%s %s: %d in %s", q.method, q.path, rep.status, rep.took.Round(time.Millisecond))
		if rep.took >= 6*time.Second {
			t.Errorf("%s %s took %s", q.method, q.path, rep.took)
		}
		if rep.status >= 500 && rep.status != 503 && rep.status != 504 {
			t.Errorf("%s %s: %d %s", q.method, q.path, rep.status, rep.body)
		}
	}
	if results[7].status != 200 {
		t.Errorf("cached discovery failed while the gateway is silent: %s", results[7].body)
	}
	if s := results[8].status; s != 503 && s != 504 {
		t.Errorf("uncached discovery on a silent gateway: %d %s", s, results[8].body)
	} else if results[8].env.Error.Details["stage"] == nil {
		t.Errorf("gateway error without its stage: %s", results[8].body)
	}

	e.sim.ClearFaults()
	eventually(t, 10*time.Second, "ib health 200 again", func() (bool, string) {
		rep := e.get(t, "/api/v1/ib/health")
		return rep.status == http.StatusOK, string(rep.body)
	})
}

func TestHealthUnderRefusingGateway(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.waitHealthy(t)
	if _, err := e.sim.AddFault(&ibsim.Refuse{}); err != nil {
		t.Fatal(err)
	}
	// Refusing spares connections already open: close them so every
	// connect must go to the refusing gateway.
	if rep := e.send(t, http.MethodPost, "/api/v1/ib/cleanup", `{"force":true}`); rep.status != 200 {
		t.Fatalf("cleanup %d", rep.status)
	}
	var last reply
	eventually(t, 10*time.Second, "ib health 503", func() (bool, string) {
		last = e.get(t, "/api/v1/ib/health")
		return last.status == http.StatusServiceUnavailable, string(last.body)
	})
	if d := last.data(t); d["healthy"] != false || d["connection_ok"] != false || d["error_message"] == "" {
		t.Fatalf("503 data %s", last.body)
	}
	if rep := e.send(t, http.MethodPost, "/api/v1/ib/symbols/discover", `{"symbol":"MSFT"}`); rep.status != 503 && rep.status != 504 {
		t.Fatalf("discovery with the gateway refusing: %d %s", rep.status, rep.body)
	}
	e.sim.ClearFaults()
	eventually(t, 10*time.Second, "ib health 200 again", func() (bool, string) {
		rep := e.get(t, "/api/v1/ib/health")
		return rep.status == http.StatusOK, string(rep.body)
	})
}

// TestScoreFollowsTheGateway: >= 75 healthy, < 75 within 10s of a fault,
// >= 75 within 5s of clearing it, for a silent and a refusing gateway.
func TestScoreFollowsTheGateway(t *testing.T) {
	for _, fault := range []struct {
		name  string
		add   func(*ibsim.Server) error
		force bool // close open connections, which Refuse spares
	}{
		{"silent", func(s *ibsim.Server) error { _, err := s.AddFault(&ibsim.Silent{}); return err }, false},
		{"refuse", func(s *ibsim.Server) error { _, err := s.AddFault(&ibsim.Refuse{}); return err }, true},
	} {
		t.Run(fault.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			// The collection phase needs one health-loop run, which comes one
			// interval (200ms) after start.
			eventually(t, 10*time.Second, "score >= 75 with the health loop run", func() (bool, string) {
				s, state := e.score(t)
				return s >= 75 && e.svc.Pool().Stats().HealthRuns > 0, state
			})
			if s, state := e.score(t); s < 75 {
				t.Fatalf("healthy score %g: %s", s, state)
			}
			if err := fault.add(e.sim); err != nil {
				t.Fatal(err)
			}
			if fault.force {
				e.send(t, http.MethodPost, "/api/v1/ib/cleanup", `{"force":true}`)
			}
			took := eventually(t, 10*time.Second, "score < 75 under the fault", func() (bool, string) {
				s, state := e.score(t)
				return s < 75, state
			})
			t.Logf("score fell below 75 after %s", took.Round(time.Millisecond))
			e.sim.ClearFaults()
			took = eventually(t, 5*time.Second, "score >= 75 after clearing", func() (bool, string) {
				s, state := e.score(t)
				return s >= 75, state
			})
			t.Logf("score back to >= 75 after %s", took.Round(time.Millisecond))
		})
	}
}

func TestConfigChange(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	e.waitHealthy(t)
	const conf = "/api/v1/ib/config"
	port := e.sim.Port()

	for _, body := range []string{``, `{}`, `{"host":"127.0.0.1","port":` + itoa(port) + `,"client_id_base":1}`} {
		rep := e.send(t, http.MethodPut, conf, body)
		d := rep.data(t)
		if rep.status != 200 || d["changed"] != false || d["reconnected"] != false {
			t.Fatalf("PUT %q: %d %s", body, rep.status, rep.body)
		}
		if cur, _ := at(d, "current", "port"); cur != float64(port) {
			t.Fatalf("PUT %q current %v", body, cur)
		}
	}
	before := e.svc.Pool()

	sim2 := startSim(t)
	rep := e.send(t, http.MethodPut, conf, `{"port":`+itoa(sim2.Port())+`}`)
	d := rep.data(t)
	if rep.status != 200 || d["changed"] != true || d["reconnected"] != true {
		t.Fatalf("PUT new port: %d %s", rep.status, rep.body)
	}
	if prev, _ := at(d, "previous", "port"); prev != float64(port) {
		t.Fatalf("previous %v", prev)
	}
	if e.svc.Pool() == before {
		t.Fatal("pool not replaced")
	}
	rep = e.get(t, conf)
	if d := rep.data(t); d["port"] != float64(sim2.Port()) {
		t.Fatalf("config after change %s", rep.body)
	}
	rep = e.get(t, "/api/v1/ib/status")
	if p, _ := at(rep.data(t), "gateway", "port"); p != float64(sim2.Port()) {
		t.Fatalf("status gateway port %v", p)
	}
	// The first gateway going away no longer matters.
	e.sim.Close()
	e.waitHealthy(t)
}

func itoa(n int) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
