package ibsim

import (
	"errors"
	"slices"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// ClientIDInUse makes the gateway behave as if another application held
// these client ids: startApi with one of them gets error 326, then the
// socket closes.
type ClientIDInUse struct {
	Passive
	ClientIDs []int `json:"client_ids"`
}

// Kind implements Fault.
func (*ClientIDInUse) Kind() string { return "client_id_in_use" }

func (f *ClientIDInUse) validate() error {
	if len(f.ClientIDs) == 0 {
		return errors.New("client_ids is required")
	}
	return nil
}

// Intercept implements Fault.
func (f *ClientIDInUse) Intercept(ev *Event) {
	if ev.Kind == EvStartAPI && slices.Contains(f.ClientIDs, ev.ClientID) {
		ev.Reject = errClientIDInUse()
		ev.Close = true
	}
}

func errClientIDInUse() *tws.ErrorMsg {
	return &tws.ErrorMsg{ReqID: tws.NoRequestID, Code: CodeClientIDInUse,
		Text: "Unable to connect as the client id is already in use. Retry with a unique client id."}
}

// CurrentTimeQuirk reproduces a real gateway quirk: a second reqCurrentTime
// sent within one second of the previous one on the same connection is
// never answered.
type CurrentTimeQuirk struct{ Passive }

// Kind implements Fault.
func (*CurrentTimeQuirk) Kind() string { return "current_time_quirk" }

// Intercept implements Fault.
func (*CurrentTimeQuirk) Intercept(ev *Event) {
	if ev.Kind != EvRequest {
		return
	}
	if _, ok := ev.Message.(*tws.ReqCurrentTime); ok && ev.SincePrevCurrentTime >= 0 && ev.SincePrevCurrentTime < time.Second {
		ev.Silence = true
	}
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
