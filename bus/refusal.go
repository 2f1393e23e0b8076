package bus

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/cockroachdb/errors"
)

// Log keys of refusals and rate-limited lines.
const (
	KeySuppressed = "suppressed"
	KeyUser       = "user"
	KeyErr        = "err"
)

// Reasons a connection is refused at connect: the keys of Refused and of
// the rate-limited refusal log.
const (
	RefusedNoCredentials  = "no credentials"
	RefusedUnknownUser    = "unknown user"
	RefusedInternal       = "internal identity used from outside the process"
	RefusedWrongPassword  = "wrong password"
	RefusedLockedOut      = "too many wrong passwords from this source"
	RefusedTokensDisabled = "token connections are not enabled"
	RefusedBadToken       = "token refused"
	RefusedBadTown        = "token names a bad town"
	RefusedTownFull       = "town has too many connections"
	RefusedStarting       = "the server is still starting"
)

// ErrNotReady marks a TokenAuthorizer's error while it cannot decide yet
// (the coordinator is still starting and has not loaded its revocations).
// Such a refusal counts as RefusedStarting and, like every refusal while
// the server starts, is logged at debug: containers reconnecting to a
// restarting coordinator are expected, and retry.
var ErrNotReady = errors.New("not ready yet")

var refusalReasons = []string{
	RefusedNoCredentials, RefusedUnknownUser, RefusedInternal, RefusedWrongPassword, RefusedLockedOut,
	RefusedTokensDisabled, RefusedBadToken, RefusedBadTown, RefusedTownFull, RefusedStarting,
}

// refusals counts refused connections by reason and logs them, at most
// one line per reason per interval.
type refusals struct {
	count map[string]*atomic.Uint64 // fixed at construction: read without a lock
	log   *RateLog
}

func newRefusals(log *RateLog) *refusals {
	r := &refusals{count: make(map[string]*atomic.Uint64, len(refusalReasons)), log: log}
	for _, reason := range refusalReasons {
		r.count[reason] = new(atomic.Uint64)
	}
	return r
}

// refuse counts and logs a refused connection. reason is one of the
// Refused constants; args add detail, never a token or a password.
func (a *authenticator) refuse(from net.Addr, reason string, args ...any) {
	a.refused.count[reason].Add(1)
	level := slog.LevelInfo
	if reason == RefusedStarting {
		level = slog.LevelDebug
	}
	a.refused.log.Log(context.Background(), level, reason, "connection refused",
		append([]any{KeyReason, reason, KeyRemote, addrString(from)}, args...)...)
}

// Refused is how many connections were refused at connect since the
// server started, by reason (the Refused constants), for status and
// metrics.
func (s *Server) Refused() map[string]uint64 {
	out := make(map[string]uint64, len(s.auth.refused.count))
	for reason, n := range s.auth.refused.count {
		out[reason] = n.Load()
	}
	return out
}
