package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ktrdr/ktrdr/ibsim"
)

// simControlTimeout bounds one control API request.
const simControlTimeout = 5 * time.Second

// simControl drives a running simulator through its control API.
type simControl struct {
	base string
	hc   *http.Client
}

func newSimControl(base string) *simControl {
	return &simControl{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
}

func (s *simControl) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, simControlTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("simulator control %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("simulator control %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("simulator control %s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// addFault activates a fault: spec holds its parameters (and client_ids).
func (s *simControl) addFault(ctx context.Context, kind string, spec map[string]any) (string, error) {
	body := map[string]any{"kind": kind}
	for k, v := range spec {
		body[k] = v
	}
	var res struct {
		ID string `json:"id"`
	}
	if err := s.do(ctx, http.MethodPost, "/v1/faults", body, &res); err != nil {
		return "", err
	}
	return res.ID, nil
}

// clearFaults ends every fault.
func (s *simControl) clearFaults(ctx context.Context) error {
	return s.do(ctx, http.MethodDelete, "/v1/faults", nil, nil)
}

func (s *simControl) state(ctx context.Context) (ibsim.State, error) {
	var st ibsim.State
	return st, s.do(ctx, http.MethodGet, "/v1/state", nil, &st)
}
