package coordinator

import "sync"

// reasonNoContainer is why a dispatch fails when no container of the town
// answers: the town's container is down or was never started.
const reasonNoContainer = "no container of the town is connected"

// townSet is a set of town ids, safe for concurrent use; its zero value is
// empty and ready.
type townSet struct {
	mu sync.Mutex
	m  map[string]struct{}
}

// add adds town and reports whether it was new.
func (s *townSet) add(town string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[town]; ok {
		return false
	}
	if s.m == nil {
		s.m = map[string]struct{}{}
	}
	s.m[town] = struct{}{}
	return true
}

// remove removes town.
func (s *townSet) remove(town string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, town)
}
