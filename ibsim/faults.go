package ibsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// A Fault changes how the simulated gateway behaves while it is active.
// Each kind is one small type in its own file; faults combine freely, and
// any of them can be limited to some client ids and to a duration (see
// AddFault). Embed Passive to implement only the hooks a fault needs.
type Fault interface {
	// Kind is the fault's name in the control API, e.g. "latency".
	Kind() string
	// Start runs once when the fault is added. One-shot faults (drop,
	// garbage) do all their work here and end themselves with c.End.
	Start(c Control)
	// Stop runs once when the fault is cleared or its duration ends.
	Stop(c Control)
	// Intercept is called for every event of every client session the fault
	// applies to, and records its decision in ev.
	Intercept(ev *Event)
}

// Passive implements every Fault hook as a no-op.
type Passive struct{}

// Start implements Fault.
func (Passive) Start(Control) {}

// Stop implements Fault.
func (Passive) Stop(Control) {}

// Intercept implements Fault.
func (Passive) Intercept(*Event) {}

// Control is what a fault may do to the gateway. Every method that targets
// clients reaches only the clients the fault applies to.
type Control interface {
	// Send queues m to every client session past startApi.
	Send(m tws.Message)
	// SendRaw writes bytes as they are, bypassing framing, to every session.
	SendRaw(b []byte)
	// Drop closes every client socket now.
	Drop()
	// SetListening stops (false) or resumes (true) accepting connections.
	SetListening(on bool) error
	// After runs f after d unless the fault ends or the server closes first.
	After(d time.Duration, f func())
	// End removes the fault, running its Stop hook.
	End()
}

// EventKind says which moment of a client session an Event describes.
type EventKind int

// Session moments faults can intercept.
const (
	// EvHandshake: a client sent its handshake; Silence leaves it unanswered.
	EvHandshake EventKind = iota
	// EvStartAPI: a client sent startApi; Reject answers with an error and closes.
	EvStartAPI
	// EvRequest: a request arrived; Silence drops it, Reject answers it with an error.
	EvRequest
	// EvReply: a message is about to be queued to the client; Delay postpones it.
	EvReply
)

// Event is one moment of a client session offered to the active faults.
// Faults read the first group of fields and set the second.
type Event struct {
	Kind     EventKind
	ClientID int         // 0 before startApi
	Message  tws.Message // the request (EvRequest) or the reply (EvReply)
	// SincePrevCurrentTime is, for a reqCurrentTime, the time since the
	// previous one on this connection; negative for the first.
	SincePrevCurrentTime time.Duration
	// Startup marks the replies to startApi (accounts, next id, farm
	// notices, a refusal): the greeting even a silent gateway completes.
	Startup bool

	Silence bool          // never answer (EvReply: drop the reply)
	Reject  *tws.ErrorMsg // answer with this error instead
	Close   bool          // close the connection after Reject
	Delay   time.Duration // added before the reply is written
}

// FaultOption narrows a fault when it is added.
type FaultOption func(*activeFault)

// ForClients limits a fault to sessions with these client ids. Faults that
// act before the client id is known (silent_handshake, refuse, restart)
// ignore the limit.
func ForClients(ids ...int) FaultOption {
	return func(a *activeFault) { a.clientIDs = slices.Clone(ids) }
}

// For ends the fault after d.
func For(d time.Duration) FaultOption {
	return func(a *activeFault) { a.duration = d }
}

// FaultInfo describes an active fault, as GET /v1/state lists it.
type FaultInfo struct {
	ID        string         `json:"id"`
	Kind      string         `json:"kind"`
	Params    map[string]any `json:"params,omitempty"`
	ClientIDs []int          `json:"client_ids,omitempty"`
	Since     time.Time      `json:"since"`
	ExpiresAt *time.Time     `json:"expires_at,omitempty"`
}

// activeFault is a fault with its scope and lifetime.
type activeFault struct {
	id        string
	fault     Fault
	clientIDs []int
	duration  time.Duration
	since     time.Time
	timers    []*time.Timer
	ended     bool
}

func (a *activeFault) applies(clientID int) bool {
	return len(a.clientIDs) == 0 || slices.Contains(a.clientIDs, clientID)
}

func (a *activeFault) info() FaultInfo {
	fi := FaultInfo{ID: a.id, Kind: a.fault.Kind(), ClientIDs: a.clientIDs, Since: a.since}
	if a.duration > 0 {
		t := a.since.Add(a.duration)
		fi.ExpiresAt = &t
	}
	// Parameters are the fault's exported fields, as JSON spells them.
	if b, err := json.Marshal(a.fault); err == nil {
		var m map[string]any
		if json.Unmarshal(b, &m) == nil && len(m) > 0 {
			fi.Params = m
		}
	}
	return fi
}

// ErrBadFault reports a fault specification the simulator cannot apply.
var ErrBadFault = errors.New("ibsim: bad fault")

// faultKinds builds each fault kind from its JSON parameters. The table is
// the one place a new kind is registered.
var faultKinds = map[string]func() Fault{
	"silent_handshake":   func() Fault { return &SilentHandshake{} },
	"silent":             func() Fault { return &Silent{} },
	"latency":            func() Fault { return &Latency{} },
	"drop":               func() Fault { return &Drop{} },
	"refuse":             func() Fault { return &Refuse{} },
	"restart":            func() Fault { return &Restart{} },
	"connectivity_loss":  func() Fault { return &ConnectivityLoss{} },
	"farm_broken":        func() Fault { return &FarmBroken{} },
	"client_id_in_use":   func() Fault { return &ClientIDInUse{} },
	"current_time_quirk": func() Fault { return &CurrentTimeQuirk{} },
	"garbage":            func() Fault { return &Garbage{} },
}

// FaultKinds lists the kinds the control API accepts, sorted.
func FaultKinds() []string {
	ks := make([]string, 0, len(faultKinds))
	for k := range faultKinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// validator is implemented by faults whose parameters need checking.
type validator interface{ validate() error }

// FaultSpec is a fault as the control API receives it: {"kind": "...",
// <params>, "duration_ms": n?, "client_ids": [..]?}.
type FaultSpec struct {
	Kind       string
	DurationMS int64
	ClientIDs  []int
	Params     map[string]json.RawMessage
}

// ParseFaultSpec reads a control-API fault body, naming any problem.
func ParseFaultSpec(body []byte) (FaultSpec, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return FaultSpec{}, fmt.Errorf("%w: body is not a JSON object: %v", ErrBadFault, err)
	}
	spec := FaultSpec{Params: map[string]json.RawMessage{}}
	for k, v := range raw {
		var err error
		switch k {
		case "kind":
			err = json.Unmarshal(v, &spec.Kind)
		case "duration_ms":
			err = json.Unmarshal(v, &spec.DurationMS)
			if err == nil && spec.DurationMS < 0 {
				err = errors.New("must not be negative")
			}
		case "client_ids":
			err = json.Unmarshal(v, &spec.ClientIDs)
		default:
			spec.Params[k] = v
		}
		if err != nil {
			return FaultSpec{}, fmt.Errorf("%w: field %q: %v", ErrBadFault, k, err)
		}
	}
	// For client_id_in_use, client_ids names the ids held, not a scope.
	if spec.Kind == "client_id_in_use" && raw["client_ids"] != nil {
		spec.Params["client_ids"] = raw["client_ids"]
		spec.ClientIDs = nil
	}
	if spec.Kind == "" {
		return FaultSpec{}, fmt.Errorf("%w: field \"kind\" is required (one of %s)", ErrBadFault, strings.Join(FaultKinds(), ", "))
	}
	return spec, nil
}

// Build turns a spec into a fault and its options.
func (spec FaultSpec) Build() (Fault, []FaultOption, error) {
	mk, ok := faultKinds[spec.Kind]
	if !ok {
		return nil, nil, fmt.Errorf("%w: unknown kind %q (one of %s)", ErrBadFault, spec.Kind, strings.Join(FaultKinds(), ", "))
	}
	f := mk()
	params, _ := json.Marshal(spec.Params)
	dec := json.NewDecoder(strings.NewReader(string(params)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(f); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadFault, spec.Kind, err)
	}
	if v, ok := f.(validator); ok {
		if err := v.validate(); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadFault, spec.Kind, err)
		}
	}
	var opts []FaultOption
	if spec.DurationMS > 0 {
		opts = append(opts, For(time.Duration(spec.DurationMS)*time.Millisecond))
	}
	for _, id := range spec.ClientIDs {
		if id < 0 {
			return nil, nil, fmt.Errorf("%w: client id %d is negative", ErrBadFault, id)
		}
	}
	if len(spec.ClientIDs) > 0 {
		opts = append(opts, ForClients(spec.ClientIDs...))
	}
	return f, opts, nil
}

// requestID returns the request id a client message carries, or NoRequestID.
func requestID(m tws.Message) int64 {
	switch m := m.(type) {
	case *tws.ReqContractDetails:
		return m.ReqID
	case *tws.ReqHistoricalData:
		return m.ReqID
	case *tws.ReqHeadTimestamp:
		return m.ReqID
	case *tws.ReqMatchingSymbols:
		return m.ReqID
	case *tws.CancelHistoricalData:
		return m.ReqID
	case *tws.CancelHeadTimestamp:
		return m.ReqID
	}
	return tws.NoRequestID
}
