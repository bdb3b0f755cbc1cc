package ibsim

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// ClientInfo describes one client connection.
type ClientInfo struct {
	ClientID       int       `json:"client_id"`
	Started        bool      `json:"started"` // startApi accepted
	RemoteAddr     string    `json:"remote_addr"`
	ServerVersion  int       `json:"server_version,omitempty"`
	ConnectedSince time.Time `json:"connected_since"`
	MessagesIn     int64     `json:"messages_in"`
	MessagesOut    int64     `json:"messages_out"`
}

// Counters are totals since the simulator started.
type Counters struct {
	ConnectionsAccepted int64 `json:"connections_accepted"`
	HandshakesRejected  int64 `json:"handshakes_rejected"`
	PacingViolations    int64 `json:"pacing_violations"`
	RateViolations      int64 `json:"rate_violations"`
	ErrorsSent          int64 `json:"errors_sent"`
	NoticesSent         int64 `json:"notices_sent"`
	UnknownMessages     int64 `json:"unknown_messages"`
}

// State is a snapshot of the simulator, as GET /v1/state returns it.
type State struct {
	Addr             string       `json:"addr"`
	ServerVersion    int          `json:"server_version"`
	MinServerVersion int          `json:"min_server_version"`
	Listening        bool         `json:"listening"`
	Seed             int64        `json:"seed"`
	TimeScale        float64      `json:"time_scale"`
	Accounts         []string     `json:"accounts"`
	StartedAt        time.Time    `json:"started_at"`
	Clients          []ClientInfo `json:"clients"`
	Faults           []FaultInfo  `json:"faults"`
	Counters         Counters     `json:"counters"`
}

// State returns a snapshot of clients, faults and counters.
func (s *Server) State() State {
	st := State{Addr: s.addr, ServerVersion: s.cfg.MaxVersion, MinServerVersion: tws.MinServerVersion,
		Seed: s.cfg.Seed, TimeScale: s.cfg.TimeScale, Accounts: s.cfg.Accounts, StartedAt: s.start,
		Clients: []ClientInfo{}}
	s.mu.Lock()
	st.Listening = s.listening
	for ss := range s.sessions {
		st.Clients = append(st.Clients, ClientInfo{ClientID: int(ss.clientID.Load()), Started: ss.started.Load(),
			RemoteAddr: ss.remote, ServerVersion: ss.ver, ConnectedSince: ss.since,
			MessagesIn: ss.msgsIn.Load(), MessagesOut: ss.msgsOut.Load()})
	}
	s.mu.Unlock()
	sort.Slice(st.Clients, func(i, j int) bool {
		if st.Clients[i].ClientID != st.Clients[j].ClientID {
			return st.Clients[i].ClientID < st.Clients[j].ClientID
		}
		return st.Clients[i].RemoteAddr < st.Clients[j].RemoteAddr
	})
	st.Faults = s.Faults()
	c := &s.counters
	st.Counters = Counters{ConnectionsAccepted: c.accepted.Load(), HandshakesRejected: c.rejectedHandshakes.Load(),
		PacingViolations: c.pacingViolations.Load(), RateViolations: c.rateViolations.Load(),
		ErrorsSent: c.errorsSent.Load(), NoticesSent: c.noticesSent.Load(), UnknownMessages: c.unknownMessages.Load()}
	return st
}

// maxControlBody bounds a control request body.
const maxControlBody = 64 << 10

// ControlHandler serves the control API:
//
//	GET    /v1/state        clients, active faults, counters
//	GET    /v1/faults       active faults
//	POST   /v1/faults       {"kind": "...", <params>, "duration_ms": n?, "client_ids": [..]?} -> 201 {"id": "..."}
//	DELETE /v1/faults/{id}  end one fault
//	DELETE /v1/faults       end every fault
//
// Errors are JSON {"error": "..."} with a 4xx status naming the problem.
func (s *Server) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.State())
	})
	mux.HandleFunc("GET /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("POST /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxControlBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large or unreadable: "+err.Error())
			return
		}
		spec, err := ParseFaultSpec(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		id, err := s.AddFaultSpec(spec)
		switch {
		case errors.Is(err, ErrBadFault):
			writeError(w, http.StatusBadRequest, err.Error())
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, err.Error())
		default:
			writeJSON(w, http.StatusCreated, map[string]string{"id": id, "kind": spec.Kind})
		}
	})
	mux.HandleFunc("DELETE /v1/faults/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.RemoveFault(r.PathValue("id")); err != nil {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"removed": r.PathValue("id")})
	})
	mux.HandleFunc("DELETE /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"cleared": s.ClearFaults()})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
