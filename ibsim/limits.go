package ibsim

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ktrdr/ktrdr/tws"
)

// Historical pacing rules IB applies to bars of 30 seconds or less, across
// the whole gateway. Each window is divided by the time scale.
const (
	identicalWindow   = 15 * time.Second // identical requests
	sameContractLimit = 6                // requests for one contract/exchange/tick type...
	sameContractWin   = 2 * time.Second  // ...within this window
	windowLimit       = 60               // requests...
	longWindow        = 10 * time.Minute // ...within this window
)

// pacingKey identifies a request for the pacing rules.
type pacingKey struct {
	identical string // every field of the request
	contract  string // contract, exchange and tick type
	weight    int    // BID_ASK counts twice
}

func pacingKeys(in *Instrument, m *tws.ReqHistoricalData) pacingKey {
	what := strings.ToUpper(m.WhatToShow)
	k := pacingKey{
		identical: fmt.Sprintf("%d|%s|%s|%s|%s|%s|%t|%d", in.ConID, in.Exchange, m.EndDateTime, m.Duration, m.BarSize, what, m.UseRTH, m.FormatDate),
		contract:  fmt.Sprintf("%d|%s|%s", in.ConID, in.Exchange, what),
		weight:    1,
	}
	if what == "BID_ASK" {
		k.weight = 2
	}
	return k
}

type pacedReq struct {
	at  time.Time
	key pacingKey
}

// pacer applies the historical pacing rules. A request that violates one
// is not recorded: IB rejects it without counting it.
type pacer struct {
	mu     sync.Mutex
	scale  float64
	recent []pacedReq
}

func newPacer(scale float64) *pacer { return &pacer{scale: scale} }

// admit records a request made at now and returns "" if it is allowed, or
// the name of the rule it breaks.
func (p *pacer) admit(now time.Time, k pacingKey) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	long := scaled(longWindow, p.scale)
	keep := p.recent[:0]
	for _, r := range p.recent {
		if now.Sub(r.at) < long {
			keep = append(keep, r)
		}
	}
	p.recent = keep
	same, total := k.weight, k.weight
	for _, r := range p.recent {
		age := now.Sub(r.at)
		if r.key.identical == k.identical && age < scaled(identicalWindow, p.scale) {
			return "identical request within 15 s"
		}
		if r.key.contract == k.contract && age < scaled(sameContractWin, p.scale) {
			same += r.key.weight
		}
		total += r.key.weight
	}
	if same >= sameContractLimit {
		return "6 requests for the same contract, exchange and tick type within 2 s"
	}
	if total > windowLimit {
		return "more than 60 requests within 10 minutes"
	}
	p.recent = append(p.recent, pacedReq{at: now, key: k})
	return ""
}
