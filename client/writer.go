package client

import (
	"context"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// outMsg is one message waiting to be written.
type outMsg struct {
	msg tws.Message
	ctx context.Context // a request whose caller gave up is not sent
}

// writer owns the socket's write side. It paces messages so that no
// one-second window ever holds more than cfg.MaxRate of them: a sliding
// window, not a token bucket, whose bursts could exceed IB's 50/s.
type writer struct {
	c     *Conn
	queue chan outMsg
	sent  []time.Time // send times of the last MaxRate messages, oldest first
}

func newWriter(c *Conn) *writer {
	return &writer{c: c, queue: make(chan outMsg, 1024)}
}

// send queues m, waiting for room while ctx lasts. Unless detached, a
// message whose ctx ends before its turn is not written.
func (w *writer) send(ctx context.Context, m tws.Message, detached bool) error {
	om := outMsg{msg: m, ctx: ctx}
	if detached {
		om.ctx = context.Background()
	}
	select {
	case w.queue <- om:
		return nil
	case <-w.c.done:
		return w.c.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trySend queues m if there is room, for cancels sent on a caller's way out.
func (w *writer) trySend(m tws.Message) {
	select {
	case w.queue <- outMsg{msg: m, ctx: context.Background()}:
	default:
		w.c.log.Warn("dropping cancel: write queue full", "msg", m.MsgID())
	}
}

func (w *writer) loop() {
	defer w.c.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var om outMsg
		select {
		case <-w.c.done:
			return
		case om = <-w.queue:
		}
		if len(w.sent) == w.c.cfg.MaxRate {
			if wait := time.Until(w.sent[0].Add(time.Second)); wait > 0 {
				timer.Reset(wait)
				select {
				case <-w.c.done:
					return
				case <-timer.C:
				}
			}
			w.sent = append(w.sent[:0], w.sent[1:]...)
		}
		if om.ctx.Err() != nil {
			continue // the caller gave up while the message waited
		}
		frame, err := tws.Encode(om.msg, w.c.version)
		if err != nil {
			w.c.log.Error("cannot encode request", "msg", om.msg.MsgID(), "err", err)
			continue
		}
		_ = w.c.nc.SetWriteDeadline(time.Now().Add(w.c.cfg.WriteTimeout))
		if _, err := w.c.nc.Write(frame); err != nil {
			w.c.fail(err)
			return
		}
		w.sent = append(w.sent, time.Now())
	}
}
