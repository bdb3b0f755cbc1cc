// Package config holds ktrdr serve's configuration: one struct with
// documented defaults, filled from an optional JSON file, then KTRDR_*
// environment variables, then flags (the later wins). Every value is
// checked; an invalid one stops start-up with a message naming it and
// where it came from.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Config is the service's configuration.
type Config struct {
	Listen         string
	IBHost         string
	IBPort         int
	ClientIDBase   int
	Sim            bool
	SimListen      string
	SimControl     string
	SimSeed        int64
	SimTimeScale   float64
	DataDir        string
	Token          string
	HandlerTimeout time.Duration
	LogLevel       string

	MaxConns             int
	MinIdle              int
	ConnectTimeout       time.Duration
	ValidationTimeout    time.Duration
	ValidationBypass     time.Duration
	IdleTimeout          time.Duration
	HealthInterval       time.Duration
	BreakerFailures      int
	BreakerProbeInterval time.Duration
	ClientIDAttempts     int
	ClientIDPause        time.Duration
	ClientIDCooldown     time.Duration
	LeakThreshold        time.Duration
}

// Knob is one setting: its names in the file, the environment and on the
// command line, its default, and why.
type Knob struct {
	Name    string // file key and flag name
	Env     string
	Default string
	Help    string
	set     func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

func integer(p func(*Config) *int, lo, hi int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("not a whole number")
		}
		if n < lo || n > hi {
			return fmt.Errorf("outside %d..%d", lo, hi)
		}
		*p(c) = n
		return nil
	}
}

func duration(p func(*Config) *time.Duration, lo time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 500ms, 3s, 5m)")
		}
		if d < lo {
			return fmt.Errorf("below the minimum %s", lo)
		}
		*p(c) = d
		return nil
	}
}

func boolean(p func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("not true or false")
		}
		*p(c) = b
		return nil
	}
}

// Knobs lists every setting, in the order the README documents them.
var Knobs = []Knob{
	{"listen", "KTRDR_LISTEN", "127.0.0.1:8000", "HTTP API address; loopback unless a token is set", str(func(c *Config) *string { return &c.Listen })},
	{"ib-host", "KTRDR_IB_HOST", "127.0.0.1", "gateway host", str(func(c *Config) *string { return &c.IBHost })},
	{"ib-port", "KTRDR_IB_PORT", "4002", "gateway API port (4002 paper gateway, 4001 live, 7497/7496 TWS)", integer(func(c *Config) *int { return &c.IBPort }, 1, 65535)},
	{"client-id-base", "KTRDR_CLIENT_ID_BASE", "1", "lowest client id the pool uses; 1 is preferred, 2, 3... on error 326", integer(func(c *Config) *int { return &c.ClientIDBase }, 0, 1<<30)},
	{"sim", "KTRDR_SIM", "false", "start the embedded simulator and point the pool at it", boolean(func(c *Config) *bool { return &c.Sim })},
	{"sim-listen", "KTRDR_SIM_LISTEN", "127.0.0.1:0", "the embedded simulator's gateway address (ephemeral port: never clashes with a real gateway)", str(func(c *Config) *string { return &c.SimListen })},
	{"sim-control", "KTRDR_SIM_CONTROL", "127.0.0.1:0", "the embedded simulator's control API address", str(func(c *Config) *string { return &c.SimControl })},
	{"sim-seed", "KTRDR_SIM_SEED", "1", "seed of the simulator's deterministic data", func(c *Config, v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("not a whole number")
		}
		c.SimSeed = n
		return nil
	}},
	{"sim-time-scale", "KTRDR_SIM_TIME_SCALE", "1", "divide the simulator's gateway time windows by this", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f <= 0 || f > 1e6 {
			return fmt.Errorf("not a number in (0, 1000000]")
		}
		c.SimTimeScale = f
		return nil
	}},
	{"data-dir", "KTRDR_DATA_DIR", "./data", "where the symbol cache (and bar store) live", str(func(c *Config) *string { return &c.DataDir })},
	{"token", "KTRDR_TOKEN", "", "bearer token required on /api/v1/ (except /api/v1/health) and /metrics; required to listen beyond loopback", str(func(c *Config) *string { return &c.Token })},
	{"handler-timeout", "KTRDR_HANDLER_TIMEOUT", "5s", "deadline of every HTTP handler", duration(func(c *Config) *time.Duration { return &c.HandlerTimeout }, 100*time.Millisecond)},
	{"log-level", "KTRDR_LOG_LEVEL", "info", "debug, info, warn or error", func(c *Config, v string) error {
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case "debug", "info", "warn", "error":
			c.LogLevel = v
			return nil
		}
		return fmt.Errorf("not one of debug, info, warn, error")
	}},
	{"max-conns", "KTRDR_MAX_CONNS", "4", "pool size; IB allows 32 API clients per gateway in all", integer(func(c *Config) *int { return &c.MaxConns }, 1, 32)},
	{"min-idle", "KTRDR_MIN_IDLE", "1", "warm connections kept open", integer(func(c *Config) *int { return &c.MinIdle }, 0, 32)},
	{"connect-timeout", "KTRDR_CONNECT_TIMEOUT", "3s", "one connect, all stages", duration(func(c *Config) *time.Duration { return &c.ConnectTimeout }, 250*time.Millisecond)},
	{"validation-timeout", "KTRDR_VALIDATION_TIMEOUT", "3s", "the validation round trip before handoff", duration(func(c *Config) *time.Duration { return &c.ValidationTimeout }, 250*time.Millisecond)},
	{"validation-bypass", "KTRDR_VALIDATION_BYPASS", "1s", "skip the round trip for a connection proven alive this recently (never below 1s)", duration(func(c *Config) *time.Duration { return &c.ValidationBypass }, time.Second)},
	{"idle-timeout", "KTRDR_IDLE_TIMEOUT", "300s", "close idle connections beyond min-idle after this", duration(func(c *Config) *time.Duration { return &c.IdleTimeout }, time.Second)},
	{"health-interval", "KTRDR_HEALTH_INTERVAL", "60s", "health loop period (±10% jitter)", duration(func(c *Config) *time.Duration { return &c.HealthInterval }, 100*time.Millisecond)},
	{"breaker-failures", "KTRDR_BREAKER_FAILURES", "3", "consecutive failures that open the circuit breaker", integer(func(c *Config) *int { return &c.BreakerFailures }, 1, 1000)},
	{"breaker-probe-interval", "KTRDR_BREAKER_PROBE_INTERVAL", "1s", "gateway probe period while the breaker is open", duration(func(c *Config) *time.Duration { return &c.BreakerProbeInterval }, 100*time.Millisecond)},
	{"client-id-attempts", "KTRDR_CLIENT_ID_ATTEMPTS", "8", "client ids tried per connect on error 326", integer(func(c *Config) *int { return &c.ClientIDAttempts }, 1, 32)},
	{"client-id-pause", "KTRDR_CLIENT_ID_PAUSE", "250ms", "pause between client-id attempts", duration(func(c *Config) *time.Duration { return &c.ClientIDPause }, time.Millisecond)},
	{"client-id-cooldown", "KTRDR_CLIENT_ID_COOLDOWN", "60s", "rest of an id refused with 326", duration(func(c *Config) *time.Duration { return &c.ClientIDCooldown }, time.Second)},
	{"leak-threshold", "KTRDR_LEAK_THRESHOLD", "60s", "report connections held longer (0 = off)", duration(func(c *Config) *time.Duration { return &c.LeakThreshold }, 0)},
}

// Register adds every knob as a flag on fs (values are read back by Load).
func Register(fs *pflag.FlagSet) {
	for _, k := range Knobs {
		if k.Name == "sim" {
			fs.Bool(k.Name, false, k.Help+" (env "+k.Env+")")
			continue
		}
		fs.String(k.Name, k.Default, k.Help+" (env "+k.Env+")")
	}
	fs.String("config", "", "optional JSON file of settings, keys as the flag names (env KTRDR_CONFIG)")
}

// Error names the setting, the value and its source.
type Error struct {
	Setting, Source, Value string
	Err                    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid %s %q (from %s): %v", e.Setting, e.Value, e.Source, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Load builds the configuration: defaults, then the file (--config or
// KTRDR_CONFIG), then the environment, then flags set on the command line.
func Load(fs *pflag.FlagSet, getenv func(string) string) (Config, error) {
	var c Config
	for _, k := range Knobs {
		if err := k.set(&c, k.Default); err != nil {
			return c, &Error{Setting: k.Name, Source: "default", Value: k.Default, Err: err}
		}
	}
	path := getenv("KTRDR_CONFIG")
	if f := fs.Lookup("config"); f != nil && f.Changed {
		path = f.Value.String()
	}
	if path != "" {
		if err := loadFile(&c, path); err != nil {
			return c, err
		}
	}
	for _, k := range Knobs {
		if v, ok := lookupEnv(getenv, k.Env); ok {
			if err := k.set(&c, v); err != nil {
				return c, &Error{Setting: k.Env, Source: "environment", Value: v, Err: err}
			}
		}
	}
	for _, k := range Knobs {
		if f := fs.Lookup(k.Name); f != nil && f.Changed {
			if err := k.set(&c, f.Value.String()); err != nil {
				return c, &Error{Setting: "--" + k.Name, Source: "flag", Value: f.Value.String(), Err: err}
			}
		}
	}
	return c, c.Validate()
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func loadFile(c *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("config file %s: not a JSON object: %w", path, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		k, ok := knob(key)
		if !ok {
			return fmt.Errorf("config file %s: unknown setting %q", path, key)
		}
		v := string(raw[key])
		var s string
		if json.Unmarshal(raw[key], &s) == nil {
			v = s // strings are taken without their quotes; numbers and booleans as written
		}
		if err := k.set(c, v); err != nil {
			return &Error{Setting: key, Source: "config file " + path, Value: v, Err: err}
		}
	}
	return nil
}

func knob(name string) (Knob, bool) {
	for _, k := range Knobs {
		if k.Name == name {
			return k, true
		}
	}
	return Knob{}, false
}

// ErrTokenRequired: listening beyond loopback without a token.
var ErrTokenRequired = errors.New("listening beyond loopback requires a token (--token or KTRDR_TOKEN)")

// Validate checks relations between settings.
func (c Config) Validate() error {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return &Error{Setting: "listen", Source: "configuration", Value: c.Listen, Err: fmt.Errorf("want host:port")}
	}
	if _, err := strconv.Atoi(port); err != nil {
		return &Error{Setting: "listen", Source: "configuration", Value: c.Listen, Err: fmt.Errorf("port is not a number")}
	}
	if !IsLoopback(host) && c.Token == "" {
		return &Error{Setting: "listen", Source: "configuration", Value: c.Listen, Err: ErrTokenRequired}
	}
	if c.Token != "" && len(c.Token) < 16 {
		return &Error{Setting: "token", Source: "configuration", Value: "(hidden)", Err: fmt.Errorf("shorter than 16 characters")}
	}
	if c.MinIdle > c.MaxConns {
		return &Error{Setting: "min-idle", Source: "configuration", Value: strconv.Itoa(c.MinIdle), Err: fmt.Errorf("above max-conns %d", c.MaxConns)}
	}
	if c.IBHost == "" || strings.ContainsAny(c.IBHost, " /") {
		return &Error{Setting: "ib-host", Source: "configuration", Value: c.IBHost, Err: fmt.Errorf("not a host name or address")}
	}
	return nil
}

// IsLoopback reports whether host names only this machine.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
