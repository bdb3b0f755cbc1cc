package tws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func TestFrameRoundTripPartialReads(t *testing.T) {
	var stream []byte
	payloads := [][]byte{[]byte("49\x001\x00"), bytes.Repeat([]byte("x"), 70000), []byte("1\x00")}
	for _, p := range payloads {
		var err error
		if stream, err = AppendFrame(stream, p); err != nil {
			t.Fatal(err)
		}
	}
	// OneByteReader forces every read to be partial.
	fr := NewFrameReader(iotest.OneByteReader(bytes.NewReader(stream)), 0)
	for i, want := range payloads {
		got, err := fr.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %v (len %d want %d)", i, err, len(got), len(want))
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func TestFrameLimitCheckedBeforeAllocation(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxPayload+1)
	_, err := NewFrameReader(bytes.NewReader(hdr[:]), 0).Next()
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
	// A header announcing 10 MB against a 1 KB limit must cost bytes, not megabytes.
	binary.BigEndian.PutUint32(hdr[:], 10<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := NewFrameReader(bytes.NewReader(hdr[:]), 1024).Next(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("got %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("rejecting 10 oversized frames allocated %d bytes", grew)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxPayload+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
}

func TestFrameTruncated(t *testing.T) {
	for _, in := range [][]byte{{0, 0}, {0, 0, 0, 5, 'a', 'b'}} {
		_, err := NewFrameReader(bytes.NewReader(in), 0).Next()
		if !errors.Is(err, ErrTruncatedFrame) {
			t.Errorf("%v: got %v", in, err)
		}
	}
}

type shortWriter struct{ bytes.Buffer }

func (w *shortWriter) Write(p []byte) (int, error) {
	if len(p) > 3 {
		p = p[:3]
	}
	return w.Buffer.Write(p)
}

func TestWriteFrameShortWrites(t *testing.T) {
	var w shortWriter
	if err := WriteFrame(&w, []byte("hello\x00")); err != nil {
		t.Fatal(err)
	}
	got, err := NewFrameReader(&w, 0).Next()
	if err != nil || string(got) != "hello\x00" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestHandshake(t *testing.T) {
	b, err := AppendClientHello(nil, ClientHello{MinVersion: 157, MaxVersion: 178, Options: "+PACEAPI"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadClientHello(bytes.NewReader(b))
	if err != nil || h != (ClientHello{157, 178, "+PACEAPI"}) {
		t.Fatalf("%+v %v", h, err)
	}
	for _, c := range []struct {
		hello    ClientHello
		want     int
		mismatch bool
	}{
		{ClientHello{MinVersion: 100, MaxVersion: 193}, 178, false},
		{ClientHello{MinVersion: 157, MaxVersion: 160}, 160, false},
		{ClientHello{MinVersion: 100, MaxVersion: 150}, 0, true},
		{ClientHello{MinVersion: 213, MaxVersion: 225}, 0, true},
	} {
		v, err := Negotiate(c.hello, MinServerVersion, MaxServerVersion)
		if v != c.want || (err != nil) != c.mismatch || (err != nil && !errors.Is(err, ErrVersionMismatch)) {
			t.Errorf("%+v: %d %v", c.hello, v, err)
		}
	}
	if h, err := ParseClientHello([]byte("v176")); err != nil || h.MinVersion != 176 || h.MaxVersion != 176 {
		t.Errorf("bare version: %+v %v", h, err)
	}
	for _, bad := range []string{"GET / HTTP/1.1\r\n", "API\x00\x00\x00\x00\x03abc", "API\x00\x00\x00\x00\x07v9..1xx", "API\x00\xff\xff\xff\xff"} {
		if _, err := ReadClientHello(bytes.NewReader([]byte(bad))); !errors.Is(err, ErrBadHandshake) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	sb, _ := AppendServerHello(nil, ServerHello{Version: 178, ConnectionTime: "20240228 17:24:14 EST"})
	p, _ := NewFrameReader(bytes.NewReader(sb), 0).Next()
	if sh, err := ParseServerHello(p); err != nil || sh.Version != 178 || sh.ConnectionTime != "20240228 17:24:14 EST" {
		t.Fatalf("%+v %v", sh, err)
	}
}
