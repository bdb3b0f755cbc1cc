package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/ktrdr/ktrdr/internal/service"
)

// envelope is the shape of every /api/v1 answer, success or not, so a
// client parses one structure and checks one flag.
type envelope struct {
	Success bool      `json:"success"`
	Data    any       `json:"data"`
	Error   *apiError `json:"error"`
}

// apiError is the envelope's error: a stable code for programs, a message
// for people and details (the stage that failed, the offending field...).
type apiError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

// result is what an endpoint answers: a status, data (which may be set on
// failure too, as for an unhealthy gateway) and an error.
type result struct {
	status int
	data   any
	err    *apiError
}

func ok(data any) result { return result{status: http.StatusOK, data: data} }

func fail(status int, code, msg string, details map[string]any) result {
	if details == nil {
		details = map[string]any{}
	}
	return result{status: status, err: &apiError{Code: code, Message: msg, Details: details}}
}

func internalError() result {
	return fail(http.StatusInternalServerError, "INTERNAL", "internal error; the server logged it", nil)
}

// fromError maps a service error to its status: the error's kind decides,
// so the service, not the API, says what a failure means.
func fromError(err error) result {
	var se *service.Error
	if !errors.As(err, &se) {
		if errors.Is(err, context.DeadlineExceeded) {
			return fail(http.StatusGatewayTimeout, "DEADLINE_EXCEEDED", err.Error(), nil)
		}
		return fail(http.StatusInternalServerError, "INTERNAL", err.Error(), nil)
	}
	details := make(map[string]any, len(se.Details)+1)
	for k, v := range se.Details {
		details[k] = v
	}
	if se.Err != nil {
		details["cause"] = se.Err.Error()
	}
	status := http.StatusInternalServerError
	switch {
	case errors.Is(se.Kind, service.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(se.Kind, service.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(se.Kind, service.ErrUnavailable):
		status = http.StatusServiceUnavailable
	case errors.Is(se.Kind, service.ErrTimeout):
		status = http.StatusGatewayTimeout
	}
	code := se.Code
	if code == "" {
		code = http.StatusText(status)
	}
	return fail(status, code, se.Message, details)
}

// writeResult writes res in the envelope. The body is encoded before the
// status is sent, so an encoding failure can still become a 500.
func (s *Server) writeResult(w http.ResponseWriter, res result) {
	env := envelope{Success: res.err == nil, Data: res.data, Error: res.err}
	b, err := json.Marshal(env)
	if err != nil {
		s.log.Error("cannot encode a response", "err", err)
		res = internalError()
		b, _ = json.Marshal(envelope{Error: res.err})
	}
	switch {
	case res.status == http.StatusServiceUnavailable || res.status == http.StatusGatewayTimeout:
		// The gateway's state, reported to the caller; the pool logs its causes.
		s.log.Info("request answered unavailable", "status", res.status, "code", res.err.Code, "message", res.err.Message)
	case res.status >= 500:
		s.log.Error("request failed", "status", res.status, "code", res.err.Code, "message", res.err.Message)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(res.status)
	_, _ = w.Write(append(b, '\n'))
}

// decode reads a JSON body into dst strictly: one object of known fields
// with the right types, nothing after it, at most MaxBodyBytes. An empty
// body leaves dst at its zero value, which every endpoint accepts.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, dst any) *result {
	tooLarge := func() *result {
		res := fail(http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE",
			fmt.Sprintf("the request body exceeds %d bytes", s.opts.MaxBodyBytes), map[string]any{"limit_bytes": s.opts.MaxBodyBytes})
		return &res
	}
	bad := func(code, msg string, details map[string]any) *result {
		res := fail(http.StatusBadRequest, code, msg, details)
		return &res
	}
	if r.ContentLength > s.opts.MaxBodyBytes {
		return tooLarge()
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			res := fail(http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE",
				"the request body must be JSON (Content-Type: application/json)", map[string]any{"content_type": ct})
			return &res
		}
	}
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if errors.Is(err, io.EOF) {
		return nil // empty body
	}
	if err == nil {
		// Exactly one value: anything after it is a malformed or smuggled request.
		var extra json.RawMessage
		if err2 := dec.Decode(&extra); !errors.Is(err2, io.EOF) {
			var mbe *http.MaxBytesError
			if errors.As(err2, &mbe) {
				return tooLarge()
			}
			return bad("TRAILING_DATA", "the body must hold one JSON object and nothing after it", nil)
		}
		return nil
	}
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return tooLarge()
	case errors.As(err, &se):
		return bad("INVALID_JSON", "the body is not valid JSON: "+se.Error(), map[string]any{"offset": se.Offset})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("INVALID_JSON", "the body ends inside a JSON value", nil)
	case errors.As(err, &ute):
		field := ute.Field
		if field == "" {
			field = "(body)"
		}
		return bad("INVALID_FIELD_TYPE", fmt.Sprintf("field %s must be %s, not %s", field, jsonType(ute.Type), ute.Value),
			map[string]any{"field": field, "got": ute.Value})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return bad("UNKNOWN_FIELD", fmt.Sprintf("unknown field %q", field), map[string]any{"field": field})
	}
	return bad("INVALID_BODY", "the body cannot be read as the expected JSON object: "+err.Error(), nil)
}

// jsonType names a Go kind the way a JSON client thinks of it.
func jsonType(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "of another type"
	}
	switch t.Kind().String() {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	}
	return "of another type"
}
