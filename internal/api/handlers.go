package api

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"time"

	"github.com/ktrdr/ktrdr/internal/service"
)

// ServiceHealth is the answer of GET /api/v1/health: the API process
// itself, not the gateway, so it answers even when the gateway is down.
type ServiceHealth struct {
	Status        string    `json:"status"`
	Version       string    `json:"version"`
	GoVersion     string    `json:"go_version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Goroutines    int       `json:"goroutines"`
	PID           int       `json:"pid"`
}

func (s *Server) serviceHealth(context.Context) result {
	return ok(ServiceHealth{Status: "ok", Version: s.opts.Version, GoVersion: runtime.Version(), StartedAt: s.started,
		UptimeSeconds: time.Since(s.started).Seconds(), Goroutines: runtime.NumGoroutine(), PID: s.pid})
}

// ibHealth answers 503 with the check's data when the gateway is not
// healthy: monitors key on the status, people read the data.
func (s *Server) ibHealth(ctx context.Context) result {
	h := s.svc.Health(ctx)
	if h.Healthy {
		return ok(h)
	}
	msg := h.ErrorMessage
	if msg == "" {
		msg = "the gateway is not healthy"
	}
	res := fail(http.StatusServiceUnavailable, "GATEWAY_UNHEALTHY", msg, map[string]any{
		"stage": h.Stage, "connection_ok": h.ConnectionOK, "data_fetching_ok": h.DataFetchingOK})
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.err.Code = "HEALTH_CHECK_TIMEOUT"
	}
	res.data = h
	return res
}

func (s *Server) status(context.Context) result { return ok(s.svc.Status()) }

// resilience always answers 200: a low score is the report, not a failure
// to produce one.
func (s *Server) resilience(ctx context.Context) result { return ok(s.svc.Resilience(ctx)) }

func (s *Server) config(context.Context) result { return ok(s.svc.GatewayConfig()) }

// updateConfig applies a change; an empty body or {} changes nothing and
// answers the current config with changed=false. A change that took effect
// but could not reconnect is still a success: the data says so.
func (s *Server) updateConfig(ctx context.Context, u service.GatewayConfigUpdate) result {
	change, err := s.svc.UpdateGatewayConfig(ctx, u)
	if err != nil {
		return fromError(err)
	}
	return ok(change)
}

// cleanupRequest is the body of POST /api/v1/ib/cleanup; an empty body
// means force=false.
type cleanupRequest struct {
	Force bool `json:"force"`
}

func (s *Server) cleanup(_ context.Context, in cleanupRequest) result {
	return ok(s.svc.Cleanup(in.Force))
}

// BreakerList is the answer of GET /api/v1/ib/circuit-breakers.
type BreakerList struct {
	Breakers []service.BreakerInfo `json:"circuit_breakers"`
}

func (s *Server) circuitBreakers(context.Context) result {
	return ok(BreakerList{Breakers: s.svc.CircuitBreakers()})
}

// discoverRequest is the body of POST /api/v1/ib/symbols/discover.
type discoverRequest struct {
	Symbol       string `json:"symbol"`
	ForceRefresh bool   `json:"force_refresh"`
}

func (s *Server) discover(ctx context.Context, in discoverRequest) result {
	inst, err := s.svc.Discover(ctx, in.Symbol, in.ForceRefresh)
	if err != nil {
		return fromError(err)
	}
	return ok(inst)
}

// SymbolList is the answer of GET /api/v1/ib/symbols/discovered.
type SymbolList struct {
	Symbols []service.Instrument `json:"symbols"`
	Count   int                  `json:"count"`
}

func (s *Server) discovered(context.Context) result {
	list := s.svc.Discovered()
	return ok(SymbolList{Symbols: list, Count: len(list)})
}
