package bus

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The cluster's adapter of the one authorizer (decide, auth.go): on a NATS
// cluster every server sends each connecting client's credentials to
// $SYS.REQ.USER.AUTH in the auth callout account, and every coordinator
// answers there, in one queue group. The answer is a user JWT signed with
// the callout's issuer key, carrying the same permissions and deadline the
// embedded server would register, and placed (by its audience) in the
// control or ops account. The coordinator's own identities and the
// break-glass ops nkey bypass the callout (auth_users in the servers'
// configuration).

// AuthCalloutSubject is where the servers ask for a verdict.
const AuthCalloutSubject = "$SYS.REQ.USER.AUTH"

// CalloutQueue is the queue group every coordinator answers the callout in.
const CalloutQueue = "gastown-auth"

// issuedAtMark joins a container connection's name and its token's iat
// (Unix nanoseconds) in the name its user JWT gives it, e.g.
// "town:alpha;iat=1764628882299765800": the servers list connections by
// that name (CONNZ's authorized_user), and the kicker picks a town's
// connections issued before a revocation by it (clusterkick.go).
const issuedAtMark = ";iat="

// probeUser is the identity a coordinator connects as to check, at start,
// that the cluster's callout reaches it and accepts its answers.
const probeUser = "gastown-probe"

// CalloutConfig configures the cluster's authorization service.
type CalloutConfig struct {
	// Tokens verifies container tokens. Nil refuses all tokens.
	Tokens TokenAuthorizer
	// AdminPassword enables the admin identity when not empty.
	AdminPassword string
	// OpsPassword enables the ops identity when not empty: on a generated
	// cluster ops's password is checked here, throttled like admin's
	// (the servers know only the break-glass ops nkey).
	OpsPassword string
	// Issuer is the account key the callout's user JWTs are signed with:
	// auth_callout.issuer in the servers' configuration is its public key.
	Issuer nkeys.KeyPair
	// XKey opens the requests and seals the answers (auth_callout.xkey).
	// Requests arrive sealed when it is set, and must: a request in clear
	// is refused.
	XKey nkeys.KeyPair
	// Logger receives refusals (rate-limited) and errors; nil discards.
	Logger *slog.Logger
	// Limits throttle password guesses and rate-limit refusal logs; the
	// town cap (TownConns) holds on the cluster when System is set.
	Limits
	// System, the coordinator's connection to the system account, lets
	// the callout count every town's connections on every server
	// (clustercount.go) and refuse one past Limits.TownConns. Nil: no
	// town cap.
	System *nats.Conn
	// TownConnsReconcile is how often that count is reconciled with the
	// servers' CONNZ. Zero means DefaultTownConnsReconcile.
	TownConnsReconcile time.Duration
}

// Callout answers the cluster's authorization requests until Close.
type Callout struct {
	auth   *authenticator
	issuer nkeys.KeyPair
	xkey   nkeys.KeyPair
	log    *slog.Logger
	sub    *nats.Subscription
	// share shares the password throttle with the other coordinators.
	share *throttleShare

	// probe is the password of this coordinator's start-up check; the
	// counters say what the check saw.
	probe     string
	requests  atomic.Int64
	probes    atomic.Int64 // this coordinator's own probes it answered
	unsealErr atomic.Pointer[string]
	closeOnce sync.Once
	// slots bounds the requests decided at once; wg waits for them.
	slots chan struct{}
	wg    sync.WaitGroup
	// lanes are the two stages' state (calloutlanes.go).
	lanes calloutLanes
}

// StartCallout subscribes nc (the coordinator's connection to the auth
// callout account) to the authorization requests.
func StartCallout(nc *nats.Conn, cfg CalloutConfig) (*Callout, error) {
	if cfg.Issuer == nil {
		return nil, errors.New("the auth callout needs its issuer key")
	}
	if pub, err := cfg.Issuer.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, errors.WithHint(errors.New("the auth callout's issuer is not an account key"),
			"issuer.nk must hold an account seed (SA…), as `gastown cluster init` writes it")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	limits, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	probe, err := randomSecret()
	if err != nil {
		return nil, err
	}
	a := &authenticator{tokens: cfg.Tokens, opsPassword: cfg.OpsPassword, adminPassword: cfg.AdminPassword,
		log: cfg.Logger, noRecords: true}
	a.authLimits = newAuthLimits(limits, cfg.Logger)
	c := &Callout{auth: a, issuer: cfg.Issuer, xkey: cfg.XKey, log: cfg.Logger, probe: probe}
	c.slots = make(chan struct{}, calloutWorkers)
	if c.lanes.box, err = newCalloutBox(cfg.XKey); err != nil {
		return nil, err
	}
	c.lanes.drops = NewRateLog(cfg.Logger, limits.LogInterval, limits.Now)
	if cfg.TownConnsReconcile < 0 {
		return nil, errors.New("the town connections' reconcile interval must not be negative")
	}
	if cfg.System != nil {
		if a.cluster, err = startClusterConns(cfg.System, nc, limits.TownConns, cfg.TownConnsReconcile, limits.Now, cfg.Logger); err != nil {
			return nil, err
		}
	}
	if c.share, err = startThrottleShare(nc, a.guesses, limits.Now, a.refused.log); err != nil {
		c.closeCount()
		return nil, err
	}
	if c.sub, err = nc.QueueSubscribe(AuthCalloutSubject, CalloutQueue, c.dispatch); err != nil {
		c.share.close()
		c.closeCount()
		return nil, errors.Wrap(err, "subscribing to the auth callout")
	}
	if err := nc.Flush(); err != nil {
		_ = c.sub.Unsubscribe()
		c.share.close()
		c.closeCount()
		return nil, errors.Wrap(err, "subscribing to the auth callout")
	}
	return c, nil
}

// Close stops answering. Safe to call twice.
func (c *Callout) Close() {
	c.closeOnce.Do(func() { _ = c.sub.Unsubscribe(); c.share.close() })
	c.wg.Wait()
	c.closeCount()
}

// calloutWorkers is how many authorization requests one coordinator
// decides at once (calloutlanes.go): a connect storm (every container
// reconnecting after a node died) is not answered one at a time, past
// the servers' 2 s timeout; and a flood of garbage cannot take more than
// these, each for the microseconds a refusal takes.
const calloutWorkers = 32

// Refused is how many connections the callout refused, by reason.
func (c *Callout) Refused() map[string]uint64 {
	out := make(map[string]uint64, len(c.auth.refused.count))
	for reason, n := range c.auth.refused.count {
		out[reason] = n.Load()
	}
	return out
}

func (c *Callout) noteUnseal(why string) {
	if c.unsealErr.Swap(&why) == nil {
		c.log.Error(why)
	}
}

// grant is the user claims for req, or why it is refused (the client is
// told only "Authorization Violation"). It signs nothing: the grant lane
// signs what it admits.
func (c *Callout) grant(req *jwt.AuthorizationRequestClaims) (uc *jwt.UserClaims, refusal string) {
	o := req.ConnectOptions
	from := calloutAddr(req.ClientInformation.Host)
	uc = jwt.NewUserClaims(req.UserNkey)
	if o.Username == probeUser {
		if !equal(o.Password, c.probe) {
			c.auth.refuse(from, RefusedUnknownUser)
			return nil, RefusedUnknownUser
		}
		// The start-up check: a connection that may do nothing, briefly.
		c.probes.Add(1)
		uc.Audience = ControlAccount
		uc.Name = probeUser
		uc.Pub.Deny.Add(">")
		uc.Sub.Deny.Add(">")
		uc.Expires = time.Now().Add(10 * time.Second).Unix()
	} else {
		d, ok := c.auth.decide(connRequest{user: o.Username, password: o.Password, token: o.Token, remote: from})
		if !ok {
			return nil, "not authorized"
		}
		uc.Audience = d.account
		uc.Name = d.user
		if d.town != "" {
			uc.Name += issuedAtMark + strconv.FormatInt(d.issuedAt.UnixNano(), 10)
		}
		uc.Permissions = jwtPermissions(d.perms)
		if !d.deadline.IsZero() {
			// Whole seconds: round up, as the embedded server closes at
			// the deadline itself, not before it.
			uc.Expires = d.deadline.Add(time.Second - 1).Unix()
		}
	}
	return uc, ""
}

// jwtPermissions carries a server permission set into a user JWT.
func jwtPermissions(p *server.Permissions) jwt.Permissions {
	var out jwt.Permissions
	if p == nil {
		return out
	}
	if p.Publish != nil {
		out.Pub.Allow.Add(p.Publish.Allow...)
		out.Pub.Deny.Add(p.Publish.Deny...)
	}
	if p.Subscribe != nil {
		out.Sub.Allow.Add(p.Subscribe.Allow...)
		out.Sub.Deny.Add(p.Subscribe.Deny...)
	}
	if p.Response != nil {
		out.Resp = &jwt.ResponsePermission{MaxMsgs: p.Response.MaxMsgs, Expires: p.Response.Expires}
	}
	return out
}

// calloutAddr is the client's address as the request gives it (its host
// only), for the password throttle and the refusal log.
func calloutAddr(host string) net.Addr {
	ip := net.ParseIP(host)
	if ip == nil {
		return nil
	}
	return &net.TCPAddr{IP: ip}
}

// Errors of the start-up check (Probe).
var (
	// ErrCalloutUnreached: no authorization request reached this
	// coordinator.
	ErrCalloutUnreached = errors.New("the cluster's auth callout does not reach this coordinator")
	// ErrCalloutRefused: requests arrive but the servers refuse the
	// coordinator's answers.
	ErrCalloutRefused = errors.New("the cluster refuses this coordinator's authorization answers")
)

// Probe checks that the cluster's callout reaches this coordinator and
// accepts its answers, by connecting to url as a user only this process
// knows; it says exactly what is misconfigured when not. Other
// coordinators answering in the queue group may take the request, so the
// probe retries a few times before it concludes anything.
func (c *Callout) Probe(ctx context.Context, url string, opts ...nats.Option) error {
	var last error
	for attempt := 0; attempt < 16; attempt++ {
		before := c.probes.Load()
		all := append([]nats.Option{nats.UserInfo(probeUser, c.probe), nats.Name("gastown-coordinator-probe"),
			nats.Timeout(5 * time.Second), nats.MaxReconnects(0), nats.DontRandomize()}, opts...)
		nc, err := nats.Connect(url, all...)
		if err == nil {
			nc.Close()
			return nil
		}
		last = err
		if why := c.unsealErr.Load(); why != nil {
			return errors.WithHint(errors.Newf("%s", *why), "regenerate the cluster with `gastown cluster init`, or copy xkey.nk from the set the servers were configured with")
		}
		if c.probes.Load() > before {
			// Our probe reached us, we admitted it, and the server refused
			// our answer. (One answered by another coordinator in the
			// queue group is refused by that one: try again.)
			return errors.WithHint(errors.Mark(errors.Wrap(err, "the probe connection was refused"), ErrCalloutRefused),
				"auth_callout.issuer in the servers' configuration must be the public key of the coordinator's issuer.nk; `gastown cluster check --dir D` compares them")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.WithHint(errors.Mark(errors.Wrap(last, "no authorization request reached this coordinator"), ErrCalloutUnreached),
		"auth_callout.account must be the account of the coordinator's auth.nk, and that key must be in auth_callout.auth_users")
}
