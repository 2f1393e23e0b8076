package coordinator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
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
	nc     *nats.Conn
	js     jetstream.JetStream
	issuer *Issuer
	cfg    Config
	log    *slog.Logger
	tokens *revocations
	kicker Kicker

	// idleUntil remembers towns found with no container, so the rotation
	// loop does not probe them every tick. A cache only: losing it costs
	// one probe per town.
	idleMu    sync.Mutex
	idleUntil map[string]time.Time

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	subs      []*nats.Subscription
	closeOnce sync.Once
}

// Option tunes a Coordinator.
type Option func(*Coordinator)

// WithKicker lets revocation close connections still using revoked tokens.
func WithKicker(k Kicker) Option { return func(c *Coordinator) { c.kicker = k } }

// New opens the state buckets, loads them, subscribes the request handlers
// and starts the rotation loop. tokens may be nil; the daemon passes the
// cache its connection authorizer already asks.
func New(ctx context.Context, nc *nats.Conn, issuer *Issuer, cfg Config, tokens *revocations, opts ...Option) (*Coordinator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, errors.Wrap(err, "coordinator configuration")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, errors.Wrap(err, "opening JetStream")
	}
	if tokens == nil {
		tokens = newRevocations()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c := &Coordinator{
		nc: nc, js: js, issuer: issuer, cfg: cfg, log: cfg.Logger, tokens: tokens,
		idleUntil: map[string]time.Time{}, cancel: cancel,
	}
	for _, o := range opts {
		o(c)
	}
	loadCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	w, err := tokens.open(loadCtx, js, cfg.Replicas)
	if err != nil {
		cancel()
		return nil, errors.WithHint(errors.Wrap(err, "loading token state"), "is JetStream enabled on the NATS server?")
	}
	c.wg.Go(func() { tokens.follow(w) })
	c.wg.Go(func() { <-runCtx.Done(); _ = w.Stop() })

	if err := c.subscribe(); err != nil {
		c.Close()
		return nil, err
	}
	c.wg.Go(func() { c.rotationLoop(runCtx) })
	return c, nil
}

func (c *Coordinator) subscribe() error {
	handlers := []struct {
		subject string
		h       nats.MsgHandler
	}{
		{schemas.AllTowns.TokenGet(), c.handleTokenGet},
		{schemas.AdminRoot + "." + schemas.AdminTokenRotate, c.adminHandler(c.adminTokenRotate)},
		{schemas.AdminRoot + "." + schemas.AdminTokenRevoke, c.adminHandler(c.adminTokenRevoke)},
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

// Close stops every handler and loop and waits for them. It is safe to call
// twice. It does not close the connection it was given.
func (c *Coordinator) Close() {
	c.closeOnce.Do(func() {
		for _, s := range c.subs {
			_ = s.Drain()
		}
		c.cancel()
		c.wg.Wait()
	})
}

func (c *Coordinator) now() time.Time { return c.cfg.Now() }
