package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/internal/service"
)

// commandBudget is what one CLI command may take here: well within the
// 30 s the original system promised its users for any CLI command.
const commandBudget = 10 * time.Second

// cliEnv is the environment for the binaries: the test's own, without
// settings that would change what the commands do.
func cliEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KTRDR_") && !strings.HasPrefix(kv, "NO_COLOR=") {
			env = append(env, kv)
		}
	}
	return env
}

// buildKtrdr builds this package's binary into a temporary directory.
func buildKtrdr(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the binary:", err)
	}
	bin := filepath.Join(t.TempDir(), "ktrdr")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// lockedBuffer collects a subprocess's stderr while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var apiLine = regexp.MustCompile(`^ktrdr serve: API on (http://\S+) \(gateway ([^)]+)\)`)

// startServe runs `ktrdr serve --sim` and returns its API URL and the
// gateway address it uses. The server is stopped with SIGTERM at cleanup,
// and killed if it does not stop in time.
func startServe(t *testing.T, bin string) (apiURL, gateway string) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--health-interval", "200ms")
	cmd.Env = cliEnv()
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type addrs struct{ api, gw string }
	found := make(chan addrs, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- addrs{m[1], m[2]}
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // a line too long for the scanner must not block the server
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		stopped := time.NewTimer(15 * time.Second)
		defer stopped.Stop()
		select {
		case <-scanned:
		case <-stopped.C:
			t.Errorf("ktrdr serve did not stop within 15s of SIGTERM; killing it\n%s", stderr)
			_ = cmd.Process.Kill()
			<-scanned
		}
		// Wait only after the pipe is drained, as os/exec requires.
		if err := cmd.Wait(); err != nil && !t.Failed() {
			t.Errorf("ktrdr serve exited with %v after SIGTERM\n%s", err, stderr)
		}
	})
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	select {
	case a := <-found:
		return a.api, a.gw
	case <-scanned:
		t.Fatalf("ktrdr serve exited before announcing its API\n%s", stderr)
	case <-deadline.C:
		t.Fatalf("ktrdr serve did not announce its API within 20s\n%s", stderr)
	}
	return "", ""
}

// cliResult is one run of the binary.
type cliResult struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// runBinary runs the binary with a deadline beyond which the test fails
// rather than hangs.
func runBinary(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cliEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("ktrdr %s: %v (after %s)", strings.Join(args, " "), err, r.elapsed)
	}
	if r.elapsed > commandBudget {
		t.Errorf("ktrdr %s took %s, more than %s", strings.Join(args, " "), r.elapsed, commandBudget)
	}
	return r
}

// The list answers' shapes, as the API sends them.
type (
	breakerList struct {
		Breakers []service.BreakerInfo `json:"circuit_breakers"`
	}
	symbolList struct {
		Symbols []service.Instrument `json:"symbols"`
	}
)

func TestCLIAgainstServe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs ktrdr serve")
	}
	bin := buildKtrdr(t)
	api, gateway := startServe(t, bin)
	ktrdr := func(args ...string) cliResult {
		t.Helper()
		return runBinary(t, bin, append(args, "--api", api)...)
	}

	// The pool connects in the background: wait for the first healthy check.
	var r cliResult
	for deadline := time.Now().Add(15 * time.Second); ; {
		if r = ktrdr("ib", "health"); r.code == exitOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.code != exitOK || !regexp.MustCompile(`(?m)^healthy\s+yes$`).MatchString(r.stdout) {
		t.Fatalf("ib health: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Each command in table mode: exit code and a line that must be there.
	tables := []struct {
		args []string
		code int
		want string // stdout pattern
	}{
		{[]string{"ib", "status"}, exitOK, `(?m)^gateway\s+` + regexp.QuoteMeta(gateway) + ` \(server version \d+\)$`},
		{[]string{"ib", "status"}, exitOK, `(?m)^accounts\s+DU\S+ \(paper\)$`},
		{[]string{"ib", "resilience"}, exitOK, `(?m)^4 live validation\s+working`},
		{[]string{"ib", "resilience"}, exitOK, `(?m)^score\s+\d+\.\d/100$`},
		{[]string{"ib", "resilience", "--min-score", "101"}, exitFailed, `(?m)^score\s+`},
		{[]string{"ib", "config"}, exitOK, `(?m)^port\s+` + gateway[strings.LastIndex(gateway, ":")+1:] + `$`},
		{[]string{"ib", "config", "get"}, exitOK, `(?m)^client id base\s+1$`},
		{[]string{"ib", "circuit-breakers"}, exitOK, `(?m)^gateway-connect\s+closed\s+0/3`},
		{[]string{"symbols", "discover", "EURUSD"}, exitOK, `(?m)^type\s+forex \(CASH\)$`},
		{[]string{"symbols", "discover", "EURUSD"}, exitOK, `(?m)^cached\s+yes`},
		{[]string{"symbols", "discover", "AAPL", "--force-refresh"}, exitOK, `(?m)^cached\s+no`},
		{[]string{"symbols", "discover", "ZZZZZZ"}, exitFailed, `^$`},
		{[]string{"symbols", "list"}, exitOK, `(?m)^EURUSD\s+forex\s+IDEALPRO\s+USD\s+12087792\s`},
		{[]string{"ib", "cleanup"}, exitOK, `(?m)^closed\s+\d+: idle connections only$`},
		{[]string{"ib", "config", "set", "--port", "70000"}, exitUsage, `^$`},
		{[]string{"ib", "config", "set", "--host", "bad host"}, exitUsage, `^$`},
	}
	for _, tt := range tables {
		r := ktrdr(tt.args...)
		if r.code != tt.code || !regexp.MustCompile(tt.want).MatchString(r.stdout) {
			t.Errorf("ktrdr %s: exit %d (want %d), stdout does not match %q:\n%s%s",
				strings.Join(tt.args, " "), r.code, tt.code, tt.want, r.stdout, r.stderr)
		}
		if tt.code != exitOK && strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("ktrdr %s: want one line on stderr, got %q", strings.Join(tt.args, " "), r.stderr)
		}
	}
	if r := ktrdr("ib", "resilience", "--min-score", "101"); !strings.Contains(r.stderr, "is below --min-score 101") {
		t.Errorf("resilience below the minimum: stderr %q", r.stderr)
	}
	if r := ktrdr("ib", "config", "set", "--host", "bad host"); !strings.Contains(r.stderr, "(INVALID_HOST, HTTP 400)") {
		t.Errorf("the server's 400: stderr %q", r.stderr)
	}

	// Each command in json mode: the data, decodable into the API's types.
	jsons := []struct {
		args  []string
		into  any
		check func(v any) bool
	}{
		{[]string{"ib", "health"}, &service.Health{}, func(v any) bool { return v.(*service.Health).Healthy }},
		{[]string{"ib", "status"}, &service.Status{}, func(v any) bool { return v.(*service.Status).Gateway.AccountType == "paper" }},
		{[]string{"ib", "resilience"}, &map[string]any{}, func(v any) bool {
			m := *v.(*map[string]any)
			return m["phase_1_systematic_validation"] != nil && m["overall_resilience_score"] != nil
		}},
		{[]string{"ib", "config"}, &service.GatewayConfig{}, func(v any) bool { return v.(*service.GatewayConfig).Port > 0 }},
		{[]string{"ib", "circuit-breakers"}, &breakerList{}, func(v any) bool { return len(v.(*breakerList).Breakers) == 1 }},
		{[]string{"symbols", "discover", "EURUSD"}, &service.Instrument{}, func(v any) bool {
			in := v.(*service.Instrument)
			return in.Type == "forex" && in.Exchange == "IDEALPRO" && in.ConID != 0 && in.HeadTimestamp != nil
		}},
		{[]string{"symbols", "list"}, &symbolList{}, func(v any) bool { return len(v.(*symbolList).Symbols) >= 2 }},
		{[]string{"ib", "cleanup", "--force"}, &service.CleanupResult{}, func(v any) bool { return v.(*service.CleanupResult).Force }},
		{[]string{"ib", "config", "set", "--client-id-base", "7"}, &service.ConfigChange{}, func(v any) bool {
			c := v.(*service.ConfigChange)
			return c.Changed && c.Reconnected && c.Current.ClientIDBase == 7
		}},
	}
	for _, tt := range jsons {
		r := ktrdr(append(tt.args, "-o", "json")...)
		if r.code != exitOK {
			t.Errorf("ktrdr %s -o json: exit %d\n%s%s", strings.Join(tt.args, " "), r.code, r.stdout, r.stderr)
			continue
		}
		if err := json.Unmarshal([]byte(r.stdout), tt.into); err != nil || !tt.check(tt.into) {
			t.Errorf("ktrdr %s -o json: %v\n%s", strings.Join(tt.args, " "), err, r.stdout)
		}
	}

	// A failure in json mode prints the whole envelope.
	r = ktrdr("symbols", "discover", "ZZZZZZ", "-o", "json")
	var env struct {
		Success bool
		Error   struct{ Code string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &env); err != nil || r.code != exitFailed || env.Success || env.Error.Code != "SYMBOL_NOT_FOUND" {
		t.Errorf("discover ZZZZZZ -o json: exit %d, %v\n%s", r.code, err, r.stdout)
	}

	// After a forced cleanup and a new client id base, the pool reconnects.
	if r := ktrdr("ib", "health"); r.code != exitOK {
		t.Errorf("ib health after cleanup and reconfiguration: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := ktrdr("ib", "status"); !regexp.MustCompile(`(?m)^client ids\s+in use 7\b`).MatchString(r.stdout) {
		t.Errorf("status after --client-id-base 7:\n%s", r.stdout)
	}

	// Nothing listens on port 1: exit 3 at once, with the one line.
	r = runBinary(t, bin, "ib", "health", "--api", "http://127.0.0.1:1")
	if r.code != exitUnreached || r.elapsed > time.Second ||
		r.stderr != "ktrdr: cannot reach the ktrdr API at http://127.0.0.1:1 (connection refused): is `ktrdr serve` running?\n" {
		t.Errorf("unreachable API: exit %d after %s, stderr %q", r.code, r.elapsed, r.stderr)
	}
}
