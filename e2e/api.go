package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ktrdr/ktrdr/internal/api"
	"github.com/ktrdr/ktrdr/internal/service"
)

// Operation deadlines, the "hung" line: an operation that takes longer
// has hung, whatever it answered.
const (
	// apiDeadline: the server's handler deadline (5 s) plus its grace for
	// a precise timeout error and the loopback transport.
	apiDeadline = 6 * time.Second
	// apiHardTimeout is when the runner gives up waiting at all.
	apiHardTimeout = 15 * time.Second
	// cliDeadline is the original guide's bound on a CLI command.
	cliDeadline = 30 * time.Second
	// cliHardTimeout is when a CLI process is killed.
	cliHardTimeout = 45 * time.Second
)

// apiClient calls the ktrdr API and records every call as an operation.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
	tr    *http.Transport
	ops   *recorder
}

func newAPIClient(base, token string, ops *recorder) *apiClient {
	tr := &http.Transport{
		MaxIdleConns:        2 * loadWorkers,
		MaxIdleConnsPerHost: 2 * loadWorkers,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, tr: tr, hc: &http.Client{Transport: tr}, ops: ops}
}

// closeIdle drops kept-alive connections, so that the server's goroutine
// count is not inflated by the runner's own idle sockets when sampled.
func (c *apiClient) closeIdle() { c.tr.CloseIdleConnections() }

// reply is one API answer.
type reply struct {
	Status int
	Took   time.Duration
	Raw    []byte
	Env    struct {
		Success *bool           `json:"success"`
		Data    json.RawMessage `json:"data"`
		Error   *struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	envelope bool // the body is a well-formed envelope
}

// ok reports a 2xx answer with success true.
func (r *reply) ok() bool { return r.Status/100 == 2 && r.envelope && *r.Env.Success }

// errCode is the envelope's error code, or "".
func (r *reply) errCode() string {
	if r.Env.Error == nil {
		return ""
	}
	return r.Env.Error.Code
}

// summary describes the answer in a few words for a report.
func (r *reply) summary() string {
	s := fmt.Sprintf("%s, HTTP %d", fmtDur(r.Took), r.Status)
	if c := r.errCode(); c != "" {
		s += " " + c
	}
	if !r.envelope {
		s += " (not an envelope)"
	}
	return s
}

// data decodes the envelope's data.
func (r *reply) data(v any) error {
	if !r.envelope || len(r.Env.Data) == 0 {
		return fmt.Errorf("HTTP %d without data", r.Status)
	}
	return json.Unmarshal(r.Env.Data, v)
}

// call makes one request and records it under name. An error means no
// answer at all (refused, timed out); HTTP errors come back as replies.
func (c *apiClient) call(ctx context.Context, name, method, path string, body any) (*reply, error) {
	ctx, cancel := context.WithTimeout(ctx, apiHardTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
	}
	took := time.Since(start)
	if err != nil {
		c.ops.add(op{kind: opAPI, name: name, took: took, deadline: apiDeadline, failed: true, err: err.Error()})
		return nil, fmt.Errorf("%s %s: no answer after %s: %w", method, path, fmtDur(took), err)
	}
	r := &reply{Status: resp.StatusCode, Took: took, Raw: raw}
	if strings.HasPrefix(path, "/api/") {
		r.envelope = json.Unmarshal(raw, &r.Env) == nil && r.Env.Success != nil
	}
	// 503 and 504 are the service's documented answers for a gateway that
	// is unavailable or slow; any other 5xx, or a body that is not the
	// envelope, is the server failing.
	failed := (r.Status >= 500 && r.Status != http.StatusServiceUnavailable && r.Status != http.StatusGatewayTimeout) ||
		(strings.HasPrefix(path, "/api/") && !r.envelope)
	c.ops.add(op{kind: opAPI, name: name, took: took, deadline: apiDeadline, failed: failed, status: r.Status})
	return r, nil
}

// get is call for a GET named by its path.
func (c *apiClient) get(ctx context.Context, path string) (*reply, error) {
	return c.call(ctx, "GET "+path, http.MethodGet, path, nil)
}

// getData GETs path and decodes a successful answer's data into v.
func (c *apiClient) getData(ctx context.Context, path string, v any) error {
	r, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	if !r.ok() {
		return fmt.Errorf("GET %s: %s", path, r.summary())
	}
	return r.data(v)
}

func (c *apiClient) serviceHealth(ctx context.Context) (api.ServiceHealth, error) {
	var h api.ServiceHealth
	return h, c.getData(ctx, "/api/v1/health", &h)
}

func (c *apiClient) status(ctx context.Context) (service.Status, error) {
	var s service.Status
	return s, c.getData(ctx, "/api/v1/ib/status", &s)
}

// ibHealth returns the live check; it is decoded from a 503 too, whose
// data carries the failed check.
func (c *apiClient) ibHealth(ctx context.Context) (*reply, service.Health, error) {
	var h service.Health
	r, err := c.get(ctx, "/api/v1/ib/health")
	if err != nil {
		return nil, h, err
	}
	if err := r.data(&h); err != nil {
		return r, h, fmt.Errorf("GET /api/v1/ib/health: %s: %v", r.summary(), err)
	}
	return r, h, nil
}

// resilience is the score and each phase's status and reason.
type resilience struct {
	Score  float64
	Phases map[string]phase
	Fields map[string]json.RawMessage
}

type phase struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

func (c *apiClient) resilience(ctx context.Context) (resilience, error) {
	var res resilience
	if err := c.getData(ctx, "/api/v1/ib/resilience", &res.Fields); err != nil {
		return res, err
	}
	res.Phases = map[string]phase{}
	for k, raw := range res.Fields {
		switch {
		case k == "overall_resilience_score":
			_ = json.Unmarshal(raw, &res.Score)
		case strings.HasPrefix(k, "phase_"):
			var p phase
			_ = json.Unmarshal(raw, &p)
			res.Phases[k] = p
		}
	}
	return res, nil
}

// phaseField reads one field of one phase object.
func (r resilience) phaseField(phaseKey, field string, v any) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(r.Fields[phaseKey], &m) != nil || m[field] == nil {
		return false
	}
	return json.Unmarshal(m[field], v) == nil
}

// notWorking lists the phases that are not working, with their reasons.
func (r resilience) notWorking() []string {
	var out []string
	for _, k := range sortedKeys(r.Phases) {
		p := r.Phases[k]
		if p.Status != service.Working {
			out = append(out, fmt.Sprintf("%s %s (%s)", k, p.Status, p.Reason))
		}
	}
	return out
}

// metrics scrapes /metrics and returns the unlabelled samples by name.
func (c *apiClient) metrics(ctx context.Context) (map[string]float64, error) {
	r, err := c.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", r.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.Fields(val)[0], 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// cleanup asks the server to close idle connections (all with force).
func (c *apiClient) cleanup(ctx context.Context, force bool) error {
	r, err := c.call(ctx, "POST /api/v1/ib/cleanup", http.MethodPost, "/api/v1/ib/cleanup", map[string]bool{"force": force})
	if err != nil {
		return err
	}
	if !r.ok() {
		return fmt.Errorf("POST /api/v1/ib/cleanup: %s", r.summary())
	}
	return nil
}

// errNotYet is returned by a poll condition that should be tried again.
var errNotYet = errors.New("not yet")

// poll calls f every interval until it returns nil or a final error, or
// until timeout; it returns how long it took and f's last error.
func poll(ctx context.Context, timeout, interval time.Duration, f func(ctx context.Context) error) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		last = f(ctx)
		if last == nil {
			return time.Since(start), nil
		}
		if !errors.Is(last, errNotYet) && !isTransient(last) {
			return time.Since(start), last
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("not within %s: %w", fmtDur(timeout), last)
		case <-t.C:
		}
	}
}

// isTransient: a request that got no answer because the poll's own
// deadline cut it short is retried, not reported.
func isTransient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded)
}
