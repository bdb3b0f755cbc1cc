// Package prometheus_test checks the Prometheus files shipped in
// deploy/prometheus: the alert rules load, their unit tests pass, the
// example configuration parses, and every alert links to a runbook section
// that exists.
package prometheus_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// promtoolTimeout bounds one promtool run. The rule tests take well under
// a second; the margin is for a loaded CI machine.
const promtoolTimeout = 60 * time.Second

// runbookBase is where the alerts' runbook_url annotations point: the
// runbook in this repository, as the operator reads it in a browser.
const runbookBase = "https://github.com/ktrdr/ktrdr/blob/main/docs/runbook.md#"

// promtool finds the promtool binary. CI must have it, because without it
// the alert rules would ship untested; a developer machine may skip.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (%v): install Debian's prometheus package", err)
		}
		t.Skipf("promtool not found (%v); install Debian's prometheus package to run this test", err)
	}
	return p
}

// runPromtool runs promtool in this directory (the files refer to each
// other by relative path) and fails the test with its output on error.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := promtool(t)
	ctx, cancel := context.WithTimeout(t.Context(), promtoolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	// Do not let a child that keeps the pipes open outlive the deadline.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("promtool %s did not finish within %s:\n%s", strings.Join(args, " "), promtoolTimeout, out.String())
	}
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestAlertRulesAreValid(t *testing.T) {
	t.Parallel()
	out := runPromtool(t, "check", "rules", "alerts.yml")
	t.Log(strings.TrimSpace(out))
}

func TestAlertRulesUnitTests(t *testing.T) {
	t.Parallel()
	out := runPromtool(t, "test", "rules", "alerts_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool reported no success:\n%s", out)
	}
}

// TestExampleConfigParses checks syntax only: the configuration names a
// token file that exists on the Prometheus host, not here.
func TestExampleConfigParses(t *testing.T) {
	t.Parallel()
	runPromtool(t, "check", "config", "--syntax-only", "prometheus.yml")
}

var (
	alertLine   = regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)\s*$`)
	testedLine  = regexp.MustCompile(`(?m)^\s*alertname:\s*(\S+)\s*$`)
	headingLine = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
)

// alertBlocks splits alerts.yml into one text block per alert rule.
func alertBlocks(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	locs := alertLine.FindAllStringSubmatchIndex(text, -1)
	if len(locs) == 0 {
		t.Fatal("alerts.yml holds no alert rules")
	}
	blocks := map[string]string{}
	for i, loc := range locs {
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		blocks[text[loc[2]:loc[3]]] = text[loc[0]:end]
	}
	return blocks
}

// githubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// spaces to hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestAlertsAreDocumentedAndTested needs no promtool: each alert carries
// a severity, a summary, a description and a runbook_url whose anchor is a
// heading of docs/runbook.md, and alerts_test.yml exercises it.
func TestAlertsAreDocumentedAndTested(t *testing.T) {
	t.Parallel()
	runbook, err := os.ReadFile(filepath.Join("..", "..", "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range headingLine.FindAllStringSubmatch(string(runbook), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	tests, err := os.ReadFile("alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, m := range testedLine.FindAllStringSubmatch(string(tests), -1) {
		tested[m[1]] = true
	}
	for name, block := range alertBlocks(t) {
		for _, field := range []string{"severity:", "summary:", "description:", "runbook_url:"} {
			if !strings.Contains(block, field) {
				t.Errorf("%s has no %s", name, strings.TrimSuffix(field, ":"))
			}
		}
		want := runbookBase + strings.ToLower(name)
		if !strings.Contains(block, `runbook_url: "`+want+`"`) {
			t.Errorf("%s: runbook_url is not %s", name, want)
		}
		if !anchors[strings.ToLower(name)] {
			t.Errorf("%s: docs/runbook.md has no heading %q", name, name)
		}
		if !tested[name] {
			t.Errorf("%s: alerts_test.yml does not test it", name)
		}
	}
}
