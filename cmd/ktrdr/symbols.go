package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/internal/service"
)

func newSymbolsCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "symbols", Short: "Discover what a symbol is (stock, forex pair, future) and list discoveries"}
	cmd.AddCommand(newSymbolsDiscoverCmd(stdout), newSymbolsListCmd(stdout))
	return cmd
}

func newSymbolsDiscoverCmd(stdout io.Writer) *cobra.Command {
	var (
		f     apiFlags
		force bool
	)
	cmd := &cobra.Command{
		Use:   "discover SYMBOL",
		Short: "Find a symbol as a stock, a forex pair or a future, with its contract id and first bar",
		Long: "Asks the service what SYMBOL is (POST /api/v1/ib/symbols/discover): a stock (SMART/USD),\n" +
			"else a forex pair (EURUSD, EUR.USD and EUR/USD all work), else a future (front month).\n" +
			"Prints the type, exchange, currency, contract id, description, the earliest data (head\n" +
			"timestamp), whether the answer came from the service's cache and how long it took.\n" +
			"A symbol IB does not know exits 1; a malformed one exits 2.",
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cc *cobra.Command, args []string) error {
		symbol := strings.TrimSpace(args[0])
		if symbol == "" {
			return usageError("SYMBOL must not be empty")
		}
		return apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
			var in service.Instrument
			body := map[string]any{"symbol": symbol, "force_refresh": force}
			if _, err := c.do(ctx, http.MethodPost, "/api/v1/ib/symbols/discover", body, &in); err != nil {
				return err
			}
			if !c.json {
				renderInstrument(c.stdout, c.color, time.Now(), in)
			}
			return nil
		})(cc, args)
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&force, "force-refresh", false, "ask the gateway even when the answer is cached")
	return cmd
}

func newSymbolsListCmd(stdout io.Writer) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the symbols discovered so far (the service's cache), newest first",
		Long:  "Lists the cached discoveries (GET /api/v1/ib/symbols/discovered), newest first.",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = apiCommand(&f, stdout, func(ctx context.Context, c *apiClient) error {
		rep, err := c.get(ctx, "/api/v1/ib/symbols/discovered", nil)
		if err != nil {
			return err
		}
		ins, err := decodeList[service.Instrument](c, rep, "symbols", "instruments", "discovered")
		if err != nil {
			return err
		}
		if !c.json {
			renderInstruments(c.stdout, time.Now(), ins)
		}
		return nil
	})
	f.register(cmd)
	return cmd
}
