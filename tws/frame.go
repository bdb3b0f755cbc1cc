package tws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxPayload is the largest message payload the protocol allows (24 bits).
// Anything longer is a protocol error, never an allocation.
const MaxPayload = 0xFFFFFF

// Framing errors. They are wrapped with detail; test with errors.Is.
var (
	// ErrFrameTooLarge: a length prefix above the reader's limit.
	ErrFrameTooLarge = errors.New("tws: frame length exceeds limit")
	// ErrTruncatedFrame: the stream ended inside a frame.
	ErrTruncatedFrame = errors.New("tws: stream ended inside a frame")
)

// FrameReader reads length-prefixed frames from a stream. The payload it
// returns is only valid until the next call to Next, which lets a reader loop
// run without an allocation per message.
type FrameReader struct {
	r     io.Reader
	limit int
	hdr   [4]byte
	buf   []byte
}

// NewFrameReader returns a reader of frames no longer than limit bytes
// (MaxPayload when limit is 0 or above it). Wrap r in a bufio.Reader when it
// is a socket: Next makes two reads per frame.
func NewFrameReader(r io.Reader, limit int) *FrameReader {
	if limit <= 0 || limit > MaxPayload {
		limit = MaxPayload
	}
	return &FrameReader{r: r, limit: limit}
}

// Next reads one frame and returns its payload. It returns io.EOF only when
// the stream ends cleanly between frames; a stream that ends inside a frame
// is ErrTruncatedFrame, and a length above the limit is ErrFrameTooLarge,
// detected before anything is allocated for the payload.
func (fr *FrameReader) Next() ([]byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: length prefix cut short", ErrTruncatedFrame)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[:])
	if n > uint32(fr.limit) {
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, fr.limit)
	}
	if cap(fr.buf) < int(n) {
		// Grow to the frame size only; frames are usually small and a
		// one-off large frame should not pin a huge buffer forever.
		fr.buf = make([]byte, n, max(int(n), 4096))
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, fr.buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: wanted %d payload bytes", ErrTruncatedFrame, n)
		}
		return nil, err
	}
	if cap(fr.buf) > 1<<20 && n < 1<<16 {
		fr.buf = nil // release a buffer grown for one exceptional frame
	}
	return fr.buf, nil
}

// AppendFrame appends payload to dst with its length prefix.
func AppendFrame(dst, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, len(payload), MaxPayload)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...), nil
}

// WriteFrame writes one frame to w in a single Write call, so frames written
// by concurrent callers holding a shared lock never interleave.
func WriteFrame(w io.Writer, payload []byte) error {
	buf, err := AppendFrame(make([]byte, 0, 4+len(payload)), payload)
	if err != nil {
		return err
	}
	return writeFull(w, buf)
}

// writeFull writes all of buf, looping on short writes from writers that
// report them without an error (a net.Conn never does, but a test double may).
func writeFull(w io.Writer, buf []byte) error {
	for len(buf) > 0 {
		n, err := w.Write(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		buf = buf[n:]
	}
	return nil
}
