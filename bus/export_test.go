package bus

import "testing"

// InternalSecret is the in-process identities' password, for tests that
// check it never shows.
func (s *Server) InternalSecret() string { return s.internalSecret }

// OpsCopyCheck is how often the copier checks its copies: a deleted copy
// whose deletion advisory the server lost is made again by the check.
const OpsCopyCheck = opsCopyCheck

// SetOpsCopyMade has f called between making an ops copy's bucket and
// limiting its stream (nil: no call) until the test ends.
func SetOpsCopyMade(t testing.TB, f func(bucket string)) {
	opsCopyMade.Store(&f)
	t.Cleanup(func() { opsCopyMade.Store(nil) })
}
