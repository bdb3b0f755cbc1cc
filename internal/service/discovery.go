package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ktrdr/ktrdr/client"
	"github.com/ktrdr/ktrdr/pool"
	"github.com/ktrdr/ktrdr/tws"
)

// Cache lifetimes: a found symbol rarely changes; a failure may be a
// transient gateway problem, so it is never remembered for long.
const (
	discoveryTTL = 30 * 24 * time.Hour
	failureTTL   = time.Hour
	cacheFile    = "symbols.json"
)

// symbolPattern accepts IB symbols and forex pairs: letters, digits and
// ". / -" or a space inside (BRK B, EUR.USD, EUR/USD), up to 24 characters.
var symbolPattern = regexp.MustCompile(`^[A-Z0-9][A-Z0-9./ -]{0,23}$`)

type cacheEntry struct {
	Instrument *Instrument `json:"instrument,omitempty"`
	Failure    string      `json:"failure,omitempty"` // IB's reason
	At         time.Time   `json:"at"`
	Expires    time.Time   `json:"expires"`
}

// discovery caches symbol lookups in memory and, with a data directory,
// in a JSON file written atomically.
type discovery struct {
	path    string
	log     *slog.Logger
	mu      sync.Mutex
	entries map[string]cacheEntry
}

func newDiscovery(dir string, log *slog.Logger) (*discovery, error) {
	d := &discovery{log: log, entries: map[string]cacheEntry{}}
	if dir == "" {
		return d, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	d.path = filepath.Join(dir, cacheFile)
	b, err := os.ReadFile(d.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("symbol cache %s: %w", d.path, err)
	default:
		if err := json.Unmarshal(b, &d.entries); err != nil {
			// A damaged cache costs lookups, not data: keep it aside and start afresh.
			bad := d.path + ".corrupt"
			_ = os.Rename(d.path, bad)
			log.Warn("symbol cache unreadable, starting empty", "file", d.path, "moved_to", bad, "err", err)
			d.entries = map[string]cacheEntry{}
		}
	}
	return d, nil
}

// saveLocked writes the cache to a temporary file and renames it over the
// old one, so a crash never leaves half a file. Caller holds d.mu.
func (d *discovery) saveLocked() {
	if d.path == "" {
		return
	}
	b, err := json.MarshalIndent(d.entries, "", "  ")
	if err == nil {
		tmp := d.path + ".tmp"
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, d.path)
		}
	}
	if err != nil {
		d.log.Error("cannot save the symbol cache", "file", d.path, "err", err)
	}
}

func (d *discovery) get(key string) (cacheEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[key]
	if ok && time.Now().After(e.Expires) {
		return cacheEntry{}, false
	}
	return e, ok
}

func (d *discovery) put(key string, e cacheEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries[key] = e
	d.saveLocked()
}

// forexPair reads EURUSD, EUR.USD and EUR/USD.
func forexPair(s string) (base, quote string, ok bool) {
	s = strings.NewReplacer(".", "", "/", "").Replace(s)
	if len(s) != 6 {
		return "", "", false
	}
	for _, r := range s {
		if r < 'A' || r > 'Z' {
			return "", "", false
		}
	}
	return s[:3], s[3:], true
}

// futuresExchanges are tried in turn for a futures symbol.
var futuresExchanges = []string{"CME", "NYMEX", "CBOT", "COMEX"}

type candidate struct {
	kind     string
	contract tws.Contract
	what     string // whatToShow for the head timestamp
}

func candidates(sym string) []candidate {
	cs := []candidate{{"stock", tws.Contract{Symbol: sym, SecType: "STK", Exchange: "SMART", Currency: "USD"}, "TRADES"}}
	if base, quote, ok := forexPair(sym); ok {
		cs = append(cs, candidate{"forex", tws.Contract{Symbol: base, SecType: "CASH", Exchange: "IDEALPRO", Currency: quote}, "MIDPOINT"})
	}
	for _, ex := range futuresExchanges {
		cs = append(cs, candidate{"future", tws.Contract{Symbol: sym, SecType: "FUT", Exchange: ex, Currency: "USD"}, "TRADES"})
	}
	return cs
}

// Discover finds what a symbol is: a stock (SMART/USD), else a forex pair
// (IDEALPRO; EURUSD, EUR.USD and EUR/USD all work), else a future (front
// month). Results are cached 30 days, failures one hour.
func (s *IB) Discover(ctx context.Context, symbol string, force bool) (Instrument, error) {
	start := time.Now()
	sym := strings.ToUpper(strings.TrimSpace(symbol))
	if !symbolPattern.MatchString(sym) {
		return Instrument{}, &Error{Kind: ErrInvalid, Code: "INVALID_SYMBOL",
			Message: fmt.Sprintf("symbol %q is malformed: want 1-24 letters or digits, with . / - or a space inside", symbol)}
	}
	if !force {
		if e, ok := s.disc.get(sym); ok {
			if e.Instrument != nil {
				in := *e.Instrument
				in.Cached, in.DiscoveryTimeMS = true, msSince(start)
				return in, nil
			}
			return Instrument{}, notFound(sym, e.Failure, true)
		}
	}
	lease, err := s.Pool().Acquire(ctx, "symbol-discovery")
	if err != nil {
		return Instrument{}, gatewayError("acquiring a connection", err)
	}
	defer lease.Release()
	conn := lease.Conn()
	reason := ""
	for _, c := range candidates(sym) {
		details, err := conn.ContractDetails(ctx, c.contract)
		var ib *client.IBError
		if errors.As(err, &ib) && ib.Code == 200 {
			reason = ib.Text
			continue
		}
		if err != nil {
			s.recordData(false, err)
			if errors.Is(err, client.ErrConnectionLost) {
				lease.Destroy()
			}
			return Instrument{}, gatewayError("contract details for "+c.kind, err)
		}
		s.recordData(true, nil)
		if len(details) == 0 {
			continue
		}
		d := frontMonth(details)
		in := Instrument{Symbol: sym, IBSymbol: d.Symbol, Type: c.kind, SecType: d.SecType, Exchange: d.Exchange,
			PrimaryExchange: d.PrimaryExchange, Currency: d.Currency, LocalSymbol: d.LocalSymbol, Description: d.LongName,
			ConID: d.ConID, TimeZone: d.TimeZoneID, TradingHours: d.TradingHours, LiquidHours: d.LiquidHours,
			Expiry: d.LastTradeDateOrContractMonth, Multiplier: d.Multiplier, MinTick: d.MinTick, DiscoveredAt: time.Now()}
		if head, err := conn.HeadTimestamp(ctx, tws.Contract{ConID: d.ConID, Exchange: d.Exchange}, c.what, false); err == nil {
			in.HeadTimestamp = &head
		} else {
			s.log.Info("no head timestamp for discovered symbol", "symbol", sym, "err", err)
			if ctx.Err() != nil {
				return Instrument{}, gatewayError("head timestamp", err)
			}
		}
		cached := in // the cache keeps its own copy: callers may change theirs
		s.disc.put(sym, cacheEntry{Instrument: &cached, At: in.DiscoveredAt, Expires: in.DiscoveredAt.Add(discoveryTTL)})
		in.DiscoveryTimeMS = msSince(start)
		return in, nil
	}
	if reason == "" {
		reason = "No security definition has been found for the request"
	}
	now := time.Now()
	s.disc.put(sym, cacheEntry{Failure: reason, At: now, Expires: now.Add(failureTTL)})
	return Instrument{}, notFound(sym, reason, false)
}

// frontMonth picks the nearest expiry when IB answers several contracts.
func frontMonth(ds []tws.ContractDetails) tws.ContractDetails {
	sort.SliceStable(ds, func(i, j int) bool {
		return ds[i].LastTradeDateOrContractMonth < ds[j].LastTradeDateOrContractMonth
	})
	today := time.Now().Format("20060102")
	for _, d := range ds {
		if d.LastTradeDateOrContractMonth == "" || d.LastTradeDateOrContractMonth >= today {
			return d
		}
	}
	return ds[len(ds)-1]
}

func notFound(sym, reason string, cached bool) error {
	return &Error{Kind: ErrNotFound, Code: "SYMBOL_NOT_FOUND",
		Message: fmt.Sprintf("symbol %s not found as a stock, forex pair or future: %s", sym, reason),
		Details: map[string]any{"symbol": sym, "ib_reason": reason, "cached": cached}}
}

// Discovered lists the cached discoveries, newest first.
func (s *IB) Discovered() []Instrument {
	s.disc.mu.Lock()
	defer s.disc.mu.Unlock()
	out := []Instrument{}
	for _, e := range s.disc.entries {
		if e.Instrument != nil && time.Now().Before(e.Expires) {
			in := *e.Instrument
			in.Cached = true
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DiscoveredAt.After(out[j].DiscoveredAt) })
	return out
}

// gatewayError turns a pool or client failure into a service error: 504
// when a deadline passed (naming the stage), 503 otherwise.
func gatewayError(stage string, err error) error {
	var ae *pool.AcquireError
	if errors.As(err, &ae) {
		stage = string(ae.Stage)
	}
	details := map[string]any{"stage": stage}
	// Silence first: the pool reports it joined with the deadline it hit,
	// and a silent gateway is a gateway problem (503), not a slow request.
	switch {
	case errors.Is(err, pool.ErrSilentGateway):
		return &Error{Kind: ErrUnavailable, Code: "GATEWAY_SILENT", Message: "the gateway accepted the connection but did not answer", Details: details, Err: err}
	case errors.Is(err, pool.ErrCircuitOpen):
		return &Error{Kind: ErrUnavailable, Code: "CIRCUIT_OPEN", Message: "the gateway failed recently; the circuit breaker is open", Details: details, Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Kind: ErrTimeout, Code: "GATEWAY_TIMEOUT", Message: "deadline passed while " + stage, Details: details, Err: err}
	}
	return &Error{Kind: ErrUnavailable, Code: "GATEWAY_UNAVAILABLE", Message: "the gateway is unavailable while " + stage, Details: details, Err: err}
}
