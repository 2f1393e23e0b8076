package bus

import (
	"crypto/subtle"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
)

// Usernames of the password identities.
const (
	OpsUser   = "ops"
	AdminUser = "admin"
	// The in-process identities share one password, made at start and
	// known only to this process, and connect only through a pipe.
	// internalUser has every permission in the control account (tests and
	// in-process tools); coordinatorUser and stateUser are the
	// coordinator's own, with only what it needs; opsCopyUser keeps the
	// ops account's copies of the state.
	internalUser    = "gastown-internal"
	coordinatorUser = "gastown-coordinator"
	stateUser       = "gastown-state"
	opsCopyUser     = "gastown-ops-copy"
)

// Grant is what a verified connection token allows.
type Grant struct {
	// TownID is the town the token belongs to.
	TownID string
	// Deadline is when the connection is closed (the token's exp).
	Deadline time.Time
	// IssuedAt is when the token was minted, so that a revocation can
	// close the connections that use older tokens.
	IssuedAt time.Time
	// RecoveryOnly is set for a token past its exp but within the recovery
	// window: the connection may only ask for a fresh token.
	RecoveryOnly bool
}

// TokenAuthorizer verifies a connection token. The coordinator's issuer
// satisfies it. Its errors must never contain the token.
type TokenAuthorizer interface {
	AuthorizeConnection(token string) (Grant, error)
}

// authenticator is the server's CustomClientAuthentication: every connection
// passes through Check, the in-process one too, and the server's own user
// list is never consulted.
type authenticator struct {
	tokens         TokenAuthorizer
	opsPassword    string
	adminPassword  string
	internalSecret string
	log            *slog.Logger
	// accounts is set once the server's accounts exist; until then every
	// connection is refused, so none lands in the wrong account.
	accounts atomic.Pointer[accounts]

	// conns remembers the token connections, for Kick and the town cap.
	// Nothing tells the authenticator when a connection closes: the
	// server's sweep drops the closed ones (conns.go), and entries past
	// their deadline are also dropped whenever the map has doubled.
	mu      sync.Mutex
	conns   map[uint64]tokenConn
	sweepAt int

	authLimits
}

type tokenConn struct {
	town     string
	issuedAt time.Time
	deadline time.Time
}

// minSweep is the size below which conns is never swept.
const minSweep = 64

// rememberLocked records a token connection, sweeping expired entries
// first when the map has grown enough. a.mu must be held.
func (a *authenticator) rememberLocked(id uint64, tc tokenConn, now time.Time) {
	if a.conns == nil {
		a.conns = map[uint64]tokenConn{}
	}
	if len(a.conns) >= max(a.sweepAt, minSweep) {
		for id, c := range a.conns {
			if !c.deadline.IsZero() && !c.deadline.After(now) {
				a.forgetLocked(id)
			}
		}
		a.sweepAt = 2 * len(a.conns)
	}
	a.conns[id] = tc
	a.indexLocked(id, tc.town)
}

func (a *authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	accs := a.accounts.Load()
	if accs == nil {
		a.refuse(c, RefusedStarting)
		return false
	}
	switch o.Username {
	case internalUser, coordinatorUser, stateUser, opsCopyUser:
		if addr := c.RemoteAddress(); !equal(o.Password, a.internalSecret) || addr == nil || addr.Network() != "pipe" {
			a.refuse(c, RefusedInternal)
			return false
		}
		c.RegisterUser(accs.internal(o.Username))
		return true
	case OpsUser:
		return a.password(c, o.Password, a.opsPassword, &server.User{Username: OpsUser, Account: accs.ops, Permissions: OpsPermissions()})
	case AdminUser:
		return a.password(c, o.Password, a.adminPassword, &server.User{Username: AdminUser, Account: accs.control, Permissions: AdminPermissions()})
	}
	switch {
	case o.Username != "":
		a.refuse(c, RefusedUnknownUser)
		return false
	case o.Token == "":
		a.refuse(c, RefusedNoCredentials)
		return false
	}
	if a.tokens == nil {
		a.refuse(c, RefusedTokensDisabled)
		return false
	}
	// Token connections are not throttled per source: see the comment
	// on throttle (throttle.go) for why.
	g, err := a.tokens.AuthorizeConnection(o.Token)
	if errors.Is(err, ErrNotReady) {
		a.refuse(c, RefusedStarting)
		return false
	}
	if err != nil {
		a.refuse(c, RefusedBadToken, KeyErr, err.Error())
		return false
	}
	t, err := schemas.ForTown(g.TownID)
	if err != nil {
		a.refuse(c, RefusedBadTown)
		return false
	}
	if ok, revoked := a.admit(c.GetID(), tokenConn{town: g.TownID, issuedAt: g.IssuedAt, deadline: g.Deadline}); revoked {
		a.refuse(c, RefusedBadToken, KeyErr, "token was revoked")
		return false
	} else if !ok {
		a.refuse(c, RefusedTownFull, KeyTown, g.TownID)
		return false
	}
	perms := ContainerPermissions(t)
	name := "town:" + g.TownID
	if g.RecoveryOnly {
		perms, name = RecoveryPermissions(t), "recovery:"+g.TownID
	}
	c.RegisterUser(&server.User{Username: name, Account: accs.control, Permissions: perms, ConnectionDeadline: g.Deadline})
	a.log.Debug("container connected", KeyTown, g.TownID, KeyRecovery, g.RecoveryOnly, KeyRemote, remote(c))
	return true
}

func (a *authenticator) password(c server.ClientAuthentication, given, want string, u *server.User) bool {
	right := want != "" && equal(given, want)
	if key, throttled := sourceKey(c.RemoteAddress()); throttled && a.guesses.attempt(key, a.now(), right) == lockedOut {
		a.refuse(c, RefusedLockedOut, KeyUser, u.Username)
		return false
	}
	if !right {
		a.refuse(c, RefusedWrongPassword, KeyUser, u.Username)
		return false
	}
	c.RegisterUser(u)
	return true
}

// remote is the client's address, or "" when it is already gone (the
// server may hand over a connection that closed meanwhile).
func remote(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return ""
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
