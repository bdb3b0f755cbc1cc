package ibsim

// SilentHandshake accepts TCP and never answers the handshake: the gateway
// state in which naive clients hang in connect. It acts before the client id
// is known, so a client-id limit does not narrow it.
type SilentHandshake struct{ Passive }

// Kind implements Fault.
func (*SilentHandshake) Kind() string { return "silent_handshake" }

// Intercept implements Fault.
func (*SilentHandshake) Intercept(ev *Event) {
	if ev.Kind == EvHandshake {
		ev.Silence = true
	}
}

// Silent completes the handshake and startApi, then never answers any
// request and sends nothing more — no stream update, no notice — on new and
// existing connections alike: the "silent connection" that TCP-level
// checks cannot see.
type Silent struct{ Passive }

// Kind implements Fault.
func (*Silent) Kind() string { return "silent" }

// Intercept implements Fault.
func (*Silent) Intercept(ev *Event) {
	if ev.Kind == EvRequest || (ev.Kind == EvReply && !ev.Startup) {
		ev.Silence = true
	}
}
