// Package store keeps historical bars. Store is the contract the service
// codes against; SQLite is the embedded implementation used by default, so a
// single binary needs no database server. A server-backed implementation
// can satisfy the same interface later.
package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Bar is one OHLCV bar as IB reports it. For tick types other than TRADES
// IB sends Volume, WAP and Count as -1, so negative values are kept as is.
type Bar struct {
	Time                                time.Time // bar start, UTC, whole seconds
	Open, High, Low, Close, Volume, WAP float64
	Count                               int
}

// Store reads and writes bars keyed by symbol, timeframe and bar start.
// Every method that touches the database takes a context and honours it.
type Store interface {
	// Upsert writes bars for symbol and timeframe, replacing any stored bar
	// with the same start, all or nothing. It returns how many bars were new
	// or changed, so writing the same bars twice returns 0 the second time.
	Upsert(ctx context.Context, symbol, timeframe string, bars []Bar) (int, error)
	// Bars returns bars with start in [start, end), oldest first. A zero
	// start or end leaves that side open; limit <= 0 means no limit.
	Bars(ctx context.Context, symbol, timeframe string, start, end time.Time, limit int) ([]Bar, error)
	// Range returns the first and last bar starts and the number of bars;
	// zero times and 0 when there are none.
	Range(ctx context.Context, symbol, timeframe string) (first, last time.Time, count int, err error)
	// Last returns the latest bar, and false when there is none.
	Last(ctx context.Context, symbol, timeframe string) (Bar, bool, error)
	// Close releases the store.
	Close() error
}

// Errors callers can test with errors.Is.
var (
	// ErrInvalidKey: the symbol or timeframe is empty.
	ErrInvalidKey = errors.New("store: invalid symbol or timeframe")
	// ErrInvalidBar: a bar has a zero or fractional-second time, a NaN or
	// infinite value, or a low above its high. The whole call is refused.
	ErrInvalidBar = errors.New("store: invalid bar")
	// ErrNotDatabase: the file exists but is not a usable SQLite database.
	ErrNotDatabase = errors.New("store: not a usable database")
	// ErrSchemaTooNew: the file was written by a newer version of this
	// program, whose schema this one does not know.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this program")
)

func validKey(symbol, timeframe string) error {
	if symbol == "" || timeframe == "" {
		return fmt.Errorf("%w: symbol %q, timeframe %q", ErrInvalidKey, symbol, timeframe)
	}
	return nil
}

// validate checks every bar before anything is written, so a bad batch
// changes nothing.
func validate(bars []Bar) error {
	for i, b := range bars {
		if b.Time.IsZero() || b.Time.Nanosecond() != 0 {
			return fmt.Errorf("%w: bar %d: time %s is not a whole second", ErrInvalidBar, i, b.Time)
		}
		for _, v := range [...]struct {
			name string
			v    float64
		}{{"open", b.Open}, {"high", b.High}, {"low", b.Low}, {"close", b.Close}, {"volume", b.Volume}, {"wap", b.WAP}} {
			if math.IsNaN(v.v) || math.IsInf(v.v, 0) {
				return fmt.Errorf("%w: bar %d at %s: %s is %v", ErrInvalidBar, i, b.Time.UTC(), v.name, v.v)
			}
		}
		if b.Low > b.High {
			return fmt.Errorf("%w: bar %d at %s: low %v above high %v", ErrInvalidBar, i, b.Time.UTC(), b.Low, b.High)
		}
	}
	return nil
}
