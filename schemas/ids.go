package schemas

import (
	"github.com/cockroachdb/errors"
)

// MaxIDLen is the longest identifier accepted anywhere.
const MaxIDLen = 64

// ErrInvalidID is returned for an identifier that breaks PROTOCOL.md's rule.
var ErrInvalidID = errors.New("invalid identifier")

// ValidateID checks one identifier (townId, rigId, agentId, beadId, runId):
// 1 to 64 characters from [A-Za-z0-9_-]. kind names the field in the error.
// The offending value is quoted in the error only when it is short and printable.
func ValidateID(kind, id string) error {
	if id == "" {
		return errors.Mark(errors.Newf("%s is required", kind), ErrInvalidID)
	}
	if len(id) > MaxIDLen {
		return errors.Mark(errors.Newf("%s is %d characters long; at most %d are allowed", kind, len(id), MaxIDLen), ErrInvalidID)
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return errors.Mark(errors.Newf("%s %q may contain only letters, digits, '_' and '-'", kind, id), ErrInvalidID)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
