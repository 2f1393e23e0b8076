package coordinator

import "sync"

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
