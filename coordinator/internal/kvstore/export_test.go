package kvstore

import "testing"

// SetLandedTries makes landed read a key back at most tries times, until
// the test ends: with 0, a write whose answer was lost stays unknown, so
// that Update has to recognise it by its value when it reads the key again.
func SetLandedTries(t testing.TB, tries int) {
	old := landedTries
	landedTries = tries
	t.Cleanup(func() { landedTries = old })
}
