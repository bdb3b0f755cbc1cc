package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/internal/api"
	"github.com/ktrdr/ktrdr/internal/config"
	"github.com/ktrdr/ktrdr/internal/loader"
	"github.com/ktrdr/ktrdr/internal/pacing"
	"github.com/ktrdr/ktrdr/internal/service"
	"github.com/ktrdr/ktrdr/internal/store"
	"github.com/ktrdr/ktrdr/pool"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// drainTimeout bounds how long shutdown waits for in-flight requests.
const drainTimeout = 10 * time.Second

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the service: HTTP API, connection pool, health loop (add --sim for the embedded simulator)",
		Long: "Runs the ktrdr service. Settings come from flags, then KTRDR_* environment variables, then\n" +
			"an optional JSON file (--config), each overriding the next; an invalid value stops start-up.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), os.Getenv)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			return serve(cmd.Context(), cfg, stdout, stderr)
		},
	}
	config.Register(cmd.Flags())
	return cmd
}

func serve(ctx context.Context, cfg config.Config, stdout, stderr io.Writer) error {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	failed := func(err error) error { return &exitError{code: exitFailed, err: err} }

	// Bind the API first: a port in use should fail before anything starts.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return failed(fmt.Errorf("API listen on %s: %w", cfg.Listen, err))
	}
	defer ln.Close()

	if cfg.Sim {
		sim, err := ibsim.Start(ibsim.Config{Addr: cfg.SimListen, ControlAddr: cfg.SimControl, Seed: cfg.SimSeed,
			TimeScale: cfg.SimTimeScale, Logger: logger.With("component", "ibsim")})
		if err != nil {
			return failed(err)
		}
		defer sim.Close()
		host, port, _ := net.SplitHostPort(sim.Addr())
		cfg.IBHost = host
		cfg.IBPort, _ = strconv.Atoi(port)
		fmt.Fprintf(stdout, "ktrdr serve: simulator gateway on %s, control API on %s\n", sim.Addr(), sim.ControlURL())
	}

	// The gateway's windows (message rate, historical pacing) are divided
	// by the simulator's time scale; the client's message pacing and the
	// pacing scheduler must be too, or they would hold requests back for
	// windows the simulator no longer has.
	scale := 1.0
	if cfg.Sim && cfg.SimTimeScale > 0 {
		scale = cfg.SimTimeScale
	}
	poolCfg := pool.Config{MaxConns: cfg.MaxConns, MinIdle: minIdle(cfg.MinIdle), ConnectTimeout: cfg.ConnectTimeout,
		ValidationTimeout: cfg.ValidationTimeout, ValidationBypass: cfg.ValidationBypass, IdleTimeout: cfg.IdleTimeout,
		HealthInterval: cfg.HealthInterval, BreakerFailures: cfg.BreakerFailures, BreakerProbeInterval: cfg.BreakerProbeInterval,
		ClientIDAttempts: cfg.ClientIDAttempts, ClientIDPause: cfg.ClientIDPause, ClientIDCooldown: cfg.ClientIDCooldown,
		LeakThreshold: leakThreshold(cfg.LeakThreshold)}
	if scale != 1 {
		rate := max(int(float64(client.DefaultMaxRate)*scale), 1)
		poolCfg.Dial = func(ctx context.Context, c client.Config) (*client.Conn, error) {
			c.MaxRate = rate
			return client.Dial(ctx, c)
		}
	}
	svc, err := service.New(service.Options{
		Gateway: service.GatewayConfig{Host: cfg.IBHost, Port: cfg.IBPort, ClientIDBase: cfg.ClientIDBase},
		Pool:    poolCfg,
		DataDir: cfg.DataDir,
		Logger:  logger.With("component", "service"),
	})
	if err != nil {
		return failed(err)
	}
	defer svc.Close()

	// Historical data: the bar store, the process's one pacing scheduler
	// (IB's limits are per gateway, so a second scheduler would believe it
	// had the whole budget) and the loader that owns the loads.
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil && cfg.DataDir != "" {
		return failed(fmt.Errorf("data directory %s: %w", cfg.DataDir, err))
	}
	bars, err := store.OpenSQLite(filepath.Join(cfg.DataDir, "bars.db"))
	if err != nil {
		return failed(err)
	}
	defer bars.Close()
	ld, err := loader.New(loader.Config{Gateway: svc, Store: bars, Logger: logger.With("component", "loader"),
		Pacing: pacing.New(pacing.Config{Scale: scale, Clock: loader.PacingClock(loader.PacingMargin(scale))}), Scale: scale})
	if err != nil {
		return failed(err)
	}
	// Runs before the store and the pool close (deferred calls run last
	// first): running loads are cancelled, their requests cancelled on the
	// gateway, and every bar already stored stays.
	defer ld.Close()

	handler, err := api.New(svc, api.Options{Token: cfg.Token, HandlerTimeout: cfg.HandlerTimeout,
		Logger: logger.With("component", "api"), Version: version, Loader: ld})
	if err != nil {
		return failed(err)
	}
	srv := handler.HTTPServer(cfg.Listen)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Announced only once the signal handler is in place: whoever waits for
	// this line may stop the service right away and must get a clean drain.
	fmt.Fprintf(stdout, "ktrdr serve: API on http://%s (gateway %s:%d)\n", ln.Addr(), cfg.IBHost, cfg.IBPort)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return failed(fmt.Errorf("API server stopped: %w", err))
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "deadline", drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("requests still running at the drain deadline", "err", err)
		_ = srv.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("API server", "err", err)
	}
	return nil
}

// minIdle maps the setting's 0 ("none") to the pool's spelling of none.
func minIdle(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// leakThreshold maps the setting's 0 ("off") to the pool's spelling of off.
func leakThreshold(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
