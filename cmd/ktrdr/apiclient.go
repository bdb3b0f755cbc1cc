package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// defaultAPIURL is where `ktrdr serve` listens unless told otherwise.
const defaultAPIURL = "http://127.0.0.1:8000"

// maxBody bounds what the client reads of one answer. The largest honest
// answer (a long symbol list) is far below it; anything bigger is a wrong
// server or a broken proxy, and reading it all would only exhaust memory.
const maxBody = 8 << 20

// apiExitHelp is appended to every API command's help: monitoring scripts
// branch on these codes, so they are part of the interface.
const apiExitHelp = `
Exit status:
  0  success
  1  failed or unhealthy: the gateway check failed, the symbol was not found,
     the score is below --min-score, the server failed (5xx), or the answer
     is not a ktrdr API answer
  2  usage: bad flags, arguments or values (caught here, or the server's 400),
     and 401/403 (token missing or wrong): a setup mistake to fix, not a state
     of the gateway to alert on
  3  the API could not be reached, or did not answer within --timeout

The API address comes from --api, else KTRDR_API_URL, else ` + defaultAPIURL + `;
the bearer token from --token, else KTRDR_TOKEN.`

// apiFlags are the flags every API command shares.
type apiFlags struct {
	api, token, output string
	timeout            time.Duration
}

func (f *apiFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.api, "api", defaultAPIURL, "ktrdr API base URL (env KTRDR_API_URL)")
	fs.StringVar(&f.token, "token", "", "bearer token for the API (env KTRDR_TOKEN)")
	fs.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline for the whole command")
	cmd.Long = strings.TrimSpace(cmd.Long + "\n" + apiExitHelp)
}

// apiCommand wraps an API command's body: it checks the shared flags,
// builds the client and bounds the whole command by --timeout.
func apiCommand(f *apiFlags, stdout io.Writer, body func(ctx context.Context, c *apiClient) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		c, err := f.client(cmd, stdout)
		if err != nil {
			return err
		}
		defer c.close()
		ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
		defer cancel()
		return body(ctx, c)
	}
}

// client validates the flags, fills what was not given from the
// environment and builds a client.
func (f *apiFlags) client(cmd *cobra.Command, stdout io.Writer) (*apiClient, error) {
	base, token := f.api, f.token
	if !cmd.Flags().Changed("api") {
		if v := strings.TrimSpace(os.Getenv("KTRDR_API_URL")); v != "" {
			base = v
		}
	}
	if !cmd.Flags().Changed("token") {
		token = os.Getenv("KTRDR_TOKEN")
	}
	if f.output != "table" && f.output != "json" {
		return nil, usageError("-o %q: want table or json", f.output)
	}
	if f.timeout <= 0 {
		return nil, usageError("--timeout %s: must be positive", f.timeout)
	}
	// "host:port" alone is a common way to write an address; it would
	// parse as a URL with the scheme "host".
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError("--api %q: want a URL such as %s", base, defaultAPIURL)
	}
	// A fresh transport per command: its connections close with the
	// command instead of idling in a process-wide pool.
	tr := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		DisableKeepAlives: true,
	}
	return &apiClient{
		base:    strings.TrimRight(u.String(), "/"),
		token:   token,
		timeout: f.timeout,
		json:    f.output == "json",
		color:   colorEnabled(stdout),
		stdout:  stdout,
		tr:      tr,
		hc:      &http.Client{Transport: tr},
	}, nil
}

// apiClient talks to the ktrdr API for one command.
type apiClient struct {
	base    string // without a trailing slash
	token   string
	timeout time.Duration
	json    bool // -o json
	color   bool // stdout is a terminal that accepts colour
	stdout  io.Writer
	tr      *http.Transport
	hc      *http.Client
}

func (c *apiClient) close() { c.tr.CloseIdleConnections() }

// envelope is the API's answer around every payload.
type envelope struct {
	Success *bool           `json:"success"` // a pointer: absent means not our API
	Data    json.RawMessage `json:"data"`
	Error   *apiErrorBody   `json:"error"`
}

// apiErrorBody is the envelope's error.
type apiErrorBody struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

// apiReply is one answer whose body is a well-formed envelope.
type apiReply struct {
	status int
	env    envelope
	raw    []byte
}

// ok reports a success: a 2xx status and success true.
func (r *apiReply) ok() bool {
	return r.status/100 == 2 && r.env.Success != nil && *r.env.Success
}

// hasData reports whether the envelope carries a payload.
func (r *apiReply) hasData() bool {
	d := bytes.TrimSpace(r.env.Data)
	return len(d) > 0 && !bytes.Equal(d, []byte("null"))
}

// call makes one request. It returns an error only when there is no
// envelope to look at: the API was unreachable or silent (exit 3), or the
// answer was not an envelope (exit 1). HTTP error statuses with an
// envelope come back as a reply, for the command to judge.
func (c *apiClient) call(ctx context.Context, method, path string, body any) (*apiReply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	// Whether a connection was made tells a silent server from an
	// unroutable address when the deadline passes.
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
	})
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, usageError("--api %q: %v", c.base, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ktrdr-cli")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(err, connected.Load())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, c.transportError(err, true)
	}
	if len(raw) > maxBody {
		return nil, &exitError{code: exitFailed, err: fmt.Errorf(
			"the server at %s answered HTTP %d with more than %d MiB: not a ktrdr API answer; stopped reading",
			c.base, resp.StatusCode, maxBody>>20)}
	}
	rep := &apiReply{status: resp.StatusCode, raw: raw}
	if err := json.Unmarshal(raw, &rep.env); err != nil || rep.env.Success == nil {
		return nil, c.notEnvelope(resp, raw, err == nil)
	}
	return rep, nil
}

// notEnvelope explains an answer the client cannot use.
func (c *apiClient) notEnvelope(resp *http.Response, raw []byte, isJSON bool) error {
	what := "a body that is not JSON"
	if isJSON {
		what = "JSON that is not a ktrdr API envelope"
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "no content type"
	}
	hint := ""
	if resp.StatusCode == http.StatusNotFound {
		hint = ": is --api pointing at `ktrdr serve`, and is it as new as this client?"
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("the server at %s answered HTTP %d with %s (%s, %d bytes, starting %s)%s",
		c.base, resp.StatusCode, what, ct, len(raw), excerpt(raw, 60), hint)}
}

// excerpt quotes the start of a body, safe to print on a terminal.
func excerpt(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1] // do not split a character
	}
	return fmt.Sprintf("%q", b)
}

// transportError classifies a request that got no answer. Both kinds exit
// 3, so scripts can tell "the API is down" from "the gateway is down".
func (c *apiClient) transportError(err error, connected bool) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		stage := "no connection was made"
		if connected {
			stage = "connected, but no complete answer"
		}
		return &exitError{code: exitUnreached, err: fmt.Errorf("the ktrdr API at %s did not answer within %s (%s)",
			c.base, c.timeout, stage)}
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitUnreached, err: fmt.Errorf("request to the ktrdr API at %s was cancelled", c.base)}
	}
	return &exitError{code: exitUnreached, err: fmt.Errorf("cannot reach the ktrdr API at %s (%s): is `ktrdr serve` running?",
		c.base, transportReason(err))}
}

// transportReason names a transport failure in a few words.
func transportReason(err error) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.As(err, &dns):
		return "cannot resolve " + dns.Name
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection closed before an answer"
	}
	// The innermost error is the informative one; url.Error and
	// net.OpError repeat the method and address already in the message.
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// failure prints a failed reply (the whole envelope with -o json) and
// returns the error that sets the exit code.
func (c *apiClient) failure(rep *apiReply) error {
	if c.json {
		c.printJSON(rep.raw)
	}
	msg, code := "the request failed", ""
	if e := rep.env.Error; e != nil {
		if e.Message != "" {
			msg = e.Message
		}
		code = e.Code
	}
	where := fmt.Sprintf("HTTP %d", rep.status)
	if code != "" {
		where = code + ", " + where
	}
	msg = fmt.Sprintf("%s (%s%s)", msg, where, detailText(rep.env.Error))
	if rep.status == http.StatusNotFound && code == "NOT_FOUND" {
		msg += ": is the server as new as this client?"
	}
	switch rep.status {
	case http.StatusUnauthorized, http.StatusForbidden:
		if c.token == "" {
			return usageError("the ktrdr API at %s requires a token: pass --token or set KTRDR_TOKEN (%s)", c.base, where)
		}
		return usageError("the ktrdr API at %s rejected the token: check --token or KTRDR_TOKEN (%s)", c.base, where)
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
		return &exitError{code: exitUsage, err: errors.New(msg)}
	}
	return &exitError{code: exitFailed, err: errors.New(msg)}
}

// detailText renders the telling error details compactly: the stage, the
// field and the cause. The others repeat the message; -o json has them all.
func detailText(e *apiErrorBody) string {
	if e == nil {
		return ""
	}
	var b strings.Builder
	for _, k := range []string{"stage", "field", "cause"} {
		if v, ok := e.Details[k]; ok && v != "" && v != nil {
			fmt.Fprintf(&b, "; %s: %v", k, v)
		}
	}
	return b.String()
}

// get fetches path and decodes a successful answer's data into v.
func (c *apiClient) get(ctx context.Context, path string, v any) (*apiReply, error) {
	return c.do(ctx, http.MethodGet, path, nil, v)
}

// do makes a request that must succeed and decodes its data into v. With
// -o json it prints the data; the caller renders a table otherwise.
func (c *apiClient) do(ctx context.Context, method, path string, body, v any) (*apiReply, error) {
	rep, err := c.call(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if !rep.ok() {
		return rep, c.failure(rep)
	}
	if err := c.decode(rep, v); err != nil {
		return rep, err
	}
	if c.json {
		c.printJSON(rep.env.Data)
	}
	return rep, nil
}

// decode unmarshals a reply's data, naming the server on mismatch.
func (c *apiClient) decode(rep *apiReply, v any) error {
	if v == nil {
		return nil
	}
	return c.decodeRaw(rep.env.Data, v)
}

// decodeRaw unmarshals part of an answer's data.
func (c *apiClient) decodeRaw(raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return &exitError{code: exitFailed, err: fmt.Errorf("the ktrdr API at %s answered data this client does not understand (%v): are client and server the same version?", c.base, err)}
	}
	return nil
}

// printJSON pretty-prints raw JSON on stdout.
func (c *apiClient) printJSON(raw []byte) {
	var b bytes.Buffer
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		raw = []byte("null")
	}
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		b.Reset()
		b.Write(raw)
	}
	b.WriteByte('\n')
	_, _ = c.stdout.Write(b.Bytes())
}
