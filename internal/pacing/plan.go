package pacing

import (
	"slices"
	"time"
)

// entry is one request in a rule's history: granted, or reserved for a
// caller still waiting (owner != 0 while it waits).
type entry struct {
	at    time.Time
	w     int
	owner uint64
}

// history is the entries of one rule key, sorted by time.
type history struct {
	win     time.Duration
	entries []entry
}

// plan is the record every decision is computed from: for each rule key the
// requests granted or reserved, and the penalties in force. It holds no lock
// and no clock, so MinimumDuration can run it on virtual time.
type plan struct {
	ws     windows
	keys   map[string]*history
	blocks map[string]time.Time // key -> blocked until
}

func newPlan(ws windows) *plan {
	return &plan{ws: ws, keys: map[string]*history{}, blocks: map[string]time.Time{}}
}

// earliest returns the first moment at or after now when a request under ls
// breaks no rule, given every entry (past and reserved future ones) and
// penalty, and the rule that set it (empty when now is already allowed).
//
// A window rule is met at t when no window (x-win, x] with x in [t, t+win)
// holds more than max weight with the request added. That count can only
// fall when an entry leaves a window, which happens at an entry's time or
// its time plus win, so the earliest allowed t is now or one of those
// points: jumping past each violated window to the next such point finds it
// exactly, without polling.
func (p *plan) earliest(ls []limit, now time.Time) (time.Time, Rule) {
	t := now
	var binding Rule
	for {
		next := t
		var by Rule
		for _, l := range ls {
			if until, ok := p.blocks[l.key]; ok && until.After(next) {
				next, by = until, l.rule
			}
			h := p.keys[l.key]
			if h == nil {
				continue
			}
			if n, ok := h.violatedUntil(t, l.w, l.max); !ok && n.After(next) {
				next, by = n, l.rule
			}
		}
		if !next.After(t) {
			return t, binding
		}
		t, binding = next, by
	}
}

// violatedUntil checks a request of weight w at t. If a window containing
// t would exceed max, it returns false and the end of the step of the
// window count that broke it: no t' before that point can be allowed,
// because the same window would still contain t'.
func (h *history) violatedUntil(t time.Time, w, max int) (time.Time, bool) {
	es := h.entries
	// Windows ending at x for x in [t, t+win): the count only rises at an
	// entry's time, so checking x = t and each entry time in (t, t+win) is
	// enough.
	lo := 0 // first entry inside (x-win, x]
	for _, x := range h.checkpoints(t) {
		for lo < len(es) && !es[lo].at.After(x.Add(-h.win)) {
			lo++
		}
		sum := w
		for i := lo; i < len(es) && !es[i].at.After(x); i++ {
			sum += es[i].w
		}
		if sum > max {
			return h.stepAfter(x), false
		}
	}
	return time.Time{}, true
}

// checkpoints lists t and every entry time in (t, t+win), ascending.
func (h *history) checkpoints(t time.Time) []time.Time {
	xs := []time.Time{t}
	end := t.Add(h.win)
	i, _ := slices.BinarySearchFunc(h.entries, t, func(e entry, t time.Time) int { return e.at.Compare(t) })
	for ; i < len(h.entries) && h.entries[i].at.Before(end); i++ {
		if at := h.entries[i].at; at.After(xs[len(xs)-1]) {
			xs = append(xs, at)
		}
	}
	return xs
}

// stepAfter is the first point after x where the window count changes: an
// entry's time or an entry's time plus the window.
func (h *history) stepAfter(x time.Time) time.Time {
	var best time.Time
	for _, e := range h.entries {
		for _, c := range [2]time.Time{e.at, e.at.Add(h.win)} {
			if c.After(x) && (best.IsZero() || c.Before(best)) {
				best = c
			}
		}
	}
	return best
}

// add records a request of owner at t under every rule in ls.
func (p *plan) add(ls []limit, at time.Time, owner uint64) {
	for _, l := range ls {
		h := p.keys[l.key]
		if h == nil {
			h = &history{win: l.win}
			p.keys[l.key] = h
		}
		i, _ := slices.BinarySearchFunc(h.entries, at, func(e entry, t time.Time) int {
			if e.at.After(t) {
				return 1
			}
			return -1 // after every entry at the same time: arrival order
		})
		h.entries = slices.Insert(h.entries, i, entry{at: at, w: l.w, owner: owner})
	}
}

// remove drops owner's reservation under every rule in ls.
func (p *plan) remove(ls []limit, owner uint64) {
	for _, l := range ls {
		if h := p.keys[l.key]; h != nil {
			h.entries = slices.DeleteFunc(h.entries, func(e entry) bool { return e.owner == owner })
		}
	}
}

// settle marks owner's reservation as granted, so later re-planning leaves
// it where it is.
func (p *plan) settle(ls []limit, owner uint64) {
	for _, l := range ls {
		if h := p.keys[l.key]; h != nil {
			for i := range h.entries {
				if h.entries[i].owner == owner {
					h.entries[i].owner = 0
				}
			}
		}
	}
}

// prune forgets granted entries that can no longer affect a decision at or
// after now, and penalties that have ended, so memory stays bounded by the
// requests of the last ten minutes.
func (p *plan) prune(now time.Time) {
	for k, h := range p.keys {
		h.entries = slices.DeleteFunc(h.entries, func(e entry) bool {
			return e.owner == 0 && !e.at.Add(h.win).After(now)
		})
		if len(h.entries) == 0 {
			delete(p.keys, k)
		}
	}
	for k, until := range p.blocks {
		if !until.After(now) {
			delete(p.blocks, k)
		}
	}
}
