// Command ktrdr is the connection layer between trading code and Interactive
// Brokers: a TWS API client, a resilient connection pool, a service with an
// HTTP API, and an IB Gateway simulator to prove them against.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes shared by every subcommand.
const (
	exitOK        = 0
	exitFailed    = 1 // the check or operation failed
	exitUsage     = 2 // bad flags or arguments
	exitUnreached = 3 // the API or gateway could not be reached
)

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	if !errors.Is(err, errSilentFailure) {
		fmt.Fprintln(stderr, "ktrdr:", err)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// cobra's own errors are flag and argument problems.
	return exitUsage
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "ktrdr",
		Short:         "A connection layer to Interactive Brokers that never hangs and tells the truth about its health",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(newSimCmd(stdout, stderr), newIBCmd(stdout), newServeCmd(stdout, stderr))
	root.AddCommand(newSymbolsCmd(stdout))
	root.AddCommand(newDataCmd(stdout))
	root.AddCommand(newE2ECmd(stdout, stderr))
	return root
}
