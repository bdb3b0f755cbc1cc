package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/ibsim"
)

func newSimCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		listen, control, account, logLevel string
		seed                               int64
		timeScale                          float64
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run the IB Gateway simulator (TWS API protocol, deterministic data, fault injection)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeScale <= 0 {
				return usageError("--time-scale must be positive, got %v", timeScale)
			}
			if !strings.HasPrefix(account, "DU") && !strings.HasPrefix(account, "U") {
				return usageError("--account %q: IB accounts start with DU (paper) or U (live)", account)
			}
			logger, err := newLogger(stderr, logLevel)
			if err != nil {
				return err
			}
			srv, err := ibsim.Start(ibsim.Config{Addr: listen, ControlAddr: control, Seed: seed,
				TimeScale: timeScale, Accounts: []string{account}, Logger: logger})
			if err != nil {
				return &exitError{code: exitFailed, err: err}
			}
			// The handler goes in before the addresses are announced: whoever
			// waits for them may stop the simulator at once.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(stdout, "ktrdr sim: gateway listening on %s (server versions 157..%d)\n", srv.Addr(), srv.State().ServerVersion)
			fmt.Fprintf(stdout, "ktrdr sim: control API on %s\n", srv.ControlURL())
			<-ctx.Done()
			logger.Info("shutting down")
			return srv.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:4002", "gateway (TWS API) listen address")
	f.StringVar(&control, "control", "127.0.0.1:4012", "control API listen address")
	f.Int64Var(&seed, "seed", 1, "seed of the deterministic market data")
	f.Float64Var(&timeScale, "time-scale", 1, "divide every gateway time window (message rate, pacing) by this factor")
	f.StringVar(&account, "account", "DU0000001", "managed account announced to clients (DU... paper, U... live)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(newSimFaultCmd(stdout))
	return cmd
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func newSimFaultCmd(stdout io.Writer) *cobra.Command {
	var controlURL string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "fault",
		Short: "Add, list or clear faults on a running simulator",
	}
	cmd.PersistentFlags().StringVar(&controlURL, "control", "http://127.0.0.1:4012", "the simulator's control API")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 5*time.Second, "deadline for the control request")

	call := func(cmd *cobra.Command, method, path string, body any) ([]byte, error) {
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		var rd io.Reader
		if body != nil {
			b, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(controlURL, "/")+path, rd)
		if err != nil {
			return nil, usageError("--control %q: %v", controlURL, err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, &exitError{code: exitUnreached, err: fmt.Errorf("cannot reach the simulator's control API at %s: %w", controlURL, err)}
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, &exitError{code: exitUnreached, err: fmt.Errorf("reading the control API's answer: %w", err)}
		}
		if resp.StatusCode >= 300 {
			var e struct{ Error string }
			_ = json.Unmarshal(out, &e)
			if e.Error == "" {
				e.Error = strings.TrimSpace(string(out))
			}
			code := exitFailed
			if resp.StatusCode == http.StatusBadRequest {
				code = exitUsage
			}
			return nil, &exitError{code: code, err: fmt.Errorf("simulator answered %d: %s", resp.StatusCode, e.Error)}
		}
		return out, nil
	}

	var duration time.Duration
	var clientIDs []int
	add := &cobra.Command{
		Use:   "add KIND [param=value ...]",
		Short: "Activate a fault: " + strings.Join(ibsim.FaultKinds(), ", "),
		Example: "  ktrdr sim fault add silent --duration 10s\n" +
			"  ktrdr sim fault add latency latency_ms=200 jitter_ms=50\n" +
			"  ktrdr sim fault add client_id_in_use client_ids=[1,2]\n" +
			"  ktrdr sim fault add connectivity_loss data_lost=true --duration 30s",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{"kind": args[0]}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError("parameter %q: want name=value", kv)
				}
				// Numbers, booleans and arrays travel as JSON; anything else as a string.
				var j any
				if err := json.Unmarshal([]byte(v), &j); err == nil {
					body[k] = j
				} else {
					body[k] = v
				}
			}
			if duration < 0 {
				return usageError("--duration must not be negative")
			}
			if duration > 0 {
				body["duration_ms"] = duration.Milliseconds()
			}
			if len(clientIDs) > 0 {
				body["client_ids"] = clientIDs
			}
			out, err := call(cmd, http.MethodPost, "/v1/faults", body)
			if err != nil {
				return err
			}
			var r struct{ ID string }
			_ = json.Unmarshal(out, &r)
			fmt.Fprintf(stdout, "fault %s added (%s)\n", r.ID, args[0])
			return nil
		},
	}
	add.Flags().DurationVar(&duration, "duration", 0, "end the fault after this long (0: until cleared)")
	add.Flags().IntSliceVar(&clientIDs, "client-ids", nil, "limit the fault to these client ids")

	list := &cobra.Command{
		Use:   "list",
		Short: "List active faults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := call(cmd, http.MethodGet, "/v1/faults", nil)
			if err != nil {
				return err
			}
			var faults []ibsim.FaultInfo
			if err := json.Unmarshal(out, &faults); err != nil {
				return &exitError{code: exitFailed, err: fmt.Errorf("unexpected answer from the control API: %w", err)}
			}
			if len(faults) == 0 {
				fmt.Fprintln(stdout, "no active faults")
				return nil
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tPARAMS\tCLIENT IDS\tSINCE\tEXPIRES")
			for _, f := range faults {
				params, _ := json.Marshal(f.Params)
				ids := "all"
				if len(f.ClientIDs) > 0 {
					ids = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(f.ClientIDs)), ","), "[]")
				}
				exp := "-"
				if f.ExpiresAt != nil {
					exp = f.ExpiresAt.Format(time.RFC3339)
				}
				if f.Params == nil {
					params = []byte("-")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, f.Kind, params, ids, f.Since.Format(time.RFC3339), exp)
			}
			return tw.Flush()
		},
	}
	clear := &cobra.Command{
		Use:   "clear [ID]",
		Short: "End one fault, or every fault",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/faults"
			if len(args) == 1 {
				path += "/" + args[0]
			}
			if _, err := call(cmd, http.MethodDelete, path, nil); err != nil {
				return err
			}
			if len(args) == 1 {
				fmt.Fprintf(stdout, "fault %s cleared\n", args[0])
			} else {
				fmt.Fprintln(stdout, "all faults cleared")
			}
			return nil
		},
	}
	cmd.AddCommand(add, list, clear)
	return cmd
}
