package pool

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrClosed: the pool was closed.
	ErrClosed = errors.New("pool: closed")
	// ErrCircuitOpen: recent connects or validations failed, so callers fail
	// fast while the pool probes the gateway in the background.
	ErrCircuitOpen = errors.New("pool: circuit open: the gateway failed recently, retrying in the background")
	// ErrSilentGateway: a validation round trip got no answer in time.
	ErrSilentGateway = errors.New("pool: gateway did not answer the validation round trip")
)

// AcquireStage says where an Acquire was when it failed.
type AcquireStage string

// Acquire stages.
const (
	StageWaiting    AcquireStage = "waiting for a free connection"
	StageConnecting AcquireStage = "connecting"
	StageValidating AcquireStage = "validating"
)

// AcquireError reports a failed Acquire: at which stage, after how long.
type AcquireError struct {
	Stage  AcquireStage
	Waited time.Duration
	Err    error
}

func (e *AcquireError) Error() string {
	return fmt.Sprintf("pool: acquire failed %s after %s: %v", e.Stage, e.Waited.Round(time.Millisecond), e.Err)
}

func (e *AcquireError) Unwrap() error { return e.Err }
