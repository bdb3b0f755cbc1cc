package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// netFaults is a TCP proxy between the server and the gateway, run in the
// runner's own process, that injects network faults the gateway itself
// cannot: a network that stops carrying bytes, latency, resets, a thin
// pipe. The server is pointed at the proxy's address.
type netFaults struct {
	proxy *toxiproxy.Proxy

	mu     sync.Mutex
	active []string // toxic names
}

// startNetFaults listens on a free loopback port and forwards to upstream.
func startNetFaults(upstream string) (*netFaults, error) {
	// The bandwidth toxic logs through zerolog's global logger, at trace
	// level, to stderr; nothing else in this process uses zerolog. The
	// level is set atomically, so running proxies are not raced.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "gateway", "127.0.0.1:0", upstream)
	if err := srv.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("network fault proxy: %w", err)
	}
	return &netFaults{proxy: p}, nil
}

// addr is where the server should connect.
func (n *netFaults) addr() string { return n.proxy.Listen }

// toxic is one network fault: a toxiproxy toxic type, the stream it acts
// on (downstream: gateway to server; upstream: server to gateway) and its
// attributes.
type toxic struct {
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Attributes map[string]any `json:"attributes"`
}

// add activates a toxic on every connection, existing and new.
func (n *netFaults) add(t toxic) error {
	n.mu.Lock()
	name := fmt.Sprintf("%s_%s_%d", t.Type, t.Stream, len(n.active))
	n.mu.Unlock()
	body, err := json.Marshal(map[string]any{"name": name, "type": t.Type, "stream": t.Stream, "toxicity": 1.0, "attributes": t.Attributes})
	if err != nil {
		return err
	}
	if _, err := n.proxy.Toxics.AddToxicJson(strings.NewReader(string(body))); err != nil {
		return fmt.Errorf("network fault %s: %w", t.Type, err)
	}
	n.mu.Lock()
	n.active = append(n.active, name)
	n.mu.Unlock()
	return nil
}

// clear removes every toxic: bytes flow normally again.
func (n *netFaults) clear(ctx context.Context) {
	n.mu.Lock()
	names := n.active
	n.active = nil
	n.mu.Unlock()
	for _, name := range names {
		_ = n.proxy.Toxics.RemoveToxic(ctx, name)
	}
}

// setEnabled stops accepting (and closes every proxied connection) or
// listens again on the same address.
func (n *netFaults) setEnabled(on bool) error {
	// Update reads only these three fields of its argument.
	return n.proxy.Update(&toxiproxy.Proxy{Listen: n.proxy.Listen, Upstream: n.proxy.Upstream, Enabled: on})
}

// close stops the proxy and closes every connection through it.
func (n *netFaults) close() {
	n.clear(context.Background())
	n.proxy.Stop()
}
