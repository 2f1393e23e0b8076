package token

import (
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
)

// ErrTokenRevoked is a well-signed token issued before its town's revocation.
var ErrTokenRevoked = errors.New("token revoked")

// ErrNotReady is returned while the coordinator has not yet loaded the
// revocation list: no token is accepted before it knows which are revoked.
// It is marked bus.ErrNotReady, so the refusal is logged as an expected one.
var ErrNotReady = errors.Mark(errors.New("coordinator is still starting"), bus.ErrNotReady)

// Defaults of AuthConfig.
const (
	// DefaultRecoveryWindow is how long after its exp a container token may
	// still connect to ask for a fresh one.
	DefaultRecoveryWindow = 24 * time.Hour
	// DefaultRecoveryConnTTL is how long a recovery connection may stay
	// open: long enough to ask for a fresh token.
	DefaultRecoveryConnTTL = time.Minute
)

// AuthConfig holds the tunables of connection authorization. A zero field
// takes its default.
type AuthConfig struct {
	// RecoveryWindow is how long after its exp a container token may still
	// connect to ask for a fresh one (DefaultRecoveryWindow).
	RecoveryWindow time.Duration
	// RecoveryConnTTL is how long such a recovery connection stays open
	// (DefaultRecoveryConnTTL).
	RecoveryConnTTL time.Duration
}

// RevocationChecker says whether a town's token issued at a time is
// revoked. The coordinator's token store satisfies it; until it has loaded
// the revocations it answers ErrNotReady.
type RevocationChecker interface {
	Revoked(townID string, issuedAt time.Time) (bool, error)
}

// ConnAuthorizer verifies the token a container connects with. It satisfies
// bus.TokenAuthorizer. A valid container token gets the container's
// permissions until its exp; one that expired within the recovery window
// (and is not revoked) gets the recovery permissions for a short while.
type ConnAuthorizer struct {
	issuer  *Issuer
	cfg     AuthConfig
	revoked RevocationChecker
}

// NewConnAuthorizer makes the authorizer. revoked may be nil while there is
// no revocation store (tests of the bus alone).
func NewConnAuthorizer(issuer *Issuer, cfg AuthConfig, revoked RevocationChecker) (*ConnAuthorizer, error) {
	if cfg.RecoveryWindow == 0 {
		cfg.RecoveryWindow = DefaultRecoveryWindow
	}
	if cfg.RecoveryConnTTL == 0 {
		cfg.RecoveryConnTTL = DefaultRecoveryConnTTL
	}
	if cfg.RecoveryWindow < 0 || cfg.RecoveryConnTTL < 0 {
		return nil, errors.Newf("the recovery window (%s) and a recovery connection's lifetime (%s) must not be negative",
			cfg.RecoveryWindow, cfg.RecoveryConnTTL)
	}
	return &ConnAuthorizer{issuer: issuer, cfg: cfg, revoked: revoked}, nil
}

var _ bus.TokenAuthorizer = (*ConnAuthorizer)(nil)

// AuthorizeConnection implements bus.TokenAuthorizer.
func (a *ConnAuthorizer) AuthorizeConnection(token string) (bus.Grant, error) {
	c, err := a.issuer.VerifyContainer(token)
	recovery := false
	switch {
	case errors.Is(err, ErrTokenExpired) && a.cfg.RecoveryWindow > 0:
		c, err = a.issuer.VerifyContainerExpired(token, a.cfg.RecoveryWindow)
		recovery = err == nil
	case err == nil && !a.issuer.Now().Before(c.Expires()):
		// Past its exp but inside the verifier's leeway: a normal grant
		// would be closed at once (its deadline has passed). Recovery
		// works from the moment of exp on.
		if a.cfg.RecoveryWindow <= 0 {
			return bus.Grant{}, errors.Mark(errors.New("token has expired"), ErrTokenExpired)
		}
		recovery = true
	}
	if err != nil {
		return bus.Grant{}, err
	}
	if a.revoked != nil {
		r, err := a.revoked.Revoked(c.TownID, c.Issued())
		if err != nil {
			return bus.Grant{}, err
		}
		if r {
			return bus.Grant{}, errors.Mark(errors.Newf("token of town %s was revoked", c.TownID), ErrTokenRevoked)
		}
	}
	if recovery {
		return bus.Grant{TownID: c.TownID, Deadline: a.issuer.Now().Add(a.cfg.RecoveryConnTTL), IssuedAt: c.Issued(), RecoveryOnly: true}, nil
	}
	return bus.Grant{TownID: c.TownID, Deadline: c.Expires(), IssuedAt: c.Issued()}, nil
}
