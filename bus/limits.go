package bus

import (
	"time"

	"github.com/cockroachdb/errors"
)

// Defaults of Limits.
const (
	// DefaultPasswordFailures is how many wrong passwords one source may
	// send before it is locked out.
	DefaultPasswordFailures = 5
	// DefaultLockoutBase is the first lockout; each further failure
	// doubles it, up to DefaultLockoutMax.
	DefaultLockoutBase = time.Second
	// DefaultLockoutMax caps a lockout.
	DefaultLockoutMax = 5 * time.Minute
	// DefaultThrottleSources is how many sources the password throttle
	// remembers at most (a few hundred bytes each).
	DefaultThrottleSources = 10_000
	// DefaultTownConns is how many connections one town may have open at
	// once: a container holds one (two while it moves to a newer token),
	// and every `gastown tool` call of its agents opens one more.
	DefaultTownConns = 64
	// DefaultConnSweep is how often the server forgets the connections
	// that closed.
	DefaultConnSweep = time.Second
	// DefaultLogInterval is how often at most one line of a kind is
	// logged when lines of that kind come from outside (refused
	// connections, one client's server errors, internal RPC errors).
	DefaultLogInterval = 10 * time.Second
)

// Limits are what keep an outsider from wearing the server down: a
// throttle on password guesses, rate-limited logs of what it refuses, a
// cap on each town's connections. Zero fields take their defaults.
type Limits struct {
	// PasswordFailures is how many wrong passwords (for ops or admin)
	// one source address may send before it is locked out. Zero means
	// DefaultPasswordFailures.
	PasswordFailures int
	// LockoutBase is how long a source is locked out after its
	// PasswordFailures-th failure; every failure after a lockout doubles
	// it, up to LockoutMax. While locked out, every password connection
	// from that source is refused, with the right password too. A right
	// password forgets the source's failures; so does a quiet LockoutMax
	// after its last lockout ends. Zero means DefaultLockoutBase.
	LockoutBase time.Duration
	// LockoutMax caps a lockout. Zero means DefaultLockoutMax.
	LockoutMax time.Duration
	// ThrottleSources is how many sources the throttle remembers at most;
	// past it, the one whose last failure is oldest is forgotten. Zero
	// means DefaultThrottleSources.
	ThrottleSources int
	// TownConns is how many connections one town may have open at once;
	// one more is refused at connect. Zero means DefaultTownConns.
	TownConns int
	// ConnSweep is how often the records of closed connections are
	// dropped. Zero means DefaultConnSweep.
	ConnSweep time.Duration
	// LogInterval is how often at most one line is logged per refusal
	// reason, and per kind of a client's server log line; the lines
	// left out are counted ("suppressed") on the next one written. Zero
	// means DefaultLogInterval.
	LogInterval time.Duration
	// Now is the clock of the throttle and the rate-limited logs; nil
	// means time.Now.
	Now func() time.Time
}

// withDefaults fills zero fields and checks the result.
func (l Limits) withDefaults() (Limits, error) {
	if l.PasswordFailures < 0 || l.LockoutBase < 0 || l.LockoutMax < 0 || l.ThrottleSources < 0 ||
		l.TownConns < 0 || l.ConnSweep < 0 || l.LogInterval < 0 {
		return l, errors.New("limits must not be negative")
	}
	if l.PasswordFailures == 0 {
		l.PasswordFailures = DefaultPasswordFailures
	}
	if l.LockoutBase == 0 {
		l.LockoutBase = DefaultLockoutBase
	}
	if l.LockoutMax == 0 {
		l.LockoutMax = DefaultLockoutMax
	}
	if l.ThrottleSources == 0 {
		l.ThrottleSources = DefaultThrottleSources
	}
	if l.TownConns == 0 {
		l.TownConns = DefaultTownConns
	}
	if l.ConnSweep == 0 {
		l.ConnSweep = DefaultConnSweep
	}
	if l.LogInterval == 0 {
		l.LogInterval = DefaultLogInterval
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.LockoutMax < l.LockoutBase {
		return l, errors.Newf("lockout cap %s is shorter than the first lockout %s", l.LockoutMax, l.LockoutBase)
	}
	return l, nil
}
