package pool

import (
	"sync"
	"time"
)

// idSet hands out client ids: the lowest free one from the base, skipping
// ids in use and ids resting after a 326. Ids return to the free set when
// their connection closes, so low ids are reused.
type idSet struct {
	mu       sync.Mutex
	base     int
	cooldown time.Duration
	inUse    map[int]bool
	resting  map[int]time.Time // id -> usable again at
}

func newIDSet(base int, cooldown time.Duration) *idSet {
	return &idSet{base: base, cooldown: cooldown, inUse: map[int]bool{}, resting: map[int]time.Time{}}
}

// take reserves the lowest usable id not in skip.
func (s *idSet) take(skip map[int]bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for id := s.base; ; id++ {
		if s.inUse[id] || skip[id] {
			continue
		}
		if until, ok := s.resting[id]; ok {
			if now.Before(until) {
				continue
			}
			delete(s.resting, id)
		}
		s.inUse[id] = true
		return id
	}
}

// release returns id to the free set.
func (s *idSet) release(id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inUse, id)
}

// rest releases id and keeps it unused for the cooldown: the gateway just
// refused it with 326.
func (s *idSet) rest(id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inUse, id)
	s.resting[id] = time.Now().Add(s.cooldown)
}

// snapshot returns the ids in use, ascending, and the resting ones.
func (s *idSet) snapshot() (inUse, resting []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for id := range s.inUse {
		inUse = append(inUse, id)
	}
	for id, until := range s.resting {
		if now.Before(until) {
			resting = append(resting, id)
		}
	}
	sortInts(inUse)
	sortInts(resting)
	return inUse, resting
}

// lowestFree is the id the next connect would try first.
func (s *idSet) lowestFree() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for id := s.base; ; id++ {
		if s.inUse[id] {
			continue
		}
		if until, ok := s.resting[id]; ok && now.Before(until) {
			continue
		}
		return id
	}
}
