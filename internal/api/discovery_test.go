package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDiscovery(t *testing.T) {
	e := newEnv(t, envOptions{token: testToken})
	e.waitHealthy(t)
	const disc = "/api/v1/ib/symbols/discover"

	rep := e.send(t, http.MethodPost, disc, `{"symbol": "AAPL", "force_refresh": false}`)
	d := rep.data(t)
	if rep.status != 200 || d["instrument_type"] != "stock" || d["contract_id"] != 265598.0 || d["symbol"] != "AAPL" || d["cached"] != false {
		t.Fatalf("AAPL: %d %s", rep.status, rep.body)
	}
	head, _ := d["head_timestamp"].(string)
	if ts, err := time.Parse(time.RFC3339, head); err != nil || ts.Year() != 1980 {
		t.Fatalf("AAPL head timestamp %q: %v", head, err)
	}
	rep = e.send(t, http.MethodPost, disc, `{"symbol": "aapl"}`)
	if d := rep.data(t); d["cached"] != true || d["contract_id"] != 265598.0 {
		t.Fatalf("second AAPL lookup not cached: %s", rep.body)
	}
	rep = e.send(t, http.MethodPost, disc, `{"symbol": "AAPL", "force_refresh": true}`)
	if d := rep.data(t); d["cached"] != false {
		t.Fatalf("force_refresh served from the cache: %s", rep.body)
	}

	for _, sym := range []string{"EURUSD", "EUR.USD", "EUR/USD"} {
		rep := e.send(t, http.MethodPost, disc, `{"symbol": "`+sym+`"}`)
		d := rep.data(t)
		if rep.status != 200 || d["instrument_type"] != "forex" || d["ib_symbol"] != "EUR" || d["currency"] != "USD" || d["contract_id"] != 12087792.0 {
			t.Fatalf("%s: %d %s", sym, rep.status, rep.body)
		}
	}
	rep = e.send(t, http.MethodPost, disc, `{"symbol": "ES"}`)
	if d := rep.data(t); rep.status != 200 || d["instrument_type"] != "future" || d["sec_type"] != "FUT" || d["expiry"] == "" {
		t.Fatalf("ES: %d %s", rep.status, rep.body)
	}

	for _, cached := range []bool{false, true} {
		rep = e.send(t, http.MethodPost, disc, `{"symbol": "ZZZZZZ"}`)
		if rep.status != 404 || rep.env.Error.Code != "SYMBOL_NOT_FOUND" {
			t.Fatalf("ZZZZZZ: %d %s", rep.status, rep.body)
		}
		reason, _ := rep.env.Error.Details["ib_reason"].(string)
		if !strings.Contains(strings.ToLower(reason), "no security definition") || rep.env.Error.Details["cached"] != cached {
			t.Fatalf("ZZZZZZ details %v (want cached %t)", rep.env.Error.Details, cached)
		}
	}

	rep = e.get(t, "/api/v1/ib/symbols/discovered")
	d = rep.data(t)
	list, _ := d["symbols"].([]any)
	if d["count"] != float64(len(list)) || len(list) != 5 { // AAPL, EURUSD, EUR.USD, EUR/USD, ES; not ZZZZZZ
		t.Fatalf("discovered: %s", rep.body)
	}
	seen := map[string]bool{}
	for _, it := range list {
		m := it.(map[string]any)
		seen[m["symbol"].(string)] = true
		if m["cached"] != true {
			t.Fatalf("discovered entry not marked cached: %v", m)
		}
	}
	if !seen["AAPL"] || !seen["ES"] || seen["ZZZZZZ"] {
		t.Fatalf("discovered %v", seen)
	}
}
