package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// cliResult is one finished CLI command.
type cliResult struct {
	args   []string
	code   int // exit status; -1 when it did not exit by itself
	stdout string
	stderr string
	took   time.Duration
	err    error // it could not be run, or was killed
}

// output is stdout and stderr together, as a user sees them.
func (r cliResult) output() string {
	return strings.TrimSpace(r.stdout + "\n" + r.stderr)
}

// cli runs ktrdr commands against one API, recording each as an operation.
type cli struct {
	bin   string
	api   string // --api for commands that talk to the service; "" for none
	token string
	self  bool // scrub KTRDR_* from the environment
	ops   *recorder
}

// run executes `ktrdr args... [--api URL]` with the CLI deadline. The
// process is killed at cliHardTimeout; anything above cliDeadline has hung.
func (c *cli) run(ctx context.Context, name string, args ...string) cliResult {
	return c.exec(ctx, name, true, args...)
}

// runDirect executes a command that takes no --api (ib probe).
func (c *cli) runDirect(ctx context.Context, name string, args ...string) cliResult {
	return c.exec(ctx, name, false, args...)
}

func (c *cli) exec(ctx context.Context, name string, withAPI bool, args ...string) cliResult {
	if withAPI && c.api != "" {
		args = append(args, "--api", c.api)
	}
	ctx, cancel := context.WithTimeout(ctx, cliHardTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = os.Environ()
	if c.self {
		cmd.Env = scrubbedEnv()
	}
	if c.token != "" {
		cmd.Env = append(cmd.Env, "KTRDR_TOKEN="+c.token)
	}
	cmd.SysProcAttr = childAttr()
	cmd.WaitDelay = 2 * time.Second // bounds output copying after a kill
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	res := cliResult{args: args, stdout: so.String(), stderr: se.String(), took: time.Since(start), code: -1}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.code = 0
	case errors.As(err, &ee) && ee.Exited():
		res.code = ee.ExitCode()
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.err = errors.New("killed by " + ws.Signal().String())
		} else {
			res.err = err
		}
	default:
		res.err = err
	}
	if ctx.Err() != nil && res.err == nil && res.code != 0 {
		res.err = ctx.Err()
	}
	// A CLI failure is an exit code the command documents (0..3); a crash,
	// a kill or another code is a failed operation.
	failed := res.err != nil || res.code < 0 || res.code > 3
	c.ops.add(op{kind: opCLI, name: name, took: res.took, deadline: cliDeadline, failed: failed, status: res.code})
	return res
}
