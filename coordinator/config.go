package coordinator

import (
	"log/slog"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/coordinator/token"
)

// Defaults (ARCHITECTURE.md, Defaults).
const (
	DefaultTokenTTL        = 8 * time.Hour
	DefaultRefreshInterval = time.Hour
	// DefaultRequestTimeout bounds a request to a container.
	DefaultRequestTimeout = 5 * time.Second

	DefaultHeartbeatInterval = 30 * time.Second
	DefaultDeadAfter         = 3 // missed heartbeat intervals
	DefaultDispatchCooldown  = 2 * time.Minute
	DefaultMaxAttempts       = 5
	DefaultDispatchTimeout   = 2 * time.Minute
)

// Config holds every tunable of the coordinator. Tests shrink the durations
// to milliseconds.
type Config struct {
	// TokenTTL is the lifetime of a container token.
	TokenTTL time.Duration
	// RefreshInterval is how often an active town's token is refreshed.
	RefreshInterval time.Duration
	// RefreshJitter spreads refreshes: each is due at RefreshInterval plus
	// up to this much at random. Zero means a tenth of RefreshInterval.
	RefreshJitter time.Duration
	// RecoveryWindow is how long after its exp a container token may still
	// connect to ask for a fresh one (token.DefaultRecoveryWindow).
	RecoveryWindow time.Duration
	// RecoveryConnTTL is how long such a recovery connection stays open
	// (token.DefaultRecoveryConnTTL).
	RecoveryConnTTL time.Duration
	// RequestTimeout bounds each request the coordinator sends.
	RequestTimeout time.Duration
	// DispatchTimeout bounds a dispatch: the container clones the rig and
	// stops an older run before it answers.
	DispatchTimeout time.Duration
	// HeartbeatInterval is how often containers send heartbeats.
	HeartbeatInterval time.Duration
	// DeadAfter is how many heartbeat intervals an agent may miss before
	// it is dead.
	DeadAfter int
	// DispatchCooldown is the wait after a failed dispatch or run.
	DispatchCooldown time.Duration
	// MaxAttempts is how many failed dispatches fail a bead.
	MaxAttempts int
	// LeaseTTL is how long a town's lease lasts unless renewed.
	LeaseTTL time.Duration
	// Replicas is the replica count of the state buckets (1 embedded, 3 on
	// a cluster).
	Replicas int
	// Limits bounds each town's request rates, concurrency and storage
	// (see Limits for the defaults).
	Limits Limits
	// ErrorLogInterval is how often at most one internal error of one
	// subject is logged; the rest are counted ("suppressed") on the next
	// line of that subject. Zero means bus.DefaultLogInterval.
	ErrorLogInterval time.Duration
	// Clock makes the tickers of the rotation and patrol loops (patrol
	// judges liveness); nil means the wall clock (clock.Real). Tests hand
	// it a clock.Manual and advance it instead of waiting. The leases stay
	// on the wall clock: the store expires them by its own.
	Clock clock.Clock
	// Now reads the time; nil means Clock.Now.
	Now func() time.Time
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// authConfig is what the connection authorizer needs of c.
func (c Config) authConfig() token.AuthConfig {
	return token.AuthConfig{RecoveryWindow: c.RecoveryWindow, RecoveryConnTTL: c.RecoveryConnTTL}
}

// withDefaults fills zero fields and checks the result.
func (c Config) withDefaults() (Config, error) {
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.RefreshJitter == 0 {
		c.RefreshJitter = c.RefreshInterval / 10
	}
	if c.RecoveryWindow == 0 {
		c.RecoveryWindow = token.DefaultRecoveryWindow
	}
	if c.RecoveryConnTTL == 0 {
		c.RecoveryConnTTL = token.DefaultRecoveryConnTTL
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DispatchTimeout == 0 {
		c.DispatchTimeout = DefaultDispatchTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.DispatchCooldown == 0 {
		c.DispatchCooldown = DefaultDispatchCooldown
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.ErrorLogInterval == 0 {
		c.ErrorLogInterval = bus.DefaultLogInterval
	}
	c.Clock = clock.Or(c.Clock)
	if c.Now == nil {
		c.Now = c.Clock.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	limits, err := c.Limits.withDefaults(c.HeartbeatInterval)
	if err != nil {
		return c, err
	}
	c.Limits = limits
	switch {
	case c.TokenTTL < 0 || c.RefreshInterval < 0 || c.RefreshJitter < 0 || c.RecoveryWindow < 0 ||
		c.HeartbeatInterval < 0 || c.DispatchCooldown < 0 || c.DeadAfter < 0 || c.MaxAttempts < 0 || c.ErrorLogInterval < 0:
		return c, errors.New("durations must not be negative")
	case c.RefreshInterval+c.RefreshJitter >= c.TokenTTL/2:
		return c, errors.Newf("refresh interval %s (+ jitter %s) must be under half the token lifetime %s, so a container always holds a token with time to spare",
			c.RefreshInterval, c.RefreshJitter, c.TokenTTL)
	case c.Replicas < 1 || c.Replicas > 5:
		return c, errors.Newf("replicas must be 1 to 5, not %d", c.Replicas)
	}
	return c, nil
}
