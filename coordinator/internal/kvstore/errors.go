package kvstore

import "github.com/cockroachdb/errors"

// The store's errors, each marking the error a Bucket returns (test with
// errors.Is). They say what happened to a key; what a caller is told (a
// not_found on the wire, say) is decided where a handler answers.
var (
	// ErrKeyNotFound is an update of a key that is not in its bucket.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyExists is a create of a key that is already there.
	ErrKeyExists = errors.New("key already exists")
	// ErrStale is a compare-and-set write that kept losing to other
	// writers: the value changed underneath every attempt.
	ErrStale = errors.New("state changed underneath; retry")
)
