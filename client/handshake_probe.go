package client

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// ProbeHandshake connects, sends the API handshake, reads the gateway's
// version reply and hangs up, all within ctx. It claims no client id (it
// never sends startApi), so it can test a gateway without disturbing its
// sessions. It returns the server version the gateway chose.
func ProbeHandshake(ctx context.Context, addr string) (int, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, &ConnectError{Addr: addr, Stage: StageTCP, Err: err, timedOut: ctx.Err() != nil}
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer stop()
	fail := func(err error) (int, error) {
		return 0, &ConnectError{Addr: addr, Stage: StageHandshake, Err: err, timedOut: ctx.Err() != nil || isTimeout(err)}
	}
	hello, err := tws.AppendClientHello(nil, tws.ClientHello{MinVersion: tws.MinServerVersion, MaxVersion: tws.MaxServerVersion})
	if err != nil {
		return fail(err)
	}
	if _, err := nc.Write(hello); err != nil {
		return fail(err)
	}
	payload, err := tws.NewFrameReader(nc, 4096).Next()
	if err != nil {
		return fail(err)
	}
	sh, err := tws.ParseServerHello(payload)
	if err != nil {
		return fail(err)
	}
	return sh.Version, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
