package tws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Field decoding errors; the Decoder wraps them with the field's position.
var (
	// ErrUnderrun: a message ended before a field its layout requires.
	ErrUnderrun = errors.New("tws: message has fewer fields than its layout")
	// ErrBadField: a field does not parse as the type its layout requires.
	ErrBadField = errors.New("tws: malformed field")
	// ErrUnterminated: the payload does not end with a NUL field separator.
	ErrUnterminated = errors.New("tws: last field not NUL-terminated")
	// ErrTooMany: a count field announces more items than the message can hold.
	ErrTooMany = errors.New("tws: item count exceeds what the message holds")
)

// Encoder builds one message payload: NUL-terminated ASCII fields. Its Frame
// method returns the payload with its length prefix, ready for one Write.
type Encoder struct {
	buf []byte
}

// NewEncoder returns an encoder whose payload begins with message id id. The
// first four bytes are reserved for the length prefix Frame fills in.
func NewEncoder(id int) *Encoder {
	e := &Encoder{buf: make([]byte, 4, 64)}
	return e.Int(id)
}

// Reset starts a new message with id id, keeping the buffer.
func (e *Encoder) Reset(id int) *Encoder {
	if cap(e.buf) < 4 {
		e.buf = make([]byte, 4, 64)
	}
	e.buf = e.buf[:4]
	return e.Int(id)
}

// Str appends a text field. NUL bytes inside s would split the field, so they
// are replaced by spaces rather than corrupting the message.
func (e *Encoder) Str(s string) *Encoder {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", " ")
	}
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, 0)
	return e
}

// Int appends an integer field.
func (e *Encoder) Int(v int) *Encoder { return e.Int64(int64(v)) }

// Int64 appends an integer field.
func (e *Encoder) Int64(v int64) *Encoder {
	e.buf = strconv.AppendInt(e.buf, v, 10)
	e.buf = append(e.buf, 0)
	return e
}

// Float appends a floating-point field in its shortest exact decimal form.
// Non-finite values are sent empty, IB's spelling of "unset".
func (e *Encoder) Float(v float64) *Encoder {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
	case math.Abs(v) >= 1e21:
		e.buf = strconv.AppendFloat(e.buf, v, 'g', -1, 64)
	default:
		e.buf = strconv.AppendFloat(e.buf, v, 'f', -1, 64)
	}
	e.buf = append(e.buf, 0)
	return e
}

// Bool appends 1 or 0.
func (e *Encoder) Bool(v bool) *Encoder {
	if v {
		e.buf = append(e.buf, '1', 0)
	} else {
		e.buf = append(e.buf, '0', 0)
	}
	return e
}

// Payload returns the fields written so far, without the length prefix.
func (e *Encoder) Payload() []byte { return e.buf[4:] }

// Frame returns the message with its length prefix. The slice aliases the
// encoder's buffer until the next Reset.
func (e *Encoder) Frame() ([]byte, error) {
	n := len(e.buf) - 4
	if n > MaxPayload {
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, MaxPayload)
	}
	binary.BigEndian.PutUint32(e.buf[:4], uint32(n))
	return e.buf, nil
}

// Decoder reads the fields of one payload in order. It is lenient where real
// clients differ (numbers as "0", "0.0", " 1 " or empty for unset) and strict
// where a mistake would corrupt data (a missing field, a non-number in a
// number field). The first error sticks: later reads return zero values and
// Err reports it, so a message decoder can read a whole layout and check once.
type Decoder struct {
	s   string
	pos int
	n   int // index of the next field, for error messages
	err error
}

// NewDecoder returns a decoder over payload. Strings it returns share one
// copy of payload, so decoding allocates once per message, not per field.
func NewDecoder(payload []byte) *Decoder {
	d := &Decoder{}
	d.Reset(string(payload))
	return d
}

// Reset makes d decode s from the start.
func (d *Decoder) Reset(s string) {
	*d = Decoder{s: s}
	if len(s) > 0 && s[len(s)-1] != 0 {
		d.err = ErrUnterminated
	}
}

// Err returns the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

// Remaining reports how many fields are left unread.
func (d *Decoder) Remaining() int {
	if d.err != nil {
		return 0
	}
	return strings.Count(d.s[d.pos:], "\x00")
}

// AtEnd reports whether every field was read.
func (d *Decoder) AtEnd() bool { return d.err == nil && d.pos >= len(d.s) }

func (d *Decoder) fail(what, field string) {
	if d.err == nil {
		if len(field) > 32 {
			field = field[:32] + "..."
		}
		d.err = fmt.Errorf("%w: field %d: %s %q", ErrBadField, d.n, what, field)
	}
}

// Str reads a text field.
func (d *Decoder) Str() string {
	if d.err != nil {
		return ""
	}
	if d.pos >= len(d.s) {
		d.err = fmt.Errorf("%w: field %d missing", ErrUnderrun, d.n)
		return ""
	}
	i := strings.IndexByte(d.s[d.pos:], 0)
	// Reset guarantees the payload ends with NUL, so i >= 0.
	f := d.s[d.pos : d.pos+i]
	d.pos += i + 1
	d.n++
	return f
}

// Skip reads and discards n fields.
func (d *Decoder) Skip(n int) {
	for i := 0; i < n && d.err == nil; i++ {
		d.Str()
	}
}

// Int reads an integer field; empty means 0.
func (d *Decoder) Int() int {
	v := d.Int64()
	if v > math.MaxInt32 || v < math.MinInt32 {
		// IB's ints are 32-bit; a wider value is nonsense, not data.
		d.fail("int out of range", strconv.FormatInt(v, 10))
		return 0
	}
	return int(v)
}

// Int64 reads an integer field; empty means 0. "12.0" is accepted as 12
// because some clients format integers as floats.
func (d *Decoder) Int64() int64 {
	f := strings.TrimSpace(d.Str())
	if d.err != nil || f == "" {
		return 0
	}
	v, err := strconv.ParseInt(f, 10, 64)
	if err == nil {
		return v
	}
	x, ferr := strconv.ParseFloat(f, 64)
	if ferr != nil || x != math.Trunc(x) || math.Abs(x) > 1<<53 {
		d.fail("not an integer", f)
		return 0
	}
	return int64(x)
}

// Float reads a floating-point field; empty means 0. IB's "unset" double
// (math.MaxFloat64) and infinities pass through as themselves.
func (d *Decoder) Float() float64 {
	f := strings.TrimSpace(d.Str())
	if d.err != nil || f == "" {
		return 0
	}
	v, err := strconv.ParseFloat(f, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return v // ±Inf or 0 for out-of-range exponents: keep the value
		}
		d.fail("not a number", f)
		return 0
	}
	return v
}

// Bool reads a boolean field: "1"/"0", "true"/"false", empty is false.
func (d *Decoder) Bool() bool {
	f := strings.TrimSpace(d.Str())
	if d.err != nil {
		return false
	}
	switch strings.ToLower(f) {
	case "", "0", "false":
		return false
	case "1", "true":
		return true
	}
	d.fail("not a boolean", f)
	return false
}

// Count reads an item count and checks it against the fields left, given
// that each item takes at least perItem fields. A forged huge count is
// rejected before any slice is allocated for it.
func (d *Decoder) Count(perItem int) int {
	n := d.Int()
	if d.err != nil {
		return 0
	}
	if n < 0 {
		d.fail("negative count", strconv.Itoa(n))
		return 0
	}
	if perItem < 1 {
		perItem = 1
	}
	// Every field takes at least one byte (its NUL), so this bound is cheap.
	if n > (len(d.s)-d.pos)/perItem {
		d.err = fmt.Errorf("%w: %d items of %d fields, %d bytes left", ErrTooMany, n, perItem, len(d.s)-d.pos)
		return 0
	}
	return n
}
