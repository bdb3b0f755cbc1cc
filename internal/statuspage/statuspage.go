// Package statuspage serves ktrdr's live status page: one self-contained
// HTML document (styles and script inline, no external fetches) that polls
// GET /api/v1/ib/status and GET /api/v1/ib/resilience every two seconds
// and shows the gateway, the pool, each resilience phase with its
// evidence, the score and its recent history, the circuit breaker and the
// last connection events.
//
// The page carries no data of its own: everything it shows comes from the
// API, with the bearer token the operator types in when the API answers
// 401. Serving the page itself therefore needs no token.
package statuspage

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
)

//go:embed index.html
var page []byte

// Handler returns the handler for the page. It answers GET and HEAD on "/"
// only, so it can be mounted on a mux's root ("/{$}") without shadowing
// other paths; anything else is 404, other methods 405.
func Handler() http.Handler {
	return &handler{page: page, csp: contentSecurityPolicy(page)}
}

type handler struct {
	page []byte
	csp  string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(h.page)))
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	// A new release must show at once: the page is small and not worth caching.
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(h.page)
	}
}

// contentSecurityPolicy allows exactly the page's own inline script and
// style (by hash) and requests to its own origin, so that even if a
// gateway message carried markup, nothing injected could run or load.
func contentSecurityPolicy(doc []byte) string {
	return fmt.Sprintf("default-src 'none'; script-src '%s'; style-src '%s'; connect-src 'self'; img-src data:; "+
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
		inlineHash(doc, "script"), inlineHash(doc, "style"))
}

// inlineHash is the CSP source expression for the content of the
// document's first <tag>...</tag> element. The document is embedded, so a
// missing element is a build mistake and panics at start-up.
func inlineHash(doc []byte, tag string) string {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	i := bytes.Index(doc, open)
	j := bytes.Index(doc, end)
	if i < 0 || j < i {
		panic("statuspage: index.html has no <" + tag + "> element")
	}
	sum := sha256.Sum256(doc[i+len(open) : j])
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}
