package pool

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ktrdr/ktrdr/client"
)

// Config configures a pool. Every duration and count has a default (the
// numbers users of the original system know) and a floor below which it
// is raised, each explained on its field.
type Config struct {
	// Addr is the gateway's host:port.
	Addr string
	// MaxConns caps live connections; default 4, at most 32 (IB's client limit).
	MaxConns int
	// MinIdle connections are kept warm by the health loop so the first
	// caller after a quiet hour pays no connect; default 1, at most MaxConns.
	// Negative means none.
	MinIdle int
	// ClientIDBase is the lowest client id the pool uses; default 1.
	ClientIDBase int
	// ClientIDAttempts caps how many ids one connect tries on error 326; default 8.
	ClientIDAttempts int
	// ClientIDPause separates consecutive client-id attempts, because rapid
	// reconnects with consecutive ids are known to upset gateways; default 250ms.
	ClientIDPause time.Duration
	// ClientIDCooldown rests an id refused with 326 before it is tried
	// again (the gateway may still hold a stale session); default 60s, floor 1s.
	ClientIDCooldown time.Duration
	// ConnectTimeout bounds one connect (TCP, handshake, startApi); default 3s, floor 250ms.
	ConnectTimeout time.Duration
	// ValidationTimeout bounds the reqCurrentTime round trip that validates
	// a connection before handoff; default 3s, floor 250ms.
	ValidationTimeout time.Duration
	// ValidationBypass skips the round trip for a connection proven alive
	// this recently; default 1s, floor 1s (a second reqCurrentTime within a
	// second may never be answered by a gateway).
	ValidationBypass time.Duration
	// IdleTimeout closes connections idle this long (beyond MinIdle); default 300s, floor 1s.
	IdleTimeout time.Duration
	// HealthInterval is the health loop's period (with ±10% jitter, so
	// pools started together do not probe in step); default 60s, floor 100ms.
	HealthInterval time.Duration
	// BreakerFailures consecutive failed connects or validations open the
	// circuit breaker; default 3, floor 1.
	BreakerFailures int
	// BreakerProbeInterval is how often the pool probes the gateway while
	// the breaker is open (a handshake that claims no client id); default 1s, floor 100ms.
	BreakerProbeInterval time.Duration
	// LeakThreshold reports a connection held longer than this, with the
	// label its acquirer gave; default 60s, 0 disables.
	LeakThreshold time.Duration
	// EventBuffer is the size of each subscriber's event buffer; default 64.
	EventBuffer int
	// Logger; default discards.
	Logger *slog.Logger
	// Dial opens one connection; default client.Dial. Tests and the
	// service can wrap it.
	Dial func(ctx context.Context, cfg client.Config) (*client.Conn, error)
	// Probe is the breaker's handshake-only probe; default client.ProbeHandshake.
	Probe func(ctx context.Context, addr string) (int, error)
}

// Defaults, limits and floors.
const (
	DefaultMaxConns             = 4
	MaxConnsLimit               = 32
	DefaultMinIdle              = 1
	DefaultClientIDBase         = 1
	DefaultClientIDAttempts     = 8
	DefaultClientIDPause        = 250 * time.Millisecond
	DefaultClientIDCooldown     = 60 * time.Second
	DefaultConnectTimeout       = 3 * time.Second
	DefaultValidationTimeout    = 3 * time.Second
	DefaultValidationBypass     = time.Second
	DefaultIdleTimeout          = 300 * time.Second
	DefaultHealthInterval       = 60 * time.Second
	DefaultBreakerFailures      = 3
	DefaultBreakerProbeInterval = time.Second
	DefaultLeakThreshold        = 60 * time.Second

	minTimeout          = 250 * time.Millisecond
	minBypass           = time.Second
	minIdleTimeout      = time.Second
	minHealthInterval   = 100 * time.Millisecond
	minCooldown         = time.Second
	minBreakerProbe     = 100 * time.Millisecond
	maxClientIDAttempts = 32
)

// withDefaults fills zero values and raises values below their floors. It
// returns an error only for values that cannot be meant (negative counts,
// an empty address).
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		return c, fmt.Errorf("pool: Addr is required")
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConns < 1 || c.MaxConns > MaxConnsLimit {
		return c, fmt.Errorf("pool: MaxConns %d outside 1..%d", c.MaxConns, MaxConnsLimit)
	}
	if c.MinIdle == 0 {
		c.MinIdle = DefaultMinIdle
	}
	c.MinIdle = min(max(c.MinIdle, 0), c.MaxConns)
	if c.ClientIDBase == 0 {
		c.ClientIDBase = DefaultClientIDBase
	}
	if c.ClientIDBase < 0 {
		return c, fmt.Errorf("pool: ClientIDBase %d is negative", c.ClientIDBase)
	}
	if c.ClientIDAttempts <= 0 {
		c.ClientIDAttempts = DefaultClientIDAttempts
	}
	c.ClientIDAttempts = min(c.ClientIDAttempts, maxClientIDAttempts)
	if c.ClientIDPause <= 0 {
		c.ClientIDPause = DefaultClientIDPause
	}
	c.ClientIDCooldown = orDefault(c.ClientIDCooldown, DefaultClientIDCooldown, minCooldown)
	c.ConnectTimeout = orDefault(c.ConnectTimeout, DefaultConnectTimeout, minTimeout)
	c.ValidationTimeout = orDefault(c.ValidationTimeout, DefaultValidationTimeout, minTimeout)
	c.ValidationBypass = orDefault(c.ValidationBypass, DefaultValidationBypass, minBypass)
	c.IdleTimeout = orDefault(c.IdleTimeout, DefaultIdleTimeout, minIdleTimeout)
	c.HealthInterval = orDefault(c.HealthInterval, DefaultHealthInterval, minHealthInterval)
	c.BreakerProbeInterval = orDefault(c.BreakerProbeInterval, DefaultBreakerProbeInterval, minBreakerProbe)
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = DefaultBreakerFailures
	}
	if c.LeakThreshold == 0 {
		c.LeakThreshold = DefaultLeakThreshold
	}
	if c.LeakThreshold < 0 {
		c.LeakThreshold = 0 // off
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dial == nil {
		c.Dial = client.Dial
	}
	if c.Probe == nil {
		c.Probe = client.ProbeHandshake
	}
	return c, nil
}

func orDefault(v, def, floor time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return max(v, floor)
}
