package service

import (
	"errors"
	"fmt"
	"time"
)

// Health is the answer of GET /api/v1/ib/health: a live check through the
// pool (acquire plus a validated round trip), reused for up to one second.
type Health struct {
	Healthy               bool       `json:"healthy"`
	ConnectionOK          bool       `json:"connection_ok"`    // a validated connection was acquired
	DataFetchingOK        bool       `json:"data_fetching_ok"` // a request was answered on it
	LastSuccessfulRequest *time.Time `json:"last_successful_request"`
	ErrorMessage          string     `json:"error_message,omitempty"`
	Stage                 string     `json:"stage,omitempty"` // where a failed check stopped
	CheckedAt             time.Time  `json:"checked_at"`
	LatencyMS             float64    `json:"latency_ms"`
	Cached                bool       `json:"cached"` // reused from a check less than a second old
	Degraded              bool       `json:"degraded"`
}

// GatewayInfo describes the gateway as the pool last saw it.
type GatewayInfo struct {
	Host           string     `json:"host"`
	Port           int        `json:"port"`
	ServerVersion  int        `json:"server_version,omitempty"`
	Accounts       []string   `json:"accounts"`
	AccountType    string     `json:"account_type"` // paper, live or unknown
	ConnectedSince *time.Time `json:"connected_since"`
	ConnectionTime string     `json:"connection_time,omitempty"` // the gateway's own stamp
}

// ConnEvent is a connection-level message from the gateway (1100, 2104...).
type ConnEvent struct {
	Time     time.Time `json:"time"`
	Code     int       `json:"code"`
	Text     string    `json:"text"`
	ClientID int       `json:"client_id"`
}

// Status is the answer of GET /api/v1/ib/status.
type Status struct {
	Gateway        GatewayInfo   `json:"gateway"`
	ClientIDsInUse []int         `json:"client_ids_in_use"`
	Connection     ConnMetrics   `json:"connection_metrics"`
	Data           DataMetrics   `json:"data_metrics"`
	Pool           PoolStats     `json:"pool"`
	Events         []ConnEvent   `json:"last_events"`
	Breaker        BreakerInfo   `json:"circuit_breaker"`
	Config         GatewayConfig `json:"config"`
	Health         *Health       `json:"last_health,omitempty"`
	Uptime         float64       `json:"uptime_seconds"`
}

// ConnMetrics summarises connecting.
type ConnMetrics struct {
	Connects          int64 `json:"connects"`
	ConnectAttempts   int64 `json:"connect_attempts"`
	ConnectFailures   int64 `json:"connect_failures"`
	ClientIDConflicts int64 `json:"client_id_conflicts"`
	Degraded          bool  `json:"degraded"`
}

// DataMetrics summarises requests made through the service.
type DataMetrics struct {
	Requests        int64      `json:"requests"`
	RequestFailures int64      `json:"request_failures"`
	LastSuccess     *time.Time `json:"last_success"`
	LastFailure     *time.Time `json:"last_failure"`
	LastError       string     `json:"last_error,omitempty"`
}

// PoolStats is the pool's snapshot in JSON form; durations are milliseconds.
type PoolStats struct {
	Total               int              `json:"total_connections"`
	Idle                int              `json:"idle"`
	InUse               int              `json:"in_use"`
	Connecting          int              `json:"connecting"`
	Waiting             int              `json:"waiting"`
	MaxConns            int              `json:"max_connections"`
	MinIdle             int              `json:"min_idle"`
	Connections         []PoolConn       `json:"connections"`
	ClientIDsInUse      []int            `json:"client_ids_in_use"`
	ClientIDsResting    []int            `json:"client_ids_resting"`
	LowestClientIDInUse int              `json:"lowest_client_id_in_use"`
	LowestFreeClientID  int              `json:"lowest_free_client_id"`
	Acquires            int64            `json:"acquires"`
	AcquireFailures     int64            `json:"acquire_failures"`
	AcquireWaitP50MS    float64          `json:"acquire_wait_p50_ms"`
	AcquireWaitP99MS    float64          `json:"acquire_wait_p99_ms"`
	Validations         int64            `json:"validations"`
	ValidationFailures  int64            `json:"validation_failures"`
	ValidationsBypassed int64            `json:"validations_bypassed"`
	ValidationLastMS    float64          `json:"validation_last_ms"`
	ValidationP50MS     float64          `json:"validation_p50_ms"`
	ValidationP99MS     float64          `json:"validation_p99_ms"`
	LastValidationOK    *time.Time       `json:"last_validation_ok"`
	SilentDetected      int64            `json:"silent_connections_detected"`
	Removals            map[string]int64 `json:"removals_by_reason"`
	HealthRuns          int64            `json:"health_loop_runs"`
	HealthLastRun       *time.Time       `json:"health_loop_last_run"`
	HealthLastChecked   int64            `json:"health_loop_last_checked"`
	HealthLastFailed    int64            `json:"health_loop_last_failed"`
	Degraded            bool             `json:"degraded"`
	DegradedSince       *time.Time       `json:"degraded_since"`
	Leaks               []PoolLeak       `json:"leaks"`
	UptimeSeconds       float64          `json:"uptime_seconds"`
}

// PoolConn is one pooled connection.
type PoolConn struct {
	ClientID   int        `json:"client_id"`
	InUse      bool       `json:"in_use"`
	Label      string     `json:"label,omitempty"`
	AgeSeconds float64    `json:"age_seconds"`
	LastAlive  *time.Time `json:"last_alive"`
}

// PoolLeak is a lease held beyond the leak threshold.
type PoolLeak struct {
	ClientID    int     `json:"client_id"`
	Label       string  `json:"label"`
	HeldSeconds float64 `json:"held_seconds"`
}

// BreakerInfo is the circuit breaker's state (GET /api/v1/ib/circuit-breakers).
type BreakerInfo struct {
	Name                string     `json:"name"`
	State               string     `json:"state"` // closed, open, half-open
	ConsecutiveFailures uint32     `json:"consecutive_failures"`
	FailureThreshold    int        `json:"failure_threshold"`
	Transitions         int64      `json:"transitions"`
	LastTransition      *time.Time `json:"last_transition"`
	LastFrom            string     `json:"last_from,omitempty"`
	LastTo              string     `json:"last_to,omitempty"`
	ProbeIntervalMS     float64    `json:"probe_interval_ms"`
}

// Phase is one resilience phase: its status and the evidence behind it.
type Phase struct {
	Status   string         `json:"status"` // working, degraded or failing
	Reason   string         `json:"reason,omitempty"`
	Evidence []string       `json:"evidence"`
	Fields   map[string]any `json:"-"` // phase-specific fields, merged into the JSON object
}

// Resilience is the answer of GET /api/v1/ib/resilience. Its phase objects
// keep the original system's fields and add the evidence behind each status.
type Resilience struct {
	Phases       map[string]Phase `json:"-"` // keyed phase_1_systematic_validation ...
	Score        float64          `json:"overall_resilience_score"`
	ScoreFormula string           `json:"score_formula"`
	PoolHealth   PoolHealth       `json:"connection_pool_health"`
	CheckedAt    time.Time        `json:"checked_at"`
}

// PoolHealth keeps the original response's connection_pool_health.
type PoolHealth struct {
	TotalConnections   int     `json:"total_connections"`
	HealthyConnections int     `json:"healthy_connections"`
	PoolUptimeSeconds  float64 `json:"pool_uptime_seconds"`
}

// GatewayConfig is what PUT /api/v1/ib/config may change.
type GatewayConfig struct {
	Host         string `json:"host"`
	Port         int    `json:"port"`
	ClientIDBase int    `json:"client_id_base"`
}

// GatewayConfigUpdate is a PUT body: absent fields keep their value.
type GatewayConfigUpdate struct {
	Host         *string `json:"host"`
	Port         *int    `json:"port"`
	ClientIDBase *int    `json:"client_id_base"`
}

// ConfigChange is the answer of PUT /api/v1/ib/config.
type ConfigChange struct {
	Previous    GatewayConfig `json:"previous"`
	Current     GatewayConfig `json:"current"`
	Changed     bool          `json:"changed"`
	Reconnected bool          `json:"reconnected"` // a validated connection to the new gateway was made
	Error       string        `json:"reconnect_error,omitempty"`
}

// CleanupResult is the answer of POST /api/v1/ib/cleanup.
type CleanupResult struct {
	Force           bool      `json:"force"`
	ClosedClientIDs []int     `json:"closed_client_ids"`
	Closed          int       `json:"closed"`
	Before          PoolStats `json:"pool_before"`
	After           PoolStats `json:"pool_after"`
}

// Instrument is a discovered symbol.
type Instrument struct {
	Symbol          string     `json:"symbol"`          // as asked, normalised
	IBSymbol        string     `json:"ib_symbol"`       // IB's symbol (EUR for EUR.USD)
	Type            string     `json:"instrument_type"` // stock, forex, future
	SecType         string     `json:"sec_type"`
	Exchange        string     `json:"exchange"`
	PrimaryExchange string     `json:"primary_exchange,omitempty"`
	Currency        string     `json:"currency"`
	LocalSymbol     string     `json:"local_symbol,omitempty"`
	Description     string     `json:"description"`
	ConID           int64      `json:"contract_id"`
	TimeZone        string     `json:"time_zone"`
	TradingHours    string     `json:"trading_hours"`
	LiquidHours     string     `json:"liquid_hours"`
	HeadTimestamp   *time.Time `json:"head_timestamp"`
	Expiry          string     `json:"expiry,omitempty"`
	Multiplier      string     `json:"multiplier,omitempty"`
	MinTick         float64    `json:"min_tick"`
	DiscoveredAt    time.Time  `json:"discovered_at"`
	Cached          bool       `json:"cached"`
	DiscoveryTimeMS float64    `json:"discovery_time_ms"`
}

// Errors the API maps to HTTP statuses.
var (
	// ErrInvalid: the request is malformed (400).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such symbol or resource (404).
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the gateway is unhealthy or the circuit is open (503).
	ErrUnavailable = errors.New("gateway unavailable")
	// ErrTimeout: a deadline passed (504).
	ErrTimeout = errors.New("deadline exceeded")
)

// Error is a service error: a kind (one of the sentinels above), a stable
// code, a message for people and details for programs.
type Error struct {
	Kind    error
	Code    string // e.g. INVALID_SYMBOL, SYMBOL_NOT_FOUND, CIRCUIT_OPEN, GATEWAY_TIMEOUT
	Message string
	Details map[string]any
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return e.Message
}

// Unwrap lets errors.Is match the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}
