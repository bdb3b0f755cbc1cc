package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// BusyTimeout is how long a connection waits for another process's write
// lock (the CLI and the server may share a file) before failing with
// "database is locked".
const BusyTimeout = 5 * time.Second

// migrations[i] brings a database from user_version i to i+1. Appending is
// the only allowed change: a released step never changes.
var migrations = []string{
	// 1: bars keyed by what identifies them. WITHOUT ROWID stores each row in
	// the primary-key b-tree, so a range scan for one symbol and timeframe
	// reads consecutive pages and there is no second index to keep.
	`CREATE TABLE bars (
		symbol    TEXT    NOT NULL,
		timeframe TEXT    NOT NULL,
		ts        INTEGER NOT NULL, -- bar start, unix seconds, UTC
		open      REAL    NOT NULL,
		high      REAL    NOT NULL,
		low       REAL    NOT NULL,
		close     REAL    NOT NULL,
		volume    REAL    NOT NULL,
		wap       REAL    NOT NULL,
		count     INTEGER NOT NULL,
		PRIMARY KEY (symbol, timeframe, ts)
	) WITHOUT ROWID`,
}

// SQLite is a Store in one SQLite file, through the pure-Go driver (no cgo,
// so the binary cross-compiles and runs anywhere).
type SQLite struct {
	db   *sql.DB
	path string
	// write serialises this process's writers so they queue here, where
	// the context is honoured, instead of spinning in SQLite's busy handler.
	write chan struct{}
}

// OpenSQLite opens or creates the database at path and brings its schema
// up to date.
//
// The connection settings, applied to every pooled connection:
//   - journal_mode=WAL: readers never block the writer nor it them, so
//     serving bars does not stall a load in progress;
//   - synchronous=NORMAL: in WAL mode a commit is then written to the log
//     but fsynced only at checkpoints. A killed process loses nothing
//     committed; a power cut or OS crash can lose the last commits but never
//     corrupts the file. Bars can be fetched again from IB, so that trade
//     for not paying an fsync per batch is the right one;
//   - busy_timeout: wait for another process's write lock, see BusyTimeout;
//   - BEGIN IMMEDIATE for transactions: a writer takes the write lock at
//     the start, so two writers cannot both read and then deadlock on the
//     upgrade (SQLITE_BUSY that no timeout resolves).
func OpenSQLite(path string) (*SQLite, error) {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &SQLite{db: db, path: path, write: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), BusyTimeout+5*time.Second)
	defer cancel()
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the missing migrations in one transaction, so two
// processes opening a new file at once cannot both create the table.
func (s *SQLite) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.openErr(err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return s.openErr(err)
	}
	if v > len(migrations) {
		return fmt.Errorf("%w: %s has version %d, this program knows up to %d", ErrSchemaTooNew, s.path, v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return s.openErr(fmt.Errorf("migration %d: %w", i+1, err))
		}
	}
	// PRAGMA takes no parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return s.openErr(err)
	}
	if err := tx.Commit(); err != nil {
		return s.openErr(err)
	}
	return nil
}

// openErr names the failure to open: a file that is not SQLite, or is
// damaged, gets ErrNotDatabase so the operator knows to move it away
// rather than retry.
func (s *SQLite) openErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("%w: %s: %w", ErrNotDatabase, s.path, err)
		}
	}
	return fmt.Errorf("store: open %s: %w", s.path, err)
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// upsertRows is how many bars one INSERT carries: statement overhead is
// paid per statement, so a 2000-bar batch costs 10 executions instead of
// 2000, while 200 rows x 10 parameters stays far below SQLite's variable
// limit.
const upsertRows = 200

// upsertSQL returns the upsert of n rows. The update only fires when a
// value differs, so the affected-row count is the number of bars that were
// new or changed.
func upsertSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, wap, count) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?,?,?,?)`)
	}
	b.WriteString(`
ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET
	open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
	volume = excluded.volume, wap = excluded.wap, count = excluded.count
WHERE (bars.open, bars.high, bars.low, bars.close, bars.volume, bars.wap, bars.count)
	IS NOT (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume, excluded.wap, excluded.count)`)
	return b.String()
}

// Upsert implements Store. All bars are validated first and written in one
// transaction: a call either stores every bar or none.
func (s *SQLite) Upsert(ctx context.Context, symbol, timeframe string, bars []Bar) (int, error) {
	if err := validKey(symbol, timeframe); err != nil {
		return 0, err
	}
	if err := validate(bars); err != nil {
		return 0, err
	}
	if len(bars) == 0 {
		return 0, nil
	}
	select {
	case s.write <- struct{}{}:
		defer func() { <-s.write }()
	case <-ctx.Done():
		return 0, fmt.Errorf("store: upsert %s %s: waiting for the writer: %w", symbol, timeframe, ctx.Err())
	}
	n, err := s.upsertTx(ctx, symbol, timeframe, bars)
	if err != nil {
		return 0, fmt.Errorf("store: upsert %d bars of %s %s: %w", len(bars), symbol, timeframe, err)
	}
	return n, nil
}

func (s *SQLite) upsertTx(ctx context.Context, symbol, timeframe string, bars []Bar) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() // no-op after Commit
	var (
		n    int64
		st   *sql.Stmt
		rows int
		args = make([]any, 0, 10*upsertRows)
	)
	for len(bars) > 0 {
		k := min(len(bars), upsertRows)
		if st == nil || rows != k {
			if st != nil {
				st.Close()
			}
			if st, err = tx.PrepareContext(ctx, upsertSQL(k)); err != nil {
				return 0, err
			}
			defer st.Close()
			rows = k
		}
		args = args[:0]
		for _, b := range bars[:k] {
			args = append(args, symbol, timeframe, b.Time.Unix(), b.Open, b.High, b.Low, b.Close, b.Volume, b.WAP, b.Count)
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return 0, err
		}
		c, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		n += c
		bars = bars[k:]
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return int(n), nil
}

const barColumns = `ts, open, high, low, close, volume, wap, count`

func scanBar(sc interface{ Scan(...any) error }) (Bar, error) {
	var b Bar
	var ts int64
	if err := sc.Scan(&ts, &b.Open, &b.High, &b.Low, &b.Close, &b.Volume, &b.WAP, &b.Count); err != nil {
		return Bar{}, err
	}
	b.Time = time.Unix(ts, 0).UTC()
	return b, nil
}

// Bars implements Store.
func (s *SQLite) Bars(ctx context.Context, symbol, timeframe string, start, end time.Time, limit int) ([]Bar, error) {
	if err := validKey(symbol, timeframe); err != nil {
		return nil, err
	}
	q := `SELECT ` + barColumns + ` FROM bars WHERE symbol = ? AND timeframe = ?`
	args := []any{symbol, timeframe}
	if !start.IsZero() {
		q += ` AND ts >= ?`
		args = append(args, ceilUnix(start))
	}
	if !end.IsZero() {
		q += ` AND ts < ?`
		args = append(args, ceilUnix(end))
	}
	q += ` ORDER BY ts`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: bars %s %s: %w", symbol, timeframe, err)
	}
	defer rows.Close()
	var out []Bar
	for rows.Next() {
		b, err := scanBar(rows)
		if err != nil {
			return nil, fmt.Errorf("store: bars %s %s: %w", symbol, timeframe, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: bars %s %s: %w", symbol, timeframe, err)
	}
	return out, nil
}

// ceilUnix is the first whole second at or after t: bar starts are whole
// seconds, so [start, end) over seconds matches [start, end) over instants.
func ceilUnix(t time.Time) int64 {
	u := t.Unix()
	if t.Nanosecond() != 0 {
		u++
	}
	return u
}

// Range implements Store.
func (s *SQLite) Range(ctx context.Context, symbol, timeframe string) (first, last time.Time, count int, err error) {
	if err := validKey(symbol, timeframe); err != nil {
		return time.Time{}, time.Time{}, 0, err
	}
	var lo, hi sql.NullInt64
	err = s.db.QueryRowContext(ctx, `SELECT MIN(ts), MAX(ts), COUNT(*) FROM bars WHERE symbol = ? AND timeframe = ?`,
		symbol, timeframe).Scan(&lo, &hi, &count)
	if err != nil {
		return time.Time{}, time.Time{}, 0, fmt.Errorf("store: range %s %s: %w", symbol, timeframe, err)
	}
	if count == 0 {
		return time.Time{}, time.Time{}, 0, nil
	}
	return time.Unix(lo.Int64, 0).UTC(), time.Unix(hi.Int64, 0).UTC(), count, nil
}

// Last implements Store.
func (s *SQLite) Last(ctx context.Context, symbol, timeframe string) (Bar, bool, error) {
	if err := validKey(symbol, timeframe); err != nil {
		return Bar{}, false, err
	}
	b, err := scanBar(s.db.QueryRowContext(ctx,
		`SELECT `+barColumns+` FROM bars WHERE symbol = ? AND timeframe = ? ORDER BY ts DESC LIMIT 1`, symbol, timeframe))
	if errors.Is(err, sql.ErrNoRows) {
		return Bar{}, false, nil
	}
	if err != nil {
		return Bar{}, false, fmt.Errorf("store: last %s %s: %w", symbol, timeframe, err)
	}
	return b, true, nil
}

var _ Store = (*SQLite)(nil)
