// Package conformance runs a third-party TWS API client, the npm package
// @stoqey/ib, against the ktrdr gateway simulator. The checks themselves
// live in stoqey.test.mjs; this Go test builds and starts the simulator,
// runs them with node's test runner and stops the simulator again.
package conformance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	buildTimeout = 5 * time.Minute
	// startTimeout bounds the wait for both address lines on stdout.
	startTimeout = 30 * time.Second
	nodeTimeout  = 3 * time.Minute
	// stopTimeout is how long the simulator gets to exit after SIGTERM
	// before it is killed.
	stopTimeout = 10 * time.Second
	// waitDelay bounds how long Wait keeps copying output after the
	// process ended, in case a grandchild still holds the pipes.
	waitDelay = 5 * time.Second

	installHint = "@stoqey/ib is not installed: run `npm ci --prefix conformance`"
)

var (
	gatewayLine = regexp.MustCompile(`gateway listening on (\S+)`)
	controlLine = regexp.MustCompile(`control API on (\S+)`)
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestStoqeyClient drives the simulator with @stoqey/ib 1.6.10 and fails
// if any node test fails.
func TestStoqeyClient(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: builds the simulator and runs the node client suite")
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@stoqey", "ib", "package.json")); err != nil {
		skipOrFail(t, installHint)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "node is not on PATH; the conformance suite needs Node.js 20 or newer")
	}

	bin := buildSimulator(t)
	sim := startSimulator(t, bin)
	defer sim.stop(t)

	host, port, err := net.SplitHostPort(sim.gatewayAddr)
	if err != nil {
		t.Fatalf("gateway address %q: %v", sim.gatewayAddr, err)
	}
	runNodeTests(t, node, dir, []string{
		"IB_HOST=" + host,
		"IB_PORT=" + port,
		"IBSIM_CONTROL=" + sim.controlURL,
	})
}

// skipOrFail fails under CI, where a missing prerequisite is a broken
// setup, and skips elsewhere so a plain `go test ./...` stays usable.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// buildSimulator compiles the ktrdr command into a temporary directory.
func buildSimulator(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "ktrdr")
	ctx, cancel := context.WithTimeout(t.Context(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/ktrdr/ktrdr/cmd/ktrdr")
	cmd.WaitDelay = waitDelay
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building ktrdr: %v\n%s", err, out)
	}
	return bin
}

// simulator is a running `ktrdr sim` process.
type simulator struct {
	cmd         *exec.Cmd
	exited      chan struct{} // closed once Wait returned
	waitErr     error         // valid after exited is closed
	stdout      *lineWriter
	stderr      *lineWriter
	gatewayAddr string
	controlURL  string
}

// startSimulator starts `ktrdr sim` on ephemeral ports and waits until it
// has announced both addresses.
func startSimulator(t *testing.T, bin string) *simulator {
	t.Helper()
	gateway := make(chan string, 1)
	control := make(chan string, 1)
	sim := &simulator{exited: make(chan struct{})}
	sim.stdout = newLineWriter(t, "sim stdout: ", func(line string) {
		if m := gatewayLine.FindStringSubmatch(line); m != nil {
			offer(gateway, m[1])
		}
		if m := controlLine.FindStringSubmatch(line); m != nil {
			offer(control, m[1])
		}
	})
	sim.stderr = newLineWriter(t, "sim stderr: ", nil)

	sim.cmd = exec.Command(bin, "sim",
		"--listen", "127.0.0.1:0",
		"--control", "127.0.0.1:0",
		"--seed", "1",
		"--time-scale", "1",
	)
	sim.cmd.Stdout = sim.stdout
	sim.cmd.Stderr = sim.stderr
	sim.cmd.WaitDelay = waitDelay
	if err := sim.cmd.Start(); err != nil {
		t.Fatalf("starting simulator: %v", err)
	}
	go func() {
		sim.waitErr = sim.cmd.Wait()
		close(sim.exited)
	}()

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for sim.gatewayAddr == "" || sim.controlURL == "" {
		select {
		case addr := <-gateway:
			sim.gatewayAddr = addr
		case url := <-control:
			sim.controlURL = url
		case <-sim.exited:
			sim.flush()
			t.Fatalf("simulator exited before announcing its addresses: %v", sim.waitErr)
		case <-deadline.C:
			sim.stop(t)
			t.Fatalf("simulator did not announce both addresses within %v (gateway %q, control %q)",
				startTimeout, sim.gatewayAddr, sim.controlURL)
		}
	}
	t.Logf("simulator gateway %s, control %s", sim.gatewayAddr, sim.controlURL)
	return sim
}

// offer stores v unless the channel already holds a value, so a repeated
// line never blocks the output copier.
func offer(ch chan string, v string) {
	select {
	case ch <- v:
	default:
	}
}

// stop sends SIGTERM, kills the process if it does not exit in time, and
// waits until Wait has returned so no goroutine outlives the test.
func (s *simulator) stop(t *testing.T) {
	t.Helper()
	select {
	case <-s.exited:
	default:
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Logf("SIGTERM to simulator: %v", err)
		}
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-s.exited:
		case <-timer.C:
			t.Errorf("simulator did not exit within %v of SIGTERM; killing it", stopTimeout)
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	s.flush()
}

func (s *simulator) flush() {
	s.stdout.Flush()
	s.stderr.Flush()
}

// runNodeTests runs `node --test` in dir with extra environment variables,
// logging its output line by line, and fails the test on a non-zero exit.
func runNodeTests(t *testing.T, node, dir string, env []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), nodeTimeout)
	defer cancel()
	out := newLineWriter(t, "node: ", nil)
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = waitDelay
	killProcessGroupOnCancel(cmd)
	err := cmd.Run()
	out.Flush()
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		t.Fatalf("node --test did not finish within %v", nodeTimeout)
	case err != nil:
		t.Fatalf("node --test failed: %v", err)
	}
}

// lineWriter is an io.Writer that hands every complete line to t.Log and
// to an optional callback. exec copies into it from its own goroutine,
// which Wait joins, so nothing is logged after the test has returned.
type lineWriter struct {
	t      *testing.T
	prefix string
	onLine func(string)

	mu      sync.Mutex
	partial bytes.Buffer
}

var _ io.Writer = (*lineWriter)(nil)

func newLineWriter(t *testing.T, prefix string, onLine func(string)) *lineWriter {
	return &lineWriter{t: t, prefix: prefix, onLine: onLine}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial.Write(p)
	for {
		line, err := w.partial.ReadString('\n')
		if err != nil {
			// No newline yet: keep the fragment for the next write.
			w.partial.Reset()
			w.partial.WriteString(line)
			return len(p), nil
		}
		w.emit(strings.TrimRight(line, "\r\n"))
	}
}

// Flush logs a trailing line that had no newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.partial.Len() > 0 {
		w.emit(w.partial.String())
		w.partial.Reset()
	}
}

func (w *lineWriter) emit(line string) {
	if w.onLine != nil {
		w.onLine(line)
	}
	w.t.Log(w.prefix + line)
}
