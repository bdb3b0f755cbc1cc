package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/internal/service"
)

// newIBAPICmds returns the `ktrdr ib` subcommands that ask a running
// `ktrdr serve` over HTTP (probe, beside them, talks to a gateway directly).
func newIBAPICmds(stdout io.Writer) []*cobra.Command {
	return []*cobra.Command{
		newIBHealthCmd(stdout),
		newIBStatusCmd(stdout),
		newIBResilienceCmd(stdout),
		newIBConfigCmd(stdout),
		newIBCleanupCmd(stdout),
		newIBBreakersCmd(stdout),
	}
}

func newIBHealthCmd(stdout io.Writer) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Live health check through the service's pool: a validated connection and one data request",
		Long: "Asks the service for a live check (GET /api/v1/ib/health): acquire a validated connection\n" +
			"and answer one data request. Prints whether it is healthy, the latency and, when it is not,\n" +
			"the stage that failed and the error. An unhealthy gateway exits 1.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		rep, err := c.call(ctx, http.MethodGet, "/api/v1/ib/health", nil)
		if err != nil {
			return err
		}
		// An unhealthy gateway is a 503 that still carries the check: show
		// the check, which says more than the error alone.
		if !rep.hasData() || (!rep.ok() && rep.status != http.StatusServiceUnavailable) {
			return c.failure(rep)
		}
		var h service.Health
		if err := c.decode(rep, &h); err != nil {
			return err
		}
		switch {
		case !c.json:
			renderHealth(c.stdout, c.color, time.Now(), h)
		case rep.ok():
			c.printJSON(rep.env.Data)
		default:
			c.printJSON(rep.raw)
		}
		if !rep.ok() || !h.Healthy {
			return &exitError{code: exitFailed, err: errSilentFailure}
		}
		return nil
	})
	f.register(cmd)
	return cmd
}

func newIBStatusCmd(stdout io.Writer) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Gateway, accounts, pool, client ids, circuit breaker and recent gateway events",
		Long: "Shows what the service knows without asking the gateway anything (GET /api/v1/ib/status):\n" +
			"the gateway and its accounts (paper or live), since when it is connected, the pool's\n" +
			"counts, client ids, the circuit breaker and the last connection events.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		var s service.Status
		if _, err := c.get(ctx, "/api/v1/ib/status", &s); err != nil {
			return err
		}
		if !c.json {
			renderStatus(c.stdout, c.color, time.Now(), s)
		}
		return nil
	})
	f.register(cmd)
	return cmd
}

func newIBResilienceCmd(stdout io.Writer) *cobra.Command {
	var (
		f        apiFlags
		minScore float64
	)
	cmd := &cobra.Command{
		Use:   "resilience",
		Short: "Resilience score and each phase's status with the evidence behind it",
		Long: "Shows the resilience report (GET /api/v1/ib/resilience): one row per phase with its status\n" +
			"(working, degraded, failing), the reason and the evidence, then the score out of 100 and\n" +
			"its formula. With --min-score it is a monitoring check: a lower score exits 1 and names\n" +
			"the phases that are not working.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		if math.IsNaN(minScore) || minScore < 0 {
			return usageError("--min-score %v: want a number from 0", minScore)
		}
		rep, err := c.get(ctx, "/api/v1/ib/resilience", nil)
		if err != nil {
			return err
		}
		r, err := decodeResilience(c, rep)
		if err != nil {
			return err
		}
		if !c.json {
			renderResilience(c.stdout, c.color, r)
		}
		if r.Score < minScore {
			return &exitError{code: exitFailed, err: belowMinScore(r, minScore)}
		}
		return nil
	})
	f.register(cmd)
	cmd.Flags().Float64Var(&minScore, "min-score", 0, "exit 1 when the score (0..100) is below this; 75 is the original system's bar, 0 checks nothing")
	return cmd
}

// decodeResilience reads the score fields and collects the phases, which
// the API lays out as top-level keys named phase_N_....
func decodeResilience(c *apiClient, rep *apiReply) (resilienceView, error) {
	var r resilienceView
	var fields map[string]json.RawMessage
	if err := c.decode(rep, &fields); err != nil {
		return r, err
	}
	if err := c.decode(rep, &r.Resilience); err != nil {
		return r, err
	}
	for k, raw := range fields {
		if !strings.HasPrefix(k, "phase_") {
			continue
		}
		p := phaseView{Key: k}
		if err := c.decodeRaw(raw, &p); err != nil {
			return r, err
		}
		r.Phases = append(r.Phases, p)
	}
	sort.Slice(r.Phases, func(i, j int) bool { return r.Phases[i].Key < r.Phases[j].Key })
	return r, nil
}

// belowMinScore explains a failed score check: the score and every phase
// that cost points, with its reason.
func belowMinScore(r resilienceView, minScore float64) error {
	var bad []string
	for _, p := range r.Phases {
		if p.Status != service.Working {
			s := fmt.Sprintf("%s: %s", p.title(), p.Status)
			if p.Reason != "" {
				s += " (" + p.Reason + ")"
			}
			bad = append(bad, s)
		}
	}
	why := "every phase is working; the score cannot exceed 100"
	if len(bad) > 0 {
		why = "not working: " + strings.Join(bad, "; ")
	}
	return fmt.Errorf("resilience score %.1f is below --min-score %g: %s", r.Score, minScore, why)
}

func newIBConfigCmd(stdout io.Writer) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show (get) or change (set) the gateway the service connects to",
		Long:  "Without a subcommand, the same as `config get`.",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, showConfig)
	f.register(cmd)

	var gf apiFlags
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the gateway host, port and client id base",
		Long:  "Shows the gateway settings in use (GET /api/v1/ib/config).",
		Args:  cobra.NoArgs,
	}
	get.RunE = apiCommand(&gf, stdout, showConfig)
	gf.register(get)

	cmd.AddCommand(get, newIBConfigSetCmd(stdout))
	return cmd
}

func showConfig(ctx context.Context, c *apiClient) error {
	var g service.GatewayConfig
	if _, err := c.get(ctx, "/api/v1/ib/config", &g); err != nil {
		return err
	}
	if !c.json {
		renderConfig(c.stdout, g)
	}
	return nil
}

func newIBConfigSetCmd(stdout io.Writer) *cobra.Command {
	var (
		f          apiFlags
		host       string
		port, base int
	)
	cmd := &cobra.Command{
		Use:   "set [--host H] [--port P] [--client-id-base N]",
		Short: "Point the service at another gateway; only the given settings change",
		Long: "Changes the gateway settings (PUT /api/v1/ib/config), sending only the flags given. The\n" +
			"service builds a new pool, drains the old one and makes a validated connection to the new\n" +
			"gateway. Values that are obviously wrong are refused here (exit 2); the server checks the\n" +
			"rest (its 400 also exits 2). When the change is applied but the new gateway cannot be\n" +
			"reached, the command exits 1: the setting stays, the gateway is not healthy.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		fs := cmd.Flags()
		// Only the given fields go in the body: the server keeps the rest.
		body := map[string]any{}
		if fs.Changed("host") {
			if strings.TrimSpace(host) == "" {
				return usageError("--host must not be empty")
			}
			body["host"] = host
		}
		if fs.Changed("port") {
			if port < 1 || port > 65535 {
				return usageError("--port %d: want 1..65535", port)
			}
			body["port"] = port
		}
		if fs.Changed("client-id-base") {
			if base < 0 {
				return usageError("--client-id-base %d: must not be negative", base)
			}
			body["client_id_base"] = base
		}
		if len(body) == 0 {
			return usageError("nothing to set: give --host, --port or --client-id-base")
		}
		var ch service.ConfigChange
		if _, err := c.do(ctx, http.MethodPut, "/api/v1/ib/config", body, &ch); err != nil {
			return err
		}
		if !c.json {
			renderConfigChange(c.stdout, c.color, ch)
		}
		if ch.Changed && !ch.Reconnected {
			return &exitError{code: exitFailed, err: fmt.Errorf("the new settings are applied, but no validated connection to %s:%d was made: %s",
				ch.Current.Host, ch.Current.Port, ch.Error)}
		}
		return nil
	})
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&host, "host", "", "gateway host")
	fl.IntVar(&port, "port", 0, "gateway API port (4002 paper gateway, 4001 live, 7497/7496 TWS)")
	fl.IntVar(&base, "client-id-base", 0, "lowest client id the pool uses")
	return cmd
}

func newIBCleanupCmd(stdout io.Writer) *cobra.Command {
	var (
		f     apiFlags
		force bool
	)
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Close the pool's idle connections (all of them with --force)",
		Long: "Closes idle connections now instead of waiting for the idle timeout (POST /api/v1/ib/cleanup).\n" +
			"With --force it closes connections in use too: their holders get an error. Prints the\n" +
			"client ids closed and the pool before and after; the pool reconnects on demand.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		var res service.CleanupResult
		if _, err := c.do(ctx, http.MethodPost, "/api/v1/ib/cleanup", map[string]bool{"force": force}, &res); err != nil {
			return err
		}
		if !c.json {
			renderCleanup(c.stdout, res)
		}
		return nil
	})
	f.register(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "close connections in use too")
	return cmd
}

func newIBBreakersCmd(stdout io.Writer) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "circuit-breakers",
		Short: "State of the circuit breakers in front of the gateway",
		Long: "Lists the circuit breakers (GET /api/v1/ib/circuit-breakers): state (closed, open,\n" +
			"half-open), consecutive failures against the threshold, transitions and the last change.\n" +
			"An open breaker is reported, not judged: the command exits 0 when it could ask.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		rep, err := c.get(ctx, "/api/v1/ib/circuit-breakers", nil)
		if err != nil {
			return err
		}
		bs, err := decodeList[service.BreakerInfo](c, rep, "circuit_breakers", "breakers")
		if err != nil {
			return err
		}
		if !c.json {
			renderBreakers(c.stdout, c.color, time.Now(), bs)
		}
		return nil
	})
	f.register(cmd)
	return cmd
}

// decodeList reads a list that the API sends either bare or inside an
// object under one of keys, so the client reads both shapes.
func decodeList[T any](c *apiClient, rep *apiReply, keys ...string) ([]T, error) {
	var list []T
	if json.Unmarshal(rep.env.Data, &list) == nil {
		return list, nil
	}
	var obj map[string]json.RawMessage
	if err := c.decode(rep, &obj); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if raw, ok := obj[k]; ok {
			return list, c.decodeRaw(raw, &list)
		}
	}
	return nil, c.decode(rep, &list) // reports the mismatch
}
