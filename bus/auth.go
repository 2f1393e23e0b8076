package bus

import (
	"crypto/subtle"
	"log/slog"
	"net"
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
	// noRecords is set for the cluster's callout: the servers that hold
	// the connections keep them, and Kick asks them (clusterkick.go).
	noRecords bool
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
	r := connRequest{id: c.GetID(), user: o.Username, password: o.Password, token: o.Token, remote: c.RemoteAddress()}
	if accs == nil {
		a.refuse(r.remote, RefusedStarting)
		return false
	}
	if isInternal(o.Username) {
		if !equal(o.Password, a.internalSecret) || r.remote == nil || r.remote.Network() != "pipe" {
			a.refuse(r.remote, RefusedInternal)
			return false
		}
		c.RegisterUser(accs.internal(o.Username))
		return true
	}
	d, ok := a.decide(r)
	if !ok {
		return false
	}
	acc := accs.control
	if d.account == OpsAccount {
		acc = accs.ops
	}
	c.RegisterUser(&server.User{Username: d.user, Account: acc, Permissions: d.perms, ConnectionDeadline: d.deadline})
	return true
}

// connRequest is what a connecting client presents, as either adapter
// hears it: the embedded server's authentication hook (Check) or the
// cluster's auth callout (callout.go).
type connRequest struct {
	// id is the server's client id, for the records of the town cap and
	// Kick (embedded only).
	id                    uint64
	user, password, token string
	// remote is the client's address; nil when unknown.
	remote net.Addr
}

// decision is where an admitted connection goes and what it may do.
type decision struct {
	// account is ControlAccount or OpsAccount.
	account string
	// user names the connection (town:<id>, recovery:<id>, ops, admin).
	user     string
	perms    *server.Permissions
	deadline time.Time // zero: none
	// town and issuedAt are set for a token connection.
	town     string
	issuedAt time.Time
}

// isInternal reports whether name is one of the in-process identities.
func isInternal(name string) bool {
	switch name {
	case internalUser, coordinatorUser, stateUser, opsCopyUser:
		return true
	}
	return false
}

// decide is the one authorizer of connections: it says what a client
// presenting r may do, or refuses it (counted and logged). Both adapters
// call it, so a container gets the same permissions on the embedded
// server and on a cluster.
func (a *authenticator) decide(r connRequest) (decision, bool) {
	switch r.user {
	case internalUser, coordinatorUser, stateUser, opsCopyUser:
		// Only Check admits these, and only through the in-process pipe.
		a.refuse(r.remote, RefusedInternal)
		return decision{}, false
	case OpsUser:
		return a.password(r, a.opsPassword, decision{account: OpsAccount, user: OpsUser, perms: OpsPermissions()})
	case AdminUser:
		return a.password(r, a.adminPassword, decision{account: ControlAccount, user: AdminUser, perms: AdminPermissions()})
	}
	switch {
	case r.user != "":
		a.refuse(r.remote, RefusedUnknownUser)
		return decision{}, false
	case r.token == "":
		a.refuse(r.remote, RefusedNoCredentials)
		return decision{}, false
	}
	if a.tokens == nil {
		a.refuse(r.remote, RefusedTokensDisabled)
		return decision{}, false
	}
	// Token connections are not throttled per source: see the comment
	// on throttle (throttle.go) for why.
	g, err := a.tokens.AuthorizeConnection(r.token)
	if errors.Is(err, ErrNotReady) {
		a.refuse(r.remote, RefusedStarting)
		return decision{}, false
	}
	if err != nil {
		a.refuse(r.remote, RefusedBadToken, KeyErr, err.Error())
		return decision{}, false
	}
	t, err := schemas.ForTown(g.TownID)
	if err != nil {
		a.refuse(r.remote, RefusedBadTown)
		return decision{}, false
	}
	if !a.noRecords {
		if ok, revoked := a.admit(r.id, tokenConn{town: g.TownID, issuedAt: g.IssuedAt, deadline: g.Deadline}); revoked {
			a.refuse(r.remote, RefusedBadToken, KeyErr, "token was revoked")
			return decision{}, false
		} else if !ok {
			a.refuse(r.remote, RefusedTownFull, KeyTown, g.TownID)
			return decision{}, false
		}
	}
	if a.cluster != nil && !a.cluster.admit(g.TownID, grantName(tokenUser(g), g.IssuedAt)) {
		a.refuse(r.remote, RefusedTownFull, KeyTown, g.TownID)
		return decision{}, false
	}
	d := decision{account: ControlAccount, user: "town:" + g.TownID, perms: ContainerPermissions(t),
		deadline: g.Deadline, town: g.TownID, issuedAt: g.IssuedAt}
	if g.RecoveryOnly {
		d.perms, d.user = RecoveryPermissions(t), "recovery:"+g.TownID
	}
	a.log.Debug("container connected", KeyTown, g.TownID, KeyRecovery, g.RecoveryOnly, KeyRemote, addrString(r.remote))
	return d, true
}

func (a *authenticator) password(r connRequest, want string, d decision) (decision, bool) {
	right := want != "" && equal(r.password, want)
	if key, throttled := sourceKey(r.remote); throttled && a.guesses.attempt(key, a.now(), right) == lockedOut {
		a.refuse(r.remote, RefusedLockedOut, KeyUser, d.user)
		return decision{}, false
	}
	if !right {
		a.refuse(r.remote, RefusedWrongPassword, KeyUser, d.user)
		return decision{}, false
	}
	return d, true
}

// addrString is a client's address, or "" when it is unknown or already
// gone (the server may hand over a connection that closed meanwhile).
func addrString(a net.Addr) string {
	if a != nil {
		return a.String()
	}
	return ""
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
