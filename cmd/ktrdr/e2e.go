package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ktrdr/ktrdr/e2e"
)

func newE2ECmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		level, target, ibHost, report, bin string
		ibPort                             int
		verbose                            bool
		soak                               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "End-to-end resilience run: every endpoint, command and fault, with each success criterion measured",
		Long: "Runs the end-to-end resilience scenarios and prints each success criterion with its measured\n" +
			"figure beside its threshold, then a verdict line.\n\n" +
			"Levels (each includes the ones before it):\n" +
			"  basic       no gateway needed: every endpoint and command answers in time with the right\n" +
			"              code and a clear message; no goroutine or descriptor leak after a burst\n" +
			"  standard    with a gateway: validation before handoff (a silent gateway), idle collection,\n" +
			"              client-id preference and the 326 fallback, health, status, resilience score,\n" +
			"              symbol discovery\n" +
			"  exhaustive  50 concurrent API and CLI operations for 60 s, every simulator and network fault\n" +
			"              under that load with the recovery after each, and a soak (--soak) sampling the\n" +
			"              heap, goroutines and descriptors\n\n" +
			"With --target self (the default) it starts `ktrdr sim` and `ktrdr serve` itself on free loopback\n" +
			"ports, or points the server at a real paper gateway given by --ib-host/--ib-port. With\n" +
			"--target URL it runs against a running deployment after checking its prerequisites; the\n" +
			"standard and exhaustive levels refuse a live (non-DU) account.\n\n" +
			"Exit status: 0 every critical check passed, 1 a critical check failed, 2 usage or refused\n" +
			"(a live account), 3 the target or its gateway could not be reached.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lv, err := e2e.ParseLevel(level)
			if err != nil {
				return usageError("--level: %v", err)
			}
			format := strings.ToLower(filepath.Ext(report))
			if report != "" && format != ".md" && format != ".json" {
				return usageError("--report %q: want a .md or .json file", report)
			}
			if soak <= 0 {
				return usageError("--soak %s: must be positive", soak)
			}
			if target != e2e.SelfTarget {
				u, err := url.Parse(target)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return usageError("--target %q: want self or a URL such as http://127.0.0.1:8000", target)
				}
			}
			fs := cmd.Flags()
			if !fs.Changed("ib-port") && !fs.Changed("ib-host") {
				ibPort = 0 // no real gateway: the self target simulates one
			}
			if fs.Changed("ib-port") && (ibPort < 1 || ibPort > 65535) {
				return usageError("--ib-port %d: want 1..65535", ibPort)
			}
			if bin == "" {
				if bin, err = os.Executable(); err != nil {
					return usageError("cannot find this program's binary (%v): pass --bin", err)
				}
			}
			opts := e2e.Options{Level: lv, Target: target, IBHost: ibHost, IBPort: ibPort, Bin: bin,
				Token: os.Getenv("KTRDR_TOKEN"), Soak: soak}
			if verbose {
				opts.Progress = stderr
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, runErr := e2e.Run(ctx, opts)
			if rep != nil {
				fmt.Fprintln(stdout)
				if err := rep.WriteSummary(stdout); err != nil {
					return &exitError{code: exitFailed, err: err}
				}
				if report != "" {
					if err := writeReport(rep, report, format); err != nil {
						return &exitError{code: exitFailed, err: err}
					}
					fmt.Fprintf(stdout, "report written to %s\n", report)
				}
			}
			switch {
			case errors.Is(runErr, e2e.ErrRefused):
				return &exitError{code: exitUsage, err: runErr}
			case errors.Is(runErr, e2e.ErrUnreachable):
				return &exitError{code: exitUnreached, err: runErr}
			case runErr != nil:
				return &exitError{code: exitFailed, err: runErr}
			case rep.Failed():
				return &exitError{code: exitFailed, err: errSilentFailure} // the verdict line says why
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&level, "level", "standard", "basic, standard or exhaustive")
	f.StringVar(&target, "target", e2e.SelfTarget, "self (start a simulator and a server) or the URL of a running ktrdr serve")
	f.StringVar(&ibHost, "ib-host", "127.0.0.1", "a real paper gateway's host (with --ib-port)")
	f.IntVar(&ibPort, "ib-port", 4002, "a real paper gateway's port; without --ib-host/--ib-port the self target uses the simulator")
	f.StringVar(&report, "report", "", "write the full report to FILE.md (Markdown) or FILE.json")
	f.BoolVar(&verbose, "verbose", false, "stream progress and every check to stderr as the run goes")
	f.DurationVar(&soak, "soak", e2e.DefaultSoak, "the exhaustive level's soak")
	f.StringVar(&bin, "bin", "", "the ktrdr binary to run and test (default: this one)")
	return cmd
}

// writeReport writes the report atomically: a reader never sees half a file.
func writeReport(rep *e2e.Report, path, format string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if format == ".json" {
		err = rep.WriteJSON(f)
	} else {
		err = rep.WriteMarkdown(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
