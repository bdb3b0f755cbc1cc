package tws

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// FuzzFrameReader feeds arbitrary streams to the frame reader: it must return
// payloads within its limit or an error, never panic or over-allocate.
func FuzzFrameReader(f *testing.F) {
	for _, m := range incomingSamples {
		fr, _ := Encode(m, MaxServerVersion)
		f.Add(fr)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 4096
		fr := NewFrameReader(bytes.NewReader(data), limit)
		for range 1000 {
			p, err := fr.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrTruncatedFrame) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(p) > limit {
				t.Fatalf("payload %d over limit", len(p))
			}
		}
	})
}

// FuzzHandshake feeds arbitrary bytes to both sides' handshake parsers.
func FuzzHandshake(f *testing.F) {
	b, _ := AppendClientHello(nil, ClientHello{MinVersion: 157, MaxVersion: 178, Options: "+PACEAPI"})
	f.Add(b)
	f.Add([]byte("API\x00\x00\x00\x00\x04v176"))
	f.Add([]byte("178\x0020240228 17:24:14 EST\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := ReadClientHello(bytes.NewReader(data)); err == nil {
			if h.MinVersion <= 0 || h.MaxVersion < h.MinVersion {
				t.Fatalf("accepted bad range %+v", h)
			}
			if v, err := Negotiate(h, MinServerVersion, MaxServerVersion); err == nil && (v < h.MinVersion || v > h.MaxVersion) {
				t.Fatalf("negotiated %d outside %+v", v, h)
			}
		}
		if h, err := ParseServerHello(data); err == nil && h.Version <= 0 {
			t.Fatalf("accepted version %d", h.Version)
		}
	})
}

// roundTripProperty checks that a decoded message re-encodes to something
// that decodes to the same value: the decoder loses nothing it accepted.
func roundTripProperty(t *testing.T, payload []byte, ver int, decode func([]byte, int) (Message, error)) {
	m, err := decode(payload, ver)
	if err != nil {
		var unk *UnknownMessageError
		var de *DecodeError
		if !errors.As(err, &unk) && !errors.As(err, &de) {
			t.Fatalf("untyped error %T: %v", err, err)
		}
		return
	}
	// NaN never equals itself and infinities are sent as "unset": both are
	// legitimately lossy, so only finite inputs are compared.
	if l := strings.ToLower(string(payload)); strings.Contains(l, "nan") || strings.Contains(l, "inf") {
		return
	}
	frame, err := Encode(m, ver)
	if err != nil {
		return // re-encoding can exceed the frame limit only for absurd inputs
	}
	again, err := decode(frame[4:], ver)
	if err != nil {
		t.Fatalf("re-decode of %T failed: %v", m, err)
	}
	if !reflect.DeepEqual(m, again) {
		t.Fatalf("round trip changed %T:\n%+v\n%+v", m, m, again)
	}
}

// FuzzDecodeIncoming covers every gateway-to-client decoder: the first field
// selects it, so the seeds hold one message of each kind.
func FuzzDecodeIncoming(f *testing.F) {
	for _, m := range incomingSamples {
		for _, ver := range []int{MinServerVersion, VerFractionalSizeSupport, VerAdvancedOrderReject, MaxServerVersion} {
			fr, _ := Encode(m, ver)
			f.Add(fr[4:], uint8(ver-MinServerVersion))
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte, v uint8) {
		ver := MinServerVersion + int(v)%(MaxServerVersion-MinServerVersion+1)
		roundTripProperty(t, payload, ver, DecodeIncoming)
	})
}

// FuzzDecodeOutgoing covers every client-to-gateway decoder, the simulator's
// side of the protocol.
func FuzzDecodeOutgoing(f *testing.F) {
	for _, m := range outgoingSamples {
		for _, ver := range []int{MinServerVersion, VerBondIssuerID, MaxServerVersion} {
			fr, _ := Encode(m, ver)
			f.Add(fr[4:], uint8(ver-MinServerVersion))
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte, v uint8) {
		ver := MinServerVersion + int(v)%(MaxServerVersion-MinServerVersion+1)
		roundTripProperty(t, payload, ver, DecodeOutgoing)
	})
}
