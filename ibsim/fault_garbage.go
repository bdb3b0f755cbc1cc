package ibsim

import (
	"errors"

	"github.com/ktrdr/ktrdr/tws"
)

// Garbage sends one malformed frame to every client and ends. Mode
// "oversize" (the default) sends a length prefix beyond the protocol's
// limit, which no client can resynchronise after; mode "fields" sends a
// well-framed message whose id is not a number.
type Garbage struct {
	Passive
	Mode string `json:"mode"`
}

// Kind implements Fault.
func (*Garbage) Kind() string { return "garbage" }

func (g *Garbage) validate() error {
	switch g.Mode {
	case "", "oversize", "fields":
		return nil
	}
	return errors.New(`mode must be "oversize" or "fields"`)
}

// Start implements Fault.
func (g *Garbage) Start(c Control) {
	if g.Mode == "fields" {
		b, _ := tws.AppendFrame(nil, []byte("\xff\xfegarbage\x00-1\x00"))
		c.SendRaw(b)
	} else {
		c.SendRaw([]byte{0x7f, 0xff, 0xff, 0xff, 'g', 'a', 'r', 'b', 'a', 'g', 'e'})
	}
	c.End()
}
