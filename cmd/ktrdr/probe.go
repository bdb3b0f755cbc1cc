package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/client"
)

// probeResult is what `ktrdr ib probe -o json` prints.
type probeResult struct {
	Healthy        bool     `json:"healthy"`
	Addr           string   `json:"addr"`
	ClientID       int      `json:"client_id"`
	Stage          string   `json:"stage,omitempty"` // the failing stage
	Error          string   `json:"error,omitempty"`
	ServerVersion  int      `json:"server_version,omitempty"`
	Accounts       []string `json:"accounts,omitempty"`
	AccountType    string   `json:"account_type,omitempty"` // paper or live
	ConnectMS      float64  `json:"connect_ms,omitempty"`
	RoundTripMS    float64  `json:"round_trip_ms,omitempty"`
	ClockSkewS     float64  `json:"clock_skew_seconds,omitempty"`
	GatewayTime    string   `json:"gateway_time,omitempty"`
	ConnectionTime string   `json:"connection_time,omitempty"`
	ElapsedMS      float64  `json:"elapsed_ms"`
}

func newIBCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "ib", Short: "Check and manage the gateway connection"}
	cmd.AddCommand(newProbeCmd(stdout))
	cmd.AddCommand(newIBAPICmds(stdout)...)
	return cmd
}

func newProbeCmd(stdout io.Writer) *cobra.Command {
	var (
		host, output string
		port, id     int
		timeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Check a gateway the way pg_isready checks PostgreSQL: connect, handshake, one reqCurrentTime",
		Long: "Connects to the gateway, completes the handshake and startApi, and makes one reqCurrentTime\n" +
			"round trip, all within --timeout. Exit status: 0 healthy, 1 unhealthy (refused, silent,\n" +
			"timed out, client id in use), 2 usage error. The message names the stage that failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return usageError("-o %q: want text or json", output)
			}
			if port <= 0 || port > 65535 {
				return usageError("--ib-port %d: want 1..65535", port)
			}
			if timeout <= 0 {
				return usageError("--timeout must be positive")
			}
			if id < 0 {
				return usageError("--client-id %d: must not be negative", id)
			}
			res := probe(cmd.Context(), net.JoinHostPort(host, strconv.Itoa(port)), id, timeout)
			if output == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(res)
			} else {
				fmt.Fprintln(stdout, res.line())
			}
			if !res.Healthy {
				return &exitError{code: exitFailed, err: errSilentFailure}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "ib-host", "127.0.0.1", "gateway host")
	f.IntVar(&port, "ib-port", 4002, "gateway API port (4002 paper gateway, 4001 live, 7497/7496 TWS)")
	f.IntVar(&id, "client-id", 999, "client id for the probe (high, to stay clear of the pool's low ids)")
	f.DurationVar(&timeout, "timeout", 3*time.Second, "deadline for the whole probe")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// errSilentFailure marks a failure already reported on stdout.
var errSilentFailure = errors.New("")

func probe(ctx context.Context, addr string, id int, timeout time.Duration) probeResult {
	start := time.Now()
	res := probeResult{Addr: addr, ClientID: id}
	defer func() { res.ElapsedMS = ms(time.Since(start)) }()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addr: addr, ClientID: id, ConnectTimeout: timeout})
	if err != nil {
		res.Error = err.Error()
		var ce *client.ConnectError
		var idErr *client.ClientIDInUseError
		switch {
		case errors.As(err, &ce):
			res.Stage = string(ce.Stage)
		case errors.As(err, &idErr):
			res.Stage = string(client.StageStartAPI)
		}
		res.ElapsedMS = ms(time.Since(start))
		return res
	}
	defer conn.Close()
	res.ConnectMS = ms(time.Since(start))
	res.ServerVersion, res.Accounts = conn.ServerVersion(), conn.Accounts()
	res.AccountType, res.ConnectionTime = client.AccountType(res.Accounts), conn.ConnectionTime()
	st, err := conn.CurrentTime(ctx)
	if err != nil {
		res.Stage, res.Error = "reqCurrentTime", err.Error()
		return res
	}
	res.Healthy = true
	res.RoundTripMS = ms(st.RTT)
	// The gateway's clock has one-second resolution: compare with the
	// midpoint of the round trip.
	mid := st.Sent.Add(st.RTT / 2)
	res.ClockSkewS = st.Time.Sub(mid.Truncate(time.Second)).Seconds()
	res.GatewayTime = st.Time.UTC().Format(time.RFC3339)
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r probeResult) line() string {
	if !r.Healthy {
		return fmt.Sprintf("unhealthy: %s (client id %d) failed at %s: %s", r.Addr, r.ClientID, r.Stage, r.Error)
	}
	return fmt.Sprintf("healthy: %s server version %d, accounts %s (%s), connect %.1f ms, round trip %.1f ms, clock skew %+.0f s",
		r.Addr, r.ServerVersion, strings.Join(r.Accounts, ","), r.AccountType, r.ConnectMS, r.RoundTripMS, r.ClockSkewS)
}
