package coordinator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Kicker closes a town's connections whose token was issued before a time.
// The embedded bus provides it; on an existing cluster there is none, and
// revoked tokens are shut out at their next request and reconnect.
type Kicker interface {
	Kick(townID string, issuedBefore time.Time) int
}

// Coordinator answers containers and the administrator on the bus and keeps
// every active town's token fresh. Start it with New; stop it with Close.
type Coordinator struct {
	// nc is the control connection: handlers, pushes, dispatches, events.
	nc *nats.Conn
	// state is the connection JetStream is reached on: the state account's
	// on the embedded server, nc itself on an existing cluster.
	state  *nats.Conn
	js     jetstream.JetStream
	issuer *token.Issuer
	// verified caches signature checks of RPC bearer tokens.
	verified *token.VerifyCache
	cfg      Config
	log      *slog.Logger
	tokens   *tokenStore
	st       *state
	live     *liveness
	leases   *leases
	// dispatching holds the agents being dispatched now: by patrol, or
	// by a sling from its hook on (hookPolecat); patrol skips them.
	dispatching sync.Map
	kicker      Kicker
	misdirected misdirected
	mint        *mintLocks
	// errLog rate-limits the log of internal errors (wireError).
	errLog *bus.RateLog
	// noContainer holds the towns whose dispatch failed for want of a
	// container and was logged as a warning: the next ones go to debug
	// until the town's container is heard from again (dispatchlog.go).
	noContainer townSet
	// metrics records what happens; nil records nothing (WithMetrics).
	metrics *Metrics

	// idleUntil remembers towns found with no container, so the rotation
	// loop does not probe them every tick. A cache only: losing it costs
	// one probe per town.
	idleMu    sync.Mutex
	idleUntil map[string]time.Time

	// pool runs the request handlers, at most Limits.Handlers at once;
	// Close waits for them.
	pool   *handlerPool
	limits *limiter        // each town's rates and calls in flight
	runCtx context.Context // every handler's and loop's; done when Close begins
	cancel context.CancelFunc
	wg     sync.WaitGroup
	subs   []*nats.Subscription
	// rpcHandler is the middleware of every RPC subject, the queue
	// group's and the lease holder's (holder).
	rpcHandler nats.MsgHandler
	holder     holderSubs
	closeOnce  sync.Once
}

// Option tunes a Coordinator.
type Option func(*Coordinator)

// WithKicker lets revocation close connections still using revoked tokens.
func WithKicker(k Kicker) Option { return func(c *Coordinator) { c.kicker = k } }

// WithStateConn reaches JetStream on sc instead of the control connection:
// the embedded server keeps state in an account of its own.
func WithStateConn(sc *nats.Conn) Option { return func(c *Coordinator) { c.state = sc } }

// withTokenState shares the token state cache with a connection authorizer.
func withTokenState(r *tokenStore) Option { return func(c *Coordinator) { c.tokens = r } }

// New opens the state buckets, loads them, subscribes the request handlers
// and starts the rotation loop.
func New(ctx context.Context, nc *nats.Conn, issuer *token.Issuer, cfg Config, opts ...Option) (*Coordinator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, errors.Wrap(err, "coordinator configuration")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c := &Coordinator{
		nc: nc, state: nc, issuer: issuer, verified: token.NewVerifyCache(issuer), cfg: cfg, log: cfg.Logger, tokens: newTokenStore(),
		idleUntil: map[string]time.Time{}, runCtx: runCtx, cancel: cancel,
		pool: newHandlerPool(cfg.Limits.Handlers), mint: newMintLocks(),
		errLog: bus.NewRateLog(cfg.Logger, cfg.ErrorLogInterval, cfg.Now),
	}
	c.limits = c.newTownLimiter()
	for _, o := range opts {
		o(c)
	}
	if c.js, err = jetstream.New(c.state); err != nil {
		cancel()
		return nil, errors.Wrap(err, "opening JetStream")
	}
	js := c.js
	tokens := c.tokens
	loadCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	// On a cluster every coordinator sweeps a town again when its watch
	// sees the town's revocation, not only the one that saved it (see
	// ClusterKicker.KickLater).
	if k, ok := c.kicker.(interface{ KickLater(string, time.Time) }); ok {
		f := k.KickLater
		tokens.onRevoke.Store(&f)
	}
	if err := tokens.open(loadCtx, runCtx, js, cfg.Replicas, &c.wg); err != nil {
		cancel()
		return nil, errors.WithHint(errors.Wrap(err, "loading token state"), "is JetStream enabled on the NATS server?")
	}

	c.live = &liveness{lastSeen: map[seenKey]time.Time{}, startedAt: c.now(), restartGrace: 2 * c.deadAfter()}
	if c.st, err = openState(loadCtx, runCtx, js, cfg.Replicas, &c.wg, c.live.record); err != nil {
		cancel()
		c.wg.Wait()
		return nil, errors.Wrap(err, "loading state")
	}

	if c.leases, err = openLeases(loadCtx, runCtx, js, cfg.Replicas, cfg.LeaseTTL, c.leaseTowns, c.log, &c.wg); err != nil {
		cancel()
		c.wg.Wait()
		return nil, errors.Wrap(err, "loading leases")
	}
	c.leases.renewAll(loadCtx)

	if err := c.metrics.register(c); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.subscribe(); err != nil {
		c.Close()
		return nil, err
	}
	c.syncHolderSubs()
	c.wg.Go(func() { c.rotationLoop(runCtx) })
	c.wg.Go(func() { c.patrolLoop(runCtx) })
	c.wg.Go(func() { c.leaseLoop(runCtx) })
	return c, nil
}

func (c *Coordinator) subscribe() error {
	c.rpcHandler = c.handleRPC(c.rpcMethods())
	handlers := []struct {
		subject string
		h       nats.MsgHandler
	}{
		{schemas.AllTowns.TokenGet(), c.tokenGetAdmission(c.handleTokenGet)},
		{schemas.AllTowns.RPCAll(), c.rpcHandler}, // its own concurrency
		{schemas.AllTowns.Heartbeat(), c.heartbeatAdmission(c.handleHeartbeat)},
	}
	for method, h := range c.adminHandlers() {
		handlers = append(handlers, struct {
			subject string
			h       nats.MsgHandler
		}{schemas.AdminRoot + "." + method, c.pool.concurrent(h)})
	}
	for _, h := range handlers {
		s, err := c.nc.QueueSubscribe(h.subject, schemas.CoordinatorQueue, h.h)
		if err != nil {
			return errors.Wrapf(err, "subscribing %s", h.subject)
		}
		c.subs = append(c.subs, s)
	}
	return errors.Wrap(c.nc.Flush(), "flushing subscriptions")
}

// Close stops every handler and loop and waits for them: it takes no new
// requests, cancels the context every handler and loop runs under (so a
// dispatch waiting on a container ends now, not at its deadline), then
// waits for the handlers and the loops. It is safe to call twice. It does
// not close the connection it was given.
func (c *Coordinator) Close() {
	c.closeOnce.Do(func() {
		for _, s := range c.subs {
			_ = s.Unsubscribe()
		}
		c.closeHolderSubs()
		c.pool.close()
		c.cancel()
		c.pool.wait() // before wg.Wait: a handler may still start a goroutine of wg
		c.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
		defer cancel()
		c.leases.releaseAll(ctx)
	})
}

// now is the coordinator's one clock: Config.Now, in UTC, so that every
// time it stores and sends reads the same way.
func (c *Coordinator) now() time.Time { return c.cfg.Now().UTC() }

// leaseLoop keeps this coordinator's towns' leases until ctx is done.
// The lease holder's RPC subscriptions follow the leases.
func (c *Coordinator) leaseLoop(ctx context.Context) { c.leases.run(ctx, c.syncHolderSubs) }

// leaseTowns lists the towns whose loops need a lease: every town, and
// every town with token state that is not deleted.
func (c *Coordinator) leaseTowns() []string {
	seen := map[string]bool{}
	var out []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, t := range c.st.towns.List(nil) {
		add(t.TownID)
	}
	for _, t := range c.tokens.snapshot() {
		if !t.Deleted {
			add(t.TownID)
		}
	}
	return out
}
