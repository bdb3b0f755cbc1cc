package ibsim

// Drop closes every client socket at once. It is one-shot: it ends as soon
// as it has acted.
type Drop struct{ Passive }

// Kind implements Fault.
func (*Drop) Kind() string { return "drop" }

// Start implements Fault.
func (*Drop) Start(c Control) {
	c.Drop()
	c.End()
}
