package tws

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// handshakePrefix opens every API connection, before any framing.
const handshakePrefix = "API\x00"

// maxHelloLen bounds the client's version frame: real ones are about 20
// bytes, so a larger frame is garbage and must not cost a 16 MiB buffer.
const maxHelloLen = 1024

// Handshake errors.
var (
	// ErrBadHandshake: the peer's opening bytes are not a TWS API handshake.
	ErrBadHandshake = errors.New("tws: malformed handshake")
	// ErrVersionMismatch: no server version both sides accept.
	ErrVersionMismatch = errors.New("tws: no common server version")
)

// ClientHello is what a client announces: the server versions it accepts
// and optional connect options such as "+PACEAPI".
type ClientHello struct {
	MinVersion, MaxVersion int
	Options                string
}

// AppendClientHello appends the client's opening bytes: "API\0" then one
// frame "v<min>..<max>[ <options>]" (a bare "v<n>" when min equals max).
func AppendClientHello(dst []byte, h ClientHello) ([]byte, error) {
	dst = append(dst, handshakePrefix...)
	var v string
	if h.MinVersion == h.MaxVersion {
		v = "v" + strconv.Itoa(h.MinVersion)
	} else {
		v = fmt.Sprintf("v%d..%d", h.MinVersion, h.MaxVersion)
	}
	if h.Options != "" {
		v += " " + h.Options
	}
	return AppendFrame(dst, []byte(v))
}

// ReadClientHello reads and parses a client's opening bytes.
func ReadClientHello(r io.Reader) (ClientHello, error) {
	var p [4]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return ClientHello{}, fmt.Errorf("%w: prefix cut short", ErrBadHandshake)
		}
		return ClientHello{}, err
	}
	if string(p[:]) != handshakePrefix {
		return ClientHello{}, fmt.Errorf("%w: prefix %q, want \"API\\x00\"", ErrBadHandshake, p[:])
	}
	payload, err := NewFrameReader(r, maxHelloLen).Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return ClientHello{}, fmt.Errorf("%w: version frame: %w", ErrBadHandshake, err)
	}
	return ParseClientHello(payload)
}

// ParseClientHello parses the version frame's payload.
func ParseClientHello(payload []byte) (ClientHello, error) {
	s := string(bytes.TrimRight(payload, "\x00"))
	vers, opts, _ := strings.Cut(s, " ")
	bad := func(why string) (ClientHello, error) {
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		return ClientHello{}, fmt.Errorf("%w: %s in %q", ErrBadHandshake, why, s)
	}
	if !strings.HasPrefix(vers, "v") {
		return bad("no leading 'v'")
	}
	lo, hi, ranged := strings.Cut(vers[1:], "..")
	if !ranged {
		hi = lo
	}
	minV, err1 := strconv.Atoi(lo)
	maxV, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || minV <= 0 || maxV < minV || maxV > 1_000_000 {
		return bad("bad version range")
	}
	return ClientHello{MinVersion: minV, MaxVersion: maxV, Options: strings.TrimSpace(opts)}, nil
}

// Negotiate returns the server version a gateway supporting
// serverMin..serverMax answers a client hello with: the highest both sides
// accept, as IB's gateway does.
func Negotiate(h ClientHello, serverMin, serverMax int) (int, error) {
	v := min(h.MaxVersion, serverMax)
	if v < h.MinVersion || v < serverMin {
		return 0, fmt.Errorf("%w: client v%d..%d, server v%d..%d", ErrVersionMismatch,
			h.MinVersion, h.MaxVersion, serverMin, serverMax)
	}
	return v, nil
}

// ServerHello is the gateway's first frame: the negotiated version and its
// connection time, e.g. "20240228 17:24:14 EST" (the zone may be several words).
type ServerHello struct {
	Version        int
	ConnectionTime string
}

// AppendServerHello appends the gateway's first frame.
func AppendServerHello(dst []byte, h ServerHello) ([]byte, error) {
	f, err := NewEncoder(h.Version).Str(h.ConnectionTime).Frame()
	if err != nil {
		return dst, err
	}
	return append(dst, f...), nil
}

// ParseServerHello parses the gateway's first frame.
func ParseServerHello(payload []byte) (ServerHello, error) {
	d := NewDecoder(payload)
	h := ServerHello{Version: d.Int(), ConnectionTime: d.Str()}
	if err := d.Err(); err != nil {
		return ServerHello{}, fmt.Errorf("%w: server reply: %w", ErrBadHandshake, err)
	}
	if h.Version <= 0 {
		return ServerHello{}, fmt.Errorf("%w: server version %d", ErrBadHandshake, h.Version)
	}
	return h, nil
}
