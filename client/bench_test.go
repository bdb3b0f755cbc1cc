package client_test

// Benchmarks of the client against the gateway simulator. They never run
// under a plain `go test`; run them with, for example,
//
//	go test ./client -run '^$' -bench . -benchtime=1s
//
// which takes about a minute. What each figure means:
//
//   - BenchmarkCurrentTimeRoundTrip: one real reqCurrentTime round trip
//     through the whole client (caller, writer goroutine, socket, the
//     simulator's decode and answer, reader goroutine, caller). rtt_us is the
//     median of ServerTime.RTT (request queued to answer decoded); call_us is
//     the median as the caller sees it; ns/op is the mean as the caller sees it.
//   - BenchmarkRawLoopbackEcho: the floor under that figure, a small payload
//     written to and echoed back by a goroutine over 127.0.0.1 TCP, with no
//     protocol at all. rtt_us is its median, measured the same way.
//   - BenchmarkHistoricalThroughput: bars per second delivered to the caller
//     by HistoricalData, simulator to caller, one connection, requests one
//     after another; allocs/bar and B/bar are the process's allocations per
//     bar. With sim=process the simulator is a separate process, so those
//     are the client's own; with sim=inprocess they include the simulator's.
//   - BenchmarkHistoricalThroughputStoqey: the same request, simulator and
//     iteration count driven by @stoqey/ib (conformance/bench-historical.mjs)
//     and by this client in the same run; ratio is ours over the peer's.
//   - BenchmarkDetectSilentConnect / BenchmarkDetectSilentRequest: how long
//     the client takes to give up on a gateway that never answers, and by
//     how much it overshoots the deadline it was given (overshoot_ms).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/ibsim"
	"github.com/ktrdr/ktrdr/tws"
)

// benchHistory is the request every throughput benchmark makes, and
// conformance/bench-historical.mjs makes the same one: EUR.USD MIDPOINT,
// one day of one-minute bars ending on a Wednesday evening (UTC). Keep the
// two in step. One-minute bars are not subject to historical pacing.
var benchHistory = client.HistoricalRequest{
	Contract:   tws.Contract{Symbol: "EUR", SecType: "CASH", Exchange: "IDEALPRO", Currency: "USD"},
	End:        time.Date(2025, 3, 12, 21, 0, 0, 0, time.UTC),
	Duration:   "1 D",
	BarSize:    "1 min",
	WhatToShow: "MIDPOINT",
	FormatDate: 2,
}

// benchHistoryBars is what benchHistory returns: the FX session from 17:15
// to 17:00 New York time, 1425 one-minute bars.
const benchHistoryBars = 1425

// benchMaxRate lifts the client's own 45 messages/s pacing for the
// throughput benchmarks: at a few milliseconds per request the pacing, not
// the data path, would set the figure. The peer's 40 requests/s limit is
// lifted the same way in bench-historical.mjs. The simulator runs with time
// scale 1000, so its 50 messages/s rule allows 50 per millisecond.
const benchMaxRate = 100_000

const benchTimeScale = 1000

func benchSim(b *testing.B, cfg ibsim.Config) *ibsim.Server {
	b.Helper()
	srv, err := ibsim.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return srv
}

func benchDial(b *testing.B, cfg client.Config) *client.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// median returns the middle of d (sorted in place).
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ctConns is how many connections BenchmarkCurrentTimeRoundTrip rotates
// through, and ctSpacing how long each rests between two uses: the client
// answers a reqCurrentTime from its last answer when that is younger than
// one second, so every measured call must be the connection's first in
// more than a second to be a real round trip.
const (
	ctConns   = 20
	ctSpacing = 1100 * time.Millisecond
)

// BenchmarkCurrentTimeRoundTrip measures real reqCurrentTime round trips
// against the in-process simulator over loopback TCP. Only the round trips
// are measured: the waits that keep each connection's requests more than a
// second apart are excluded from ns/op, which is the mean caller-observed
// round trip. Compare rtt_us with BenchmarkRawLoopbackEcho's rtt_us: the
// difference is what the protocol, both sides' goroutine hand-offs and the
// simulator cost on top of the kernel's loopback.
func BenchmarkCurrentTimeRoundTrip(b *testing.B) {
	srv := benchSim(b, ibsim.Config{Seed: 1, TimeScale: 1})
	conns := make([]*client.Conn, ctConns)
	for i := range conns {
		conns[i] = benchDial(b, client.Config{Addr: srv.Addr(), ClientID: 1 + i})
		defer conns[i].Close()
	}
	lastUse := make([]time.Time, ctConns)
	var rtts, calls []time.Duration
	var spent time.Duration
	i := 0
	for b.Loop() {
		k := i % ctConns
		i++
		if wait := time.Until(lastUse[k].Add(ctSpacing)); wait > 0 {
			time.Sleep(wait)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		st, err := conns[k].CurrentTime(ctx)
		took := time.Since(start)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if st.Sent.Before(start) {
			b.Fatalf("connection %d answered from its last round trip: spacing too short", k+1)
		}
		lastUse[k] = st.Received
		spent += took
		rtts = append(rtts, st.RTT)
		calls = append(calls, took)
	}
	b.ReportMetric(float64(spent.Nanoseconds())/float64(len(calls)), "ns/op")
	b.ReportMetric(micros(median(rtts)), "rtt_us")
	b.ReportMetric(micros(median(calls)), "call_us")
}

// BenchmarkRawLoopbackEcho is the floor under BenchmarkCurrentTimeRoundTrip:
// 16 bytes (between the 9-byte reqCurrentTime frame and its 20-byte answer)
// written to a 127.0.0.1 TCP socket and read back from an echoing goroutine
// in the same process, as the in-process simulator is. ns/op is the mean
// round trip; rtt_us the median, timed as the client benchmark times them.
func BenchmarkRawLoopbackEcho(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	defer func() { <-echoed }()
	defer ln.Close()

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// One deadline for the whole run: long enough for any -benchtime, short
	// enough that a broken echo fails instead of hanging.
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	out := []byte("0123456789abcdef")
	in := make([]byte, len(out))
	var rtts []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
	}
	b.ReportMetric(micros(median(rtts)), "rtt_us")
}

// BenchmarkHistoricalThroughput measures bars per second delivered by
// HistoricalData from the simulator to the caller, one connection, one
// request after another. sim=process is the figure to quote: the simulator
// runs as `ktrdr sim` in its own process, so allocs/bar and B/bar count the
// client (and this benchmark) only. sim=inprocess shares the process with
// the simulator, whose allocations then count too.
func BenchmarkHistoricalThroughput(b *testing.B) {
	b.Run("sim=process", func(b *testing.B) {
		sim := startSimProcess(b, ktrdrBinary(b))
		c := benchDial(b, client.Config{Addr: sim.addr, ClientID: 1, MaxRate: benchMaxRate})
		defer c.Close()
		historyLoop(b, c)
	})
	b.Run("sim=inprocess", func(b *testing.B) {
		srv := benchSim(b, ibsim.Config{Seed: 1, TimeScale: benchTimeScale})
		c := benchDial(b, client.Config{Addr: srv.Addr(), ClientID: 1, MaxRate: benchMaxRate})
		defer c.Close()
		historyLoop(b, c)
	})
}

// historyLoop makes benchHistory once to warm up, then once per b.Loop
// iteration, and reports bars/s, allocs/bar and B/bar of the timed part.
func historyLoop(b *testing.B, c *client.Conn) {
	historyOnce(b, c)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	bars := 0
	for b.Loop() {
		bars += historyOnce(b, c)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(bars)/elapsed.Seconds(), "bars/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(bars), "allocs/bar")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(bars), "B/bar")
}

// historyOnce makes benchHistory and checks that it returned every bar.
func historyOnce(b *testing.B, c *client.Conn) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.HistoricalData(ctx, benchHistory)
	if err != nil {
		b.Fatal(err)
	}
	if len(h.Bars) != benchHistoryBars {
		b.Fatalf("got %d bars, want %d", len(h.Bars), benchHistoryBars)
	}
	return len(h.Bars)
}

// BenchmarkHistoricalThroughputStoqey runs conformance/bench-historical.mjs
// (@stoqey/ib) and then this client against the same out-of-process
// simulator, each making benchHistory b.N times in sequence on one
// connection after one untimed warm-up request. peer_bars/s and bars/s are
// each side's own count of bars over its own clock, from its first timed
// request to its last answer (connect and process start excluded); ratio
// is bars/s over peer_bars/s. ns/op is the wall time of both runs, node's
// start-up included, and means little.
func BenchmarkHistoricalThroughputStoqey(b *testing.B) {
	node, dir, reason := peerSetup()
	if reason != "" {
		b.Skip(reason)
	}
	sim := startSimProcess(b, ktrdrBinary(b))
	clientID := 100
	b.Run("sim=process", func(b *testing.B) {
		clientID += 2
		peer := runPeer(b, node, dir, sim.addr, b.N, clientID)
		if want := b.N * benchHistoryBars; peer.Bars != want {
			b.Fatalf("peer got %d bars, want %d", peer.Bars, want)
		}

		c := benchDial(b, client.Config{Addr: sim.addr, ClientID: clientID + 1, MaxRate: benchMaxRate})
		defer c.Close()
		historyOnce(b, c)
		start := time.Now()
		bars := 0
		for range b.N {
			bars += historyOnce(b, c)
		}
		ours := float64(bars) / time.Since(start).Seconds()

		b.ReportMetric(ours, "bars/s")
		b.ReportMetric(peer.BarsPerS, "peer_bars/s")
		b.ReportMetric(ours/peer.BarsPerS, "ratio")
	})
}

// peerSetup finds node and the conformance package with @stoqey/ib
// installed, or says why the peer cannot run.
func peerSetup() (node, dir, reason string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "", "node is not on PATH: the peer benchmark needs Node.js 20 or newer"
	}
	dir, err = filepath.Abs(filepath.Join("..", "conformance"))
	if err != nil {
		return "", "", err.Error()
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@stoqey", "ib", "package.json")); err != nil {
		return "", "", "@stoqey/ib is not installed: run `npm ci --prefix conformance`"
	}
	return node, dir, ""
}

// peerResult is the JSON line bench-historical.mjs prints.
type peerResult struct {
	Bars     int     `json:"bars"`
	Seconds  float64 `json:"seconds"`
	BarsPerS float64 `json:"bars_per_s"`
}

func runPeer(b *testing.B, node, dir, addr string, n, clientID int) peerResult {
	b.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "bench-historical.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "IB_HOST="+host, "IB_PORT="+port,
		"N="+strconv.Itoa(n), "CLIENT_ID="+strconv.Itoa(clientID))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		b.Fatalf("bench-historical.mjs: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res peerResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.BarsPerS <= 0 {
		b.Fatalf("bench-historical.mjs printed %q: %v", stdout.String(), err)
	}
	return res
}

// ktrdrBinary is $KTRDR_BIN, or the ktrdr command built into a temporary
// directory.
func ktrdrBinary(b *testing.B) string {
	b.Helper()
	if bin := os.Getenv("KTRDR_BIN"); bin != "" {
		return bin
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		b.Fatalf("KTRDR_BIN is not set and the go tool is not on PATH: %v", err)
	}
	bin := filepath.Join(b.TempDir(), "ktrdr")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/ktrdr")
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building ktrdr: %v\n%s", err, out)
	}
	return bin
}

// simProcess is a running `ktrdr sim`.
type simProcess struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	stderr *tailBuffer
}

var gatewayListening = regexp.MustCompile(`gateway listening on (\S+)`)

// startSimProcess starts `ktrdr sim` on ephemeral ports with time scale
// 1000, waits for its gateway address and stops it when b ends.
func startSimProcess(b *testing.B, bin string) *simProcess {
	b.Helper()
	found := make(chan string, 1)
	p := &simProcess{exited: make(chan struct{}), stderr: &tailBuffer{max: 16 << 10}}
	p.cmd = exec.Command(bin, "sim", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
		"--time-scale", strconv.Itoa(benchTimeScale))
	p.cmd.Stdout = &lineMatcher{re: gatewayListening, found: found}
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("starting ktrdr sim: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	b.Cleanup(p.stop)
	select {
	case p.addr = <-found:
	case <-p.exited:
		b.Fatalf("ktrdr sim exited before announcing its address: %s", p.stderr)
	case <-time.After(30 * time.Second):
		b.Fatalf("ktrdr sim did not announce its address within 30s: %s", p.stderr)
	}
	return p
}

// stop sends SIGTERM, kills the process if it has not exited within five
// seconds, and waits for it.
func (p *simProcess) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// lineMatcher is a stdout sink that offers the first submatch of re once.
type lineMatcher struct {
	re    *regexp.Regexp
	found chan string

	mu   sync.Mutex
	line []byte
	done bool
}

func (w *lineMatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		if m := w.re.FindSubmatch(w.line[:i]); m != nil {
			w.found <- string(m[1])
			w.done, w.line = true, nil
			break
		}
		w.line = w.line[i+1:]
	}
	return len(p), nil
}

// tailBuffer keeps the last max bytes written, for error messages.
type tailBuffer struct {
	max int

	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// detectDeadline is the deadline both detection benchmarks give the client.
const detectDeadline = 500 * time.Millisecond

// BenchmarkDetectSilentConnect measures how long Dial, with ConnectTimeout
// 500ms, takes to return its ConnectError from a gateway that accepts TCP
// and never answers the handshake. ms/op is the mean time to that error;
// overshoot_ms is the mean of that time minus the 500ms deadline, and
// overshoot_max_ms the worst.
func BenchmarkDetectSilentConnect(b *testing.B) {
	srv := benchSim(b, ibsim.Config{Seed: 1, TimeScale: 1})
	if _, err := srv.AddFault(&ibsim.SilentHandshake{}); err != nil {
		b.Fatal(err)
	}
	var total, worst time.Duration
	n := 0
	for b.Loop() {
		n++
		start := time.Now()
		c, err := client.Dial(context.Background(), client.Config{Addr: srv.Addr(), ClientID: n, ConnectTimeout: detectDeadline})
		took := time.Since(start)
		var ce *client.ConnectError
		if !errors.As(err, &ce) || ce.Stage != client.StageHandshake {
			if c != nil {
				c.Close()
			}
			b.Fatalf("want a handshake ConnectError, got %v", err)
		}
		total += took
		worst = max(worst, took)
	}
	b.ReportMetric(millis(total)/float64(n), "ms/op")
	b.ReportMetric(millis(total)/float64(n)-millis(detectDeadline), "overshoot_ms")
	b.ReportMetric(millis(worst-detectDeadline), "overshoot_max_ms")
}

// BenchmarkDetectSilentRequest measures how long CurrentTime, under a
// 500ms context, takes to return its TimeoutError once the gateway goes
// silent on an established connection. Each iteration dials a fresh
// connection and only then turns the fault on, so every request is really
// sent; the dial is not timed. overshoot_ms is the mean time to the error
// minus the 500ms deadline, overshoot_max_ms the worst.
func BenchmarkDetectSilentRequest(b *testing.B) {
	srv := benchSim(b, ibsim.Config{Seed: 1, TimeScale: 1})
	var total, worst time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		n++
		c := benchDial(b, client.Config{Addr: srv.Addr(), ClientID: n})
		id, err := srv.AddFault(&ibsim.Silent{})
		if err != nil {
			c.Close()
			b.Fatal(err)
		}
		b.StartTimer()

		ctx, cancel := context.WithTimeout(context.Background(), detectDeadline)
		start := time.Now()
		_, err = c.CurrentTime(ctx)
		took := time.Since(start)
		cancel()

		b.StopTimer()
		c.Close()
		if rerr := srv.RemoveFault(id); rerr != nil {
			b.Fatal(rerr)
		}
		var te *client.TimeoutError
		if !errors.As(err, &te) {
			b.Fatalf("want a TimeoutError, got %v", err)
		}
		total += took
		worst = max(worst, took)
		b.StartTimer()
	}
	b.ReportMetric(millis(total)/float64(n)-millis(detectDeadline), "overshoot_ms")
	b.ReportMetric(millis(worst-detectDeadline), "overshoot_max_ms")
}
