package coordinator

import "sync"

// townSet is a set of town ids, safe for concurrent use; its zero value is
// empty and ready. Each town is kept with the moment it was added, on the
// set's own sequence, so that news of the town's container clears only
// the failures it came after: a dispatch answered just before the
// container died may be recorded after a dispatch that failed for its
// death, and must not make the next failure warn again.
type townSet struct {
	mu  sync.Mutex
	seq uint64
	m   map[string]uint64
}

// stamp marks this moment: take it when the town's container is heard
// from (give it to remove), or found missing (give it to add).
func (s *townSet) stamp() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return s.seq
}

// add adds town, as of at (a stamp taken when the failure was seen), and
// reports whether it was new.
func (s *townSet) add(town string, at uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[town]; ok {
		return false
	}
	if s.m == nil {
		s.m = map[string]uint64{}
	}
	s.m[town] = at
	return true
}

// remove removes town if it was added before heard (a stamp taken when
// its container was heard from).
func (s *townSet) remove(town string, heard uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if added, ok := s.m[town]; ok && added < heard {
		delete(s.m, town)
	}
}
