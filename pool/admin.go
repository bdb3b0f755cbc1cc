package pool

// ReasonCleanup is the removal reason of connections closed by CloseIdle
// or CloseAll.
const ReasonCleanup Reason = "cleanup"

// CloseIdle closes every idle connection (warm ones too; the health loop
// reopens MinIdle) and returns their client ids.
func (p *Pool) CloseIdle() []int {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil // taken under the lock, so no Acquire can get one meanwhile
	for _, e := range idle {
		e.inUse = true
	}
	p.mu.Unlock()
	ids := make([]int, 0, len(idle))
	for _, e := range idle {
		ids = append(ids, e.clientID)
		p.remove(e, ReasonCleanup)
	}
	return ids
}

// CloseAll closes every connection, in use or not: leases out become
// no-ops and their callers' requests fail with a connection error. The
// pool stays open and reconnects on demand.
func (p *Pool) CloseAll() []int {
	p.mu.Lock()
	all := make([]*entry, 0, len(p.all))
	for e := range p.all {
		all = append(all, e)
	}
	p.mu.Unlock()
	ids := make([]int, 0, len(all))
	for _, e := range all {
		ids = append(ids, e.clientID)
		p.remove(e, ReasonCleanup)
	}
	sortInts(ids)
	return ids
}
