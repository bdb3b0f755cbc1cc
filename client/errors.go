package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Stage names the step of connecting that failed.
type Stage string

// Connect stages, in order.
const (
	StageTCP       Stage = "tcp connect"
	StageHandshake Stage = "handshake"
	StageStartAPI  Stage = "start api"
)

// ConnectError reports a failed Dial: where it failed, after how long, and why.
type ConnectError struct {
	Addr     string
	Stage    Stage
	Deadline time.Duration // the connect deadline in force
	Err      error
	// timedOut is set when the stage ended because the deadline passed.
	timedOut bool
}

func (e *ConnectError) Error() string {
	dl := e.Deadline.Round(time.Millisecond)
	var what string
	switch {
	case e.timedOut && e.Stage == StageTCP:
		what = fmt.Sprintf("no TCP connection within %s", dl)
	case e.timedOut && e.Stage == StageHandshake:
		what = fmt.Sprintf("TCP connected, no handshake reply within %s", dl)
	case e.timedOut && e.Stage == StageStartAPI:
		what = fmt.Sprintf("handshake done, no nextValidId and managedAccounts within %s", dl)
	default:
		what = fmt.Sprintf("%s failed: %v", e.Stage, e.Err)
	}
	return fmt.Sprintf("connect %s: %s", e.Addr, what)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Timeout reports whether the stage ran out of time (the gateway was silent).
func (e *ConnectError) Timeout() bool { return e.timedOut }

// ClientIDInUseError reports error 326, or a gateway that closed the socket
// right after startApi, which is how it refuses an id it already serves.
type ClientIDInUseError struct {
	ClientID int
	Text     string // IB's text, empty when the socket just closed
}

func (e *ClientIDInUseError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("client id %d refused: the gateway closed the connection right after startApi (treated as IB error 326)", e.ClientID)
	}
	return fmt.Sprintf("client id %d is already in use (IB error 326: %s)", e.ClientID, e.Text)
}

// IBError is an error the gateway answered one request with. It never
// means the connection failed: see ConnectionError for that.
type IBError struct {
	Code  int
	ReqID int64
	Text  string
}

func (e *IBError) Error() string {
	return fmt.Sprintf("IB error %d (request %d): %s", e.Code, e.ReqID, e.Text)
}

// ErrConnectionLost is matched (errors.Is) by every ConnectionError.
var ErrConnectionLost = errors.New("connection to the gateway lost")

// ErrClosed is returned by calls on a connection closed with Close.
var ErrClosed = errors.New("client: connection closed")

// ConnectionError reports that the connection ended (EOF, reset, malformed
// data from the gateway, 326, Close). Every pending request fails with it
// at once.
type ConnectionError struct {
	Err error
}

func (e *ConnectionError) Error() string { return fmt.Sprintf("%v: %v", ErrConnectionLost, e.Err) }

func (e *ConnectionError) Unwrap() []error { return []error{ErrConnectionLost, e.Err} }

// TimeoutError reports a request whose context ended before its answer.
// It wraps the context's error (context.DeadlineExceeded or Canceled).
type TimeoutError struct {
	Op    string
	After time.Duration
	Err   error
}

func (e *TimeoutError) Error() string {
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return fmt.Sprintf("%s: no answer within %s", e.Op, e.After.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s: cancelled after %s", e.Op, e.After.Round(time.Millisecond))
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// ErrSlowConsumer ends a bar stream whose reader fell too far behind.
var ErrSlowConsumer = errors.New("client: stream consumer too slow, updates would be lost")
