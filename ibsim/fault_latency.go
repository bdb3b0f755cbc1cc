package ibsim

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Latency delays every reply by LatencyMS plus a uniform random 0..JitterMS.
// Replies keep their order: each is due at its queueing time plus its delay.
type Latency struct {
	Passive
	LatencyMS int64 `json:"latency_ms"`
	JitterMS  int64 `json:"jitter_ms"`
}

// Kind implements Fault.
func (*Latency) Kind() string { return "latency" }

func (l *Latency) validate() error {
	if l.LatencyMS < 0 || l.JitterMS < 0 {
		return errors.New("latency_ms and jitter_ms must not be negative")
	}
	if l.LatencyMS == 0 && l.JitterMS == 0 {
		return errors.New("latency_ms or jitter_ms is required")
	}
	if l.LatencyMS+l.JitterMS > 3_600_000 {
		return errors.New("latency_ms + jitter_ms must not exceed one hour")
	}
	return nil
}

// Intercept implements Fault.
func (l *Latency) Intercept(ev *Event) {
	if ev.Kind != EvReply {
		return
	}
	d := time.Duration(l.LatencyMS) * time.Millisecond
	if l.JitterMS > 0 {
		d += time.Duration(rand.Int64N(l.JitterMS+1)) * time.Millisecond
	}
	ev.Delay += d
}
