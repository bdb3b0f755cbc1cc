package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestStatusPageServedWithoutToken: the page at / holds no data, so it loads
// without the token even when the API requires one; the API does not.
func TestStatusPageServedWithoutToken(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	resp, err := http.Get(e.ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<html") {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Get(e.ts.URL + "/api/v1/ib/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status without token: %d", resp.StatusCode)
	}
}
