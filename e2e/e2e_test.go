package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	realIB = flag.Bool("real-ib", false, "also run the standard level against a real paper gateway (-ib-host, -ib-port, or KTRDR_E2E_IB_HOST/PORT)")
	ibHost = flag.String("ib-host", "", "the real gateway's host (default KTRDR_E2E_IB_HOST, else 127.0.0.1)")
	ibPort = flag.Int("ib-port", 0, "the real gateway's port (default KTRDR_E2E_IB_PORT)")
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// toxiproxy v2.5.0's toxic stubs hand chunks to the next stage with
		// a send that has no way out: when a proxied connection closes with
		// a chunk in flight, that stub's goroutine stays parked after
		// Proxy.Stop. It belongs to the network fault proxy's internals.
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"))
}

// buildTimeout bounds building the binary under test.
const buildTimeout = 3 * time.Minute

// buildKtrdr builds cmd/ktrdr into a temporary directory: the runner drives
// the binary users run, not the package in this process.
func buildKtrdr(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ktrdr")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/ktrdr")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/ktrdr: %v\n%s", err, out)
	}
	return bin
}

// runLevel runs the runner and fails the test, with the summary, on any
// failed check or error.
func runLevel(t *testing.T, opts Options, timeout time.Duration) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if testing.Verbose() {
		opts.Progress = testWriter{t}
	}
	rep, err := Run(ctx, opts)
	if rep == nil {
		t.Fatalf("Run returned no report: %v", err)
	}
	var sum bytes.Buffer
	if werr := rep.WriteSummary(&sum); werr != nil {
		t.Fatal(werr)
	}
	if err != nil || rep.Failed() {
		t.Fatalf("run failed (err %v):\n%s", err, sum.String())
	}
	for _, c := range rep.Checks {
		if c.Status == Fail {
			t.Errorf("warning check failed: %s — %s (%s): %s", c.qualifiedName(), c.Figure, c.Threshold, c.Detail)
		}
	}
	t.Logf("\n%s", sum.String())
	return rep
}

// testWriter streams progress lines into the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestBasicAndStandard runs the standard level (basic included) against
// a simulator and a server the runner starts itself.
func TestBasicAndStandard(t *testing.T) {
	bin := buildKtrdr(t)
	rep := runLevel(t, Options{Level: Standard, Bin: bin}, 4*time.Minute)
	for _, key := range []string{critLeaks, critHung, critScore, critValidation, critAPIP99, critCLI, critRecovery, critSilent} {
		if c := criterionRow(rep, key); c.Status != Pass {
			t.Errorf("criterion %s: %s (%s)", key, c.Status, c.Figure)
		}
	}
	mustHavePassed(t, rep, Standard, "326 fallback: with id 1 held, the new connection uses 2")
	mustHavePassed(t, rep, Standard, "idle connections collected")
	mustHavePassed(t, rep, Basic, "ktrdr unreachable API: ib health")

	var md, js bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "## standard level") || !strings.Contains(md.String(), "**VERDICT: PASS — safe to deploy") {
		t.Errorf("markdown report lacks the standard section or the verdict:\n%s", md.String())
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Verdict != rep.Verdict || len(back.Checks) != len(rep.Checks) {
		t.Errorf("JSON report does not round-trip: %v", err)
	}
}

// TestExhaustive runs every level with the load and soak shortened for CI
// (the command itself never loads for less than a minute).
func TestExhaustive(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: about two minutes of load, faults and soak")
	}
	bin := buildKtrdr(t)
	rep := runLevel(t, Options{Level: Exhaustive, Bin: bin, Soak: 20 * time.Second, load: 20 * time.Second}, 7*time.Minute)
	if c := criterionRow(rep, critHeap); c.Status != Pass {
		t.Errorf("heap criterion: %s (%s)", c.Status, c.Figure)
	}
	mustHavePassed(t, rep, Exhaustive, "recovery after simulator fault silent")
	mustHavePassed(t, rep, Exhaustive, "recovery after network timeout (a silent network)")
}

// TestRunningDeployment runs the standard level against a server started
// as a deployment would be (with its embedded simulator), by URL.
func TestRunningDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a deployment and runs the standard level against it")
	}
	bin := buildKtrdr(t)
	dir := t.TempDir()
	p, addrs, err := startProc(context.Background(), "serve", bin, dir, []string{"serve", "--sim", "--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--health-interval", "1s", "--idle-timeout", "2s", "--validation-timeout", "1s",
		"--client-id-cooldown", "1s", "--max-conns", "4"},
		[]*regexp.Regexp{serveAPILine, regexp.MustCompile(`simulator gateway on (\S+),`)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.stop(); err != nil {
			t.Error(err)
		}
	}()
	host, port := splitHostPort(t, addrs[1])
	rep := runLevel(t, Options{Level: Standard, Target: addrs[0], Bin: bin, IBHost: host, IBPort: port}, 4*time.Minute)
	mustHavePassed(t, rep, Basic, "API reachable")
	mustHavePassed(t, rep, Basic, "paper account")
}

// TestRefusesLiveAccount: a gateway announcing a live account stops the
// standard level before anything runs against it.
func TestRefusesLiveAccount(t *testing.T) {
	bin := buildKtrdr(t)
	p, addrs, err := startProc(context.Background(), "sim", bin, t.TempDir(),
		[]string{"sim", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--account", "U1234567"},
		[]*regexp.Regexp{simGatewayLine})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.stop(); err != nil {
			t.Error(err)
		}
	}()
	host, port := splitHostPort(t, addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Level: Standard, Bin: bin, IBHost: host, IBPort: port})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "live") {
		t.Fatalf("Run against a live account: err %v, want ErrRefused naming the live account", err)
	}
	if rep == nil || !rep.Failed() || len(rep.Checks) != 2 {
		t.Fatalf("want a failed report with the probe and the account check, got %+v", rep)
	}
}

// TestRealGateway runs the standard level against a real paper gateway.
func TestRealGateway(t *testing.T) {
	host, port := *ibHost, *ibPort
	if host == "" {
		host = os.Getenv("KTRDR_E2E_IB_HOST")
	}
	if port == 0 {
		port, _ = strconv.Atoi(os.Getenv("KTRDR_E2E_IB_PORT"))
	}
	if !*realIB && os.Getenv("KTRDR_E2E_IB_PORT") == "" {
		t.Skip("no real gateway: pass -real-ib -ib-host H -ib-port P (or set KTRDR_E2E_IB_HOST and KTRDR_E2E_IB_PORT) to run the standard level against a paper IB Gateway")
	}
	if port == 0 {
		t.Fatal("-real-ib needs the gateway's port: -ib-port P or KTRDR_E2E_IB_PORT")
	}
	if host == "" {
		host = "127.0.0.1"
	}
	bin := buildKtrdr(t)
	runLevel(t, Options{Level: Standard, Bin: bin, IBHost: host, IBPort: port}, 6*time.Minute)
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	port, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("address %q: want host:port", addr)
	}
	return addr[:i], port
}

func criterionRow(rep *Report, key string) CriterionResult {
	for _, c := range rep.Criteria {
		if c.Key == key {
			return c
		}
	}
	return CriterionResult{Status: "missing"}
}

func mustHavePassed(t *testing.T, rep *Report, lv Level, name string) {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Level == lv && c.Name == name {
			if c.Status != Pass {
				t.Errorf("%s/%s: %s — %s", lv, name, c.Status, c.Figure)
			}
			return
		}
	}
	t.Errorf("no check %q at the %s level", name, lv)
}

// TestReportVerdict: the verdict names the failed critical checks and
// ignores warnings; criteria fold their checks' worst figure.
func TestReportVerdict(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		name    string
		checks  []Check
		verdict string
		failed  bool
		crit    map[string]string // criterion key -> status
	}{
		{
			name:    "all pass",
			checks:  []Check{{Level: Basic, Phase: "p", Name: "a", Status: Pass, Critical: true, Criterion: critRecovery, Figure: "1 s", Value: f(1), Limit: f(10)}, {Level: Basic, Phase: "p", Name: "b", Status: Pass, Critical: true, Criterion: critRecovery, Figure: "3 s", Value: f(3), Limit: f(10)}},
			verdict: "VERDICT: PASS — safe to deploy",
			crit:    map[string]string{critRecovery: Pass, critHeap: "not measured"},
		},
		{
			name:    "a warning and a skip",
			checks:  []Check{{Level: Basic, Phase: "p", Name: "w", Status: Fail}, {Level: Basic, Phase: "p", Name: "s", Status: Skip}},
			verdict: "VERDICT: PASS — safe to deploy (warnings: basic/p: w; 1 checks skipped)",
		},
		{
			name:    "a critical failure",
			checks:  []Check{{Level: Standard, Phase: "silent", Name: "caught", Status: Fail, Critical: true, Criterion: critSilent, Figure: "never"}},
			verdict: "VERDICT: FAIL — DO NOT DEPLOY: standard/silent: caught",
			failed:  true,
			crit:    map[string]string{critSilent: Fail},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := &Report{Levels: []Level{Basic, Standard}, Checks: tt.checks}
			rep.finish(time.Second)
			if rep.Verdict != tt.verdict || rep.Failed() != tt.failed {
				t.Errorf("verdict %q (failed %v), want %q (%v)", rep.Verdict, rep.Failed(), tt.verdict, tt.failed)
			}
			for k, want := range tt.crit {
				if got := criterionRow(rep, k); got.Status != want {
					t.Errorf("criterion %s: %s, want %s", k, got.Status, want)
				}
			}
		})
	}
	rep := &Report{Checks: tests[0].checks}
	rep.finish(0)
	if got := criterionRow(rep, critRecovery).Figure; got != "3 s (b)" {
		t.Errorf("recovery row shows %q, want the worst figure, 3 s (b)", got)
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]Level{"basic": Basic, "Standard": Standard, " exhaustive ": Exhaustive} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("thorough"); err == nil {
		t.Error("ParseLevel(thorough) succeeded")
	}
	if _, err := (Options{Level: Basic}).withDefaults(); !errors.Is(err, ErrRefused) {
		t.Errorf("options without a binary: %v, want ErrRefused", err)
	}
}
