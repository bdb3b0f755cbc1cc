package statuspage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/ktrdr/ktrdr/ibsim"
)

// TestMain checks for leaked goroutines. The browser tests stop Chromium
// and wait for its process and for the goroutines that read its console
// before they return, so nothing of chromedp outlives a test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// browserDeadline bounds a whole browser test: start, every wait, and the
// browser's shutdown. Each wait below has a shorter deadline of its own.
const browserDeadline = 2 * time.Minute

// screenshotDirEnv names a directory to copy the screenshots into; they
// are otherwise written to the test's temporary directory and removed
// with it. Set it to look at the page as the tests saw it.
const screenshotDirEnv = "KTRDR_STATUSPAGE_SCREENSHOTS"

// browser is one headless Chromium with one tab, and what its page wrote
// to the console.
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
}

// requireChromium skips (or, in CI, fails) when the browser is missing: CI
// must run these tests, a developer machine may not have a browser.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v: install Debian's chromium", chromiumPath, err)
		}
		t.Skipf("%s: %v; install Debian's chromium to run the browser tests", chromiumPath, err)
	}
}

// newBrowser starts Chromium with a fresh profile and records every
// console message of its tab. Cleanup closes the browser and waits for
// the process and the recorder to end.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	requireChromium(t)
	deadline, cancelDeadline := context.WithTimeout(context.Background(), browserDeadline)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(deadline,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // containers and CI runners often forbid the sandbox's namespaces
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// /dev/shm is 64 MB in a default container; Chromium crashes when it fills.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	b := &browser{ctx: ctx}

	// Console subscribes at once; reading runs until the tab's context ends.
	messages := chromedp.Console(ctx)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		// A graceful close first, bounded; the cancels below stop the
		// process in any case and wait for it.
		stop, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := chromedp.Cancel(stop); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing the browser: %v", err)
		}
		cancelTab()
		cancelAlloc()
		cancelDeadline()
		<-recorded
	})
	return b
}

// errorsSince returns the console errors and exceptions recorded from index
// from on; withLog also counts the browser log's errors (failed requests,
// policy violations), which are expected while the API is down or asks for
// a token.
func (b *browser) errorsSince(from int, withLog bool) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.messages[min(from, len(b.messages)):] {
		switch {
		case m.IsException(), m.Type == chromedp.ConsoleError && m.Source == "":
			out = append(out, m.String()+" at "+m.URL+fmt.Sprintf(":%d", m.Line))
		case withLog && m.Type == chromedp.ConsoleError:
			out = append(out, m.Source+" "+m.String())
		}
	}
	return out
}

func (b *browser) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.messages)
}

// do runs actions with a deadline of their own.
func (b *browser) do(t *testing.T, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript predicate in the page until it holds.
func (b *browser) waitFor(t *testing.T, d time.Duration, what, predicate string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		state := eval[string](t, b, `document.getElementById('gateway-state').textContent + ' | score ' + document.getElementById('score').textContent + ' | ' + document.getElementById('gateway-banner').textContent + ' | ' + document.getElementById('api-banner').textContent`)
		t.Fatalf("%s: not within %s (%v); page shows: %s", what, d, err, state)
	}
}

// screenshot saves the whole page as PNG in the test's directory (and in
// $KTRDR_STATUSPAGE_SCREENSHOTS when set).
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv(screenshotDirEnv); d != "" {
		dirs = append(dirs, d)
	}
	for _, dir := range dirs {
		p := filepath.Join(dir, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
}

// phone switches the tab to a phone's viewport (390×844 CSS pixels, as an
// iPhone 12 to 14) and checks that nothing forces sideways scrolling.
func (b *browser) phone(t *testing.T) {
	t.Helper()
	b.do(t, 10*time.Second, "phone viewport",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch))
	b.waitFor(t, 5*time.Second, "page fits a phone's width",
		`document.documentElement.scrollWidth <= window.innerWidth`)
}

const scoreJS = `Number(document.getElementById('score').getAttribute('data-score'))`
const stateJS = `document.getElementById('gateway-state').getAttribute('data-state')`

// TestStatusPageFollowsTheGateway loads the page beside a real API and
// simulator: it shows the API's score with the gateway up and no console
// error; when the gateway goes silent the score drops and the page says
// the gateway is down; when the fault clears it recovers; when the API
// itself goes away the page says so.
func TestStatusPageFollowsTheGateway(t *testing.T) {
	e := newEnv(t, "")
	b := newBrowser(t)

	b.do(t, 30*time.Second, "loading the page", chromedp.Navigate(e.ts.URL+"/"))
	b.waitFor(t, 15*time.Second, "gateway shown up with a score",
		stateJS+` === 'up' && document.getElementById('score').hasAttribute('data-score')`)

	// The page shows what the API says: poll both until they agree on a
	// settled score (the page refreshes every 2 s, the API moves on its own).
	agree := time.NewTimer(15 * time.Second)
	defer agree.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		pageScore, apiScore := eval[float64](t, b, scoreJS), e.score(t)
		if pageScore == apiScore && apiScore == 100 {
			break
		}
		select {
		case <-agree.C:
			t.Fatalf("page shows score %v, API says %v", pageScore, apiScore)
		case <-tick.C:
		}
	}
	b.waitFor(t, 10*time.Second, "score history drawn", `document.querySelectorAll('#spark polyline').length === 1`)
	b.waitFor(t, 5*time.Second, "pool connection listed with its client id",
		`/^\d+$/.test((document.querySelector('#connections td.num') || {}).textContent || '')`)
	if got := eval[string](t, b, `document.getElementById('account-type').textContent`); got != "paper account" {
		t.Errorf("account shown as %q, the simulator's DU account is paper", got)
	}
	if got := eval[int](t, b, `document.querySelectorAll('#phases .phase').length`); got != 4 {
		t.Errorf("%d phases shown, want 4", got)
	}
	if errs := b.errorsSince(0, true); len(errs) > 0 {
		t.Fatalf("console errors on a healthy page:\n%s", strings.Join(errs, "\n"))
	}
	b.screenshot(t, "healthy-desktop")

	// A gateway that accepts TCP and then never answers: the failure this
	// product exists for.
	if _, err := e.sim.AddFault(&ibsim.Silent{}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, 15*time.Second, "silent gateway shown down with a lower score",
		stateJS+` === 'down' && `+scoreJS+` < 100 && document.getElementById('gateway-banner').classList.contains('show')`)
	silentScore := eval[float64](t, b, scoreJS)
	b.screenshot(t, "silent-desktop")
	b.phone(t)
	b.screenshot(t, "silent-phone")

	e.sim.ClearFaults()
	// Not back to 100: the validations that timed out stay in the p99
	// window, so phase 1 reads degraded for a while after a silent spell.
	b.waitFor(t, 20*time.Second, "recovery shown once the fault clears",
		fmt.Sprintf(`%s === 'up' && %s > %v && !document.getElementById('gateway-banner').classList.contains('show')`, stateJS, scoreJS, silentScore))
	b.screenshot(t, "healthy-phone")
	if errs := b.errorsSince(0, true); len(errs) > 0 {
		t.Fatalf("console errors while the gateway failed and recovered:\n%s", strings.Join(errs, "\n"))
	}

	// The API goes away: failed requests are logged by the browser, but
	// the page must neither throw nor call console.error, and must say it.
	mark := b.count()
	e.ts.CloseClientConnections()
	e.ts.Close()
	b.waitFor(t, 15*time.Second, "API shown unreachable",
		stateJS+` === 'api-down' && document.getElementById('api-banner').classList.contains('show')`)
	b.screenshot(t, "api-down-phone")
	if errs := b.errorsSince(mark, false); len(errs) > 0 {
		t.Fatalf("page errors while the API is down:\n%s", strings.Join(errs, "\n"))
	}
}

// TestStatusPageAsksForToken: against an API with a token the page asks
// for it, says when it is wrong, and once given the right one keeps it in
// sessionStorage, sends it and shows the live score.
func TestStatusPageAsksForToken(t *testing.T) {
	e := newEnv(t, "s3cret-token")
	b := newBrowser(t)

	b.do(t, 30*time.Second, "loading the page", chromedp.Navigate(e.ts.URL+"/"))
	b.waitFor(t, 10*time.Second, "token field shown", stateJS+` === 'unauthorized'`)
	b.do(t, 10*time.Second, "entering a wrong token",
		chromedp.WaitVisible(chromedp.ID("token-input")),
		chromedp.SendKeys(chromedp.ID("token-input"), "wrong"),
		chromedp.Click(chromedp.CSS(`#token-form button`)))
	b.waitFor(t, 10*time.Second, "wrong token reported",
		stateJS+` === 'unauthorized' && document.getElementById('token-message').textContent.includes('rejected')`)
	b.screenshot(t, "token-rejected")

	b.do(t, 10*time.Second, "entering the token",
		chromedp.SendKeys(chromedp.ID("token-input"), e.token),
		chromedp.Click(chromedp.CSS(`#token-form button`)))
	b.waitFor(t, 15*time.Second, "score shown after the token", stateJS+` === 'up' && `+scoreJS+` > 0`)
	if got := eval[string](t, b, `sessionStorage.getItem('ktrdr.token')`); got != e.token {
		t.Errorf("sessionStorage holds %q", got)
	}
	if eval[bool](t, b, `document.getElementById('token-panel').classList.contains('show')`) {
		t.Error("token field still shown after a good token")
	}
	// The 401s are the browser's network log; the page itself must be clean.
	if errs := b.errorsSince(0, false); len(errs) > 0 {
		t.Fatalf("page errors:\n%s", strings.Join(errs, "\n"))
	}
}
