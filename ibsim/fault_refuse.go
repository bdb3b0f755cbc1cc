package ibsim

import "errors"

// Refuse stops listening until cleared: connects are refused, existing
// sessions go on.
type Refuse struct{ Passive }

// Kind implements Fault.
func (*Refuse) Kind() string { return "refuse" }

// Start implements Fault.
func (*Refuse) Start(c Control) { _ = c.SetListening(false) }

// Stop implements Fault.
func (*Refuse) Stop(c Control) { _ = c.SetListening(true) }

// Restart behaves like the gateway's nightly restart: it drops every client,
// refuses connections for DownMS, then listens again and ends.
type Restart struct {
	Passive
	DownMS int64 `json:"down_ms"`
}

// Kind implements Fault.
func (*Restart) Kind() string { return "restart" }

func (r *Restart) validate() error {
	if r.DownMS <= 0 {
		return errors.New("down_ms must be positive")
	}
	return nil
}

// Start implements Fault.
func (r *Restart) Start(c Control) {
	_ = c.SetListening(false)
	c.Drop()
	c.After(msDuration(r.DownMS), c.End)
}

// Stop implements Fault.
func (*Restart) Stop(c Control) { _ = c.SetListening(true) }
