package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// childEnv, when set, makes the test binary act as the loader that
// TestKilledLoadLosesNoCommittedBar kills.
const childEnv = "KTRDR_STORE_TEST_CHILD_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChildLoader(path))
	}
	goleak.VerifyTestMain(m)
}

var base = time.Date(2024, 3, 4, 14, 30, 0, 0, time.UTC)

// mkBars returns n one-minute bars from start whose values derive from the
// bar time, so any reader can check a bar without knowing who wrote it.
func mkBars(start time.Time, n int) []Bar {
	bars := make([]Bar, n)
	for i := range bars {
		bars[i] = barAt(start.Add(time.Duration(i) * time.Minute))
	}
	return bars
}

func barAt(t time.Time) Bar {
	x := float64(t.Unix()%100000) / 100
	return Bar{Time: t, Open: x, High: x + 2, Low: x - 1, Close: x + 1, Volume: x * 10, WAP: x + 0.5, Count: int(x)}
}

func open(t testing.TB) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bars.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func mustUpsert(t testing.TB, s Store, sym, tf string, bars []Bar) int {
	t.Helper()
	n, err := s.Upsert(context.Background(), sym, tf, bars)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUpsertIsIdempotentAndUpdates(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	bars := mkBars(base, 3)
	if n := mustUpsert(t, s, "AAPL", "1m", bars); n != 3 {
		t.Fatalf("first upsert wrote %d", n)
	}
	if n := mustUpsert(t, s, "AAPL", "1m", bars); n != 0 {
		t.Fatalf("identical upsert changed %d", n)
	}
	changed := bars[1]
	changed.Close, changed.Count = changed.Close+0.25, 7
	if n := mustUpsert(t, s, "AAPL", "1m", append(mkBars(base.Add(3*time.Minute), 1), changed)); n != 2 {
		t.Fatalf("one new, one changed: %d", n)
	}
	got, err := s.Bars(ctx, "AAPL", "1m", time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[1] != changed || got[0] != bars[0] {
		t.Fatalf("got %+v", got)
	}
	if _, _, n, _ := s.Range(ctx, "AAPL", "1m"); n != 4 {
		t.Fatalf("count %d", n)
	}

	// A batch larger than one statement, repeating a bar time: the later
	// bar wins and no duplicate is stored.
	big := mkBars(base.Add(time.Hour), 450)
	again := big[10]
	again.Close = again.High
	mustUpsert(t, s, "AAPL", "1m", append(big, again))
	got, err = s.Bars(ctx, "AAPL", "1m", big[0].Time, time.Time{}, 0)
	if err != nil || len(got) != 450 || got[10] != again || got[449] != big[449] {
		t.Fatalf("big batch: %d bars, %v", len(got), err)
	}
}

func TestQueries(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	bars := mkBars(base, 10)
	mustUpsert(t, s, "AAPL", "1m", bars)
	mustUpsert(t, s, "AAPL", "5m", mkBars(base.Add(-time.Hour), 2))
	mustUpsert(t, s, "MSFT", "1m", mkBars(base.Add(time.Hour), 3))
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

	tests := []struct {
		name       string
		start, end time.Time
		limit      int
		want       []Bar
	}{
		{"all", time.Time{}, time.Time{}, 0, bars},
		{"start inclusive, end exclusive", at(2), at(5), 0, bars[2:5]},
		{"open start", time.Time{}, at(3), 0, bars[:3]},
		{"open end", at(7), time.Time{}, 0, bars[7:]},
		{"limit keeps the oldest", at(1), time.Time{}, 2, bars[1:3]},
		{"start between seconds", at(2).Add(time.Nanosecond), at(5), 0, bars[3:5]},
		{"end between seconds", at(2), at(4).Add(time.Nanosecond), 0, bars[2:5]},
		{"empty range", at(5), at(5), 0, nil},
		{"before all", at(-100), at(-50), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Bars(ctx, "AAPL", "1m", tt.start, tt.end, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v\nwant %v", got, tt.want)
			}
		})
	}

	first, last, n, err := s.Range(ctx, "AAPL", "1m")
	if err != nil || !first.Equal(at(0)) || !last.Equal(at(9)) || n != 10 || first.Location() != time.UTC {
		t.Fatalf("range %s %s %d %v", first, last, n, err)
	}
	b, ok, err := s.Last(ctx, "AAPL", "1m")
	if err != nil || !ok || b != bars[9] {
		t.Fatalf("last %+v %v %v", b, ok, err)
	}
	// Unknown keys are empty, not errors.
	first, last, n, err = s.Range(ctx, "AAPL", "1h")
	if err != nil || !first.IsZero() || !last.IsZero() || n != 0 {
		t.Fatalf("empty range %s %s %d %v", first, last, n, err)
	}
	if _, ok, err := s.Last(ctx, "NONE", "1m"); ok || err != nil {
		t.Fatalf("empty last %v %v", ok, err)
	}
	if got, err := s.Bars(ctx, "NONE", "1m", time.Time{}, time.Time{}, 0); got != nil || err != nil {
		t.Fatalf("empty bars %v %v", got, err)
	}
}

func TestBadInputIsRefusedAndLosesNothing(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	stored := mkBars(base, 3)
	mustUpsert(t, s, "AAPL", "1m", stored)

	bad := func(f func(*Bar)) []Bar {
		// A good new bar, an update of a stored one, then the bad one: the
		// call must write neither of the first two.
		upd := stored[0]
		upd.Close++
		b := barAt(base.Add(time.Hour))
		f(&b)
		return []Bar{barAt(base.Add(30 * time.Minute)), upd, b}
	}
	tests := []struct {
		name      string
		sym, tf   string
		bars      []Bar
		wantError error
	}{
		{"empty symbol", "", "1m", mkBars(base, 1), ErrInvalidKey},
		{"empty timeframe", "AAPL", "", mkBars(base, 1), ErrInvalidKey},
		{"NaN open", "AAPL", "1m", bad(func(b *Bar) { b.Open = math.NaN() }), ErrInvalidBar},
		{"NaN close", "AAPL", "1m", bad(func(b *Bar) { b.Close = math.NaN() }), ErrInvalidBar},
		{"infinite volume", "AAPL", "1m", bad(func(b *Bar) { b.Volume = math.Inf(1) }), ErrInvalidBar},
		{"NaN wap", "AAPL", "1m", bad(func(b *Bar) { b.WAP = math.NaN() }), ErrInvalidBar},
		{"low above high", "AAPL", "1m", bad(func(b *Bar) { b.Low = b.High + 0.01 }), ErrInvalidBar},
		{"zero time", "AAPL", "1m", bad(func(b *Bar) { b.Time = time.Time{} }), ErrInvalidBar},
		{"fractional second", "AAPL", "1m", bad(func(b *Bar) { b.Time = b.Time.Add(time.Millisecond) }), ErrInvalidBar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := s.Upsert(ctx, tt.sym, tt.tf, tt.bars)
			if !errors.Is(err, tt.wantError) || n != 0 {
				t.Fatalf("n %d err %v, want %v", n, err, tt.wantError)
			}
			got, err := s.Bars(ctx, "AAPL", "1m", time.Time{}, time.Time{}, 0)
			if err != nil || fmt.Sprint(got) != fmt.Sprint(stored) {
				t.Fatalf("store changed: %v %v", got, err)
			}
		})
	}
	for _, q := range []func() error{
		func() error { _, err := s.Bars(ctx, "", "1m", time.Time{}, time.Time{}, 0); return err },
		func() error { _, _, _, err := s.Range(ctx, "AAPL", ""); return err },
		func() error { _, _, err := s.Last(ctx, "", ""); return err },
	} {
		if err := q(); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("query with empty key: %v", err)
		}
	}
	// IB's -1 for volume, WAP and count on non-TRADES bars is data, not an error.
	mid := barAt(base.Add(2 * time.Hour))
	mid.Volume, mid.WAP, mid.Count = -1, -1, -1
	if n := mustUpsert(t, s, "AAPL", "1m", []Bar{mid}); n != 1 {
		t.Fatalf("-1 fields: %d", n)
	}
}

func TestContextIsHonoured(t *testing.T) {
	s, _ := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Upsert(ctx, "AAPL", "1m", mkBars(base, 5)); !errors.Is(err, context.Canceled) {
		t.Fatalf("upsert: %v", err)
	}
	if _, err := s.Bars(ctx, "AAPL", "1m", time.Time{}, time.Time{}, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("bars: %v", err)
	}
	if _, _, n, _ := s.Range(context.Background(), "AAPL", "1m"); n != 0 {
		t.Fatalf("cancelled upsert wrote %d bars", n)
	}
}

func TestConcurrentWritersAndReaders(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	const writers, batches, size = 4, 10, 50
	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 64)
	for w := range writers {
		wg.Go(func() {
			sym := fmt.Sprintf("W%d", w)
			for i := range batches {
				start := base.Add(time.Duration(i*size) * time.Minute)
				if _, err := s.Upsert(ctx, sym, "1m", mkBars(start, size)); err != nil {
					errs <- err
					return
				}
				// Every writer also writes the same bars of a shared symbol.
				if _, err := s.Upsert(ctx, "SHARED", "1m", mkBars(start, size)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	for r := range 4 {
		readers.Go(func() {
			sym := fmt.Sprintf("W%d", r)
			prev := 0
			for {
				select {
				case <-done:
					return
				default:
				}
				_, _, n, err := s.Range(ctx, sym, "1m")
				if err != nil {
					errs <- err
					return
				}
				// Batches commit whole: a reader sees a multiple of the batch size, never less than before.
				if n < prev || n%size != 0 {
					errs <- fmt.Errorf("%s: count %d after %d", sym, n, prev)
					return
				}
				prev = n
				bars, err := s.Bars(ctx, "SHARED", "1m", time.Time{}, time.Time{}, 50)
				if err != nil {
					errs <- err
					return
				}
				for i, b := range bars {
					if b != barAt(b.Time) || (i > 0 && !b.Time.After(bars[i-1].Time)) {
						errs <- fmt.Errorf("bad read %d: %+v", i, b)
						return
					}
				}
				if _, _, err := s.Last(ctx, sym, "1m"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, sym := range []string{"W0", "W1", "W2", "W3", "SHARED"} {
		if _, _, n, err := s.Range(ctx, sym, "1m"); err != nil || n != batches*size {
			t.Errorf("%s: %d bars, %v", sym, n, err)
		}
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	s, path := open(t)
	ctx := context.Background()
	mustUpsert(t, s, "AAPL", "1m", mkBars(base, 5))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, _, n, err := s2.Range(ctx, "AAPL", "1m"); err != nil || n != 5 {
		t.Fatalf("after reopen: %d %v", n, err)
	}
	var v int
	var mode string
	if err := s2.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("user_version %d %v", v, err)
	}
	if err := s2.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q %v", mode, err)
	}

	// A file from a newer schema is refused rather than misread.
	if _, err := s2.db.ExecContext(ctx, "PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := OpenSQLite(path); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestNotADatabase(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	data := make([]byte, 8192)
	for i := range data {
		data[i] = byte("not a database, just some text\n"[i%31])
	}
	if err := os.WriteFile(junk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenSQLite(junk)
	if !errors.Is(err, ErrNotDatabase) {
		t.Fatalf("junk file: %v", err)
	}
	t.Logf("junk file: %v", err)
	// The file is left as it was: the operator may want it back.
	if got, _ := os.ReadFile(junk); string(got) != string(data) {
		t.Fatal("junk file was modified")
	}
	// A directory cannot be opened either, but is not a damaged database.
	if _, err := OpenSQLite(dir); err == nil || errors.Is(err, ErrNotDatabase) {
		t.Fatalf("directory: %v", err)
	}
}

// Child loader layout: batch i holds childBatch bars starting at bar
// i*childStep, so consecutive batches overlap and rewrite bars.
const childBatch, childStep = 500, 400

// runChildLoader upserts batches until killed, printing each batch number
// once its transaction has committed.
func runChildLoader(path string) int {
	s, err := OpenSQLite(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; ; i++ {
		if _, err := s.Upsert(context.Background(), "LOAD", "1m", mkBars(base.Add(time.Duration(i*childStep)*time.Minute), childBatch)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := fmt.Fprintln(os.Stdout, i); err != nil {
			return 1
		}
	}
}

func TestKilledLoadLosesNoCommittedBar(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bars.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	committed := -1
	sc := bufio.NewScanner(out)
	for committed < 30 && sc.Scan() {
		if committed, err = strconv.Atoi(sc.Text()); err != nil {
			t.Fatal(err)
		}
	}
	if committed < 30 {
		t.Fatalf("child stopped after batch %d: %v", committed, sc.Err())
	}
	// Kill it where it stands, most likely inside a transaction.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // batches committed before the signal landed
		if committed, err = strconv.Atoi(sc.Text()); err != nil {
			t.Fatal(err)
		}
	}
	werr := cmd.Wait()
	killed = true
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed: %v", werr)
	}

	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var check string
	if err := s.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check %q %v", check, err)
	}
	var dups int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM bars GROUP BY symbol, timeframe, ts HAVING COUNT(*) > 1)`).Scan(&dups); err != nil || dups != 0 {
		t.Fatalf("duplicates %d %v", dups, err)
	}
	first, last, n, err := s.Range(ctx, "LOAD", "1m")
	if err != nil {
		t.Fatal(err)
	}
	bars, err := s.Bars(ctx, "LOAD", "1m", time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Every bar of every reported batch is there, in one gapless run; the
	// batch in flight is either all there or not at all.
	span := int(last.Sub(first)/time.Minute) + 1
	batches := (n - childBatch) / childStep
	if !first.Equal(base) || n != span || (n-childBatch)%childStep != 0 || batches < committed || batches > committed+1 || len(bars) != n {
		t.Fatalf("after kill at batch %d: first %s last %s count %d", committed, first, last, n)
	}
	for i, b := range bars {
		if want := barAt(base.Add(time.Duration(i) * time.Minute)); b != want {
			t.Fatalf("bar %d: %+v, want %+v", i, b, want)
		}
	}
	t.Logf("killed after %d reported batches; %d batches (%d bars) on disk", committed+1, batches+1, n)
}

// BenchmarkUpsert2000 measures fresh bars written per second in batches of
// 2000, one transaction each, the shape of one IB history response.
func BenchmarkUpsert2000(b *testing.B) {
	s, _ := open(b)
	ctx := context.Background()
	const size = 2000
	var written int
	start := base
	for b.Loop() {
		bars := mkBars(start, size)
		start = start.Add(size * time.Minute)
		n, err := s.Upsert(ctx, "BENCH", "1m", bars)
		if err != nil || n != size {
			b.Fatal(n, err)
		}
		written += n
	}
	b.ReportMetric(float64(written)/b.Elapsed().Seconds(), "bars/s")
}
