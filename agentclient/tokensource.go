package agentclient

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Log keys.
const (
	keyTown    = "town"
	keyErr     = "err"
	keyExpires = "expiresAt"
	keySwitch  = "switchAt"
)

// held is a token and the claims read from it.
type held struct {
	token  string
	claims schemas.ContainerClaims
}

// Handler is a subscription the source carries from connection to
// connection, in a queue group so a message is handled once while two
// connections overlap.
type Handler struct {
	Subject string
	Queue   string
	Handle  nats.MsgHandler
}

// TokenSource holds the newest container token of a town and keeps a
// connection to the bus. New tokens arrive pushed on …token (stored, then
// acknowledged) or asked for on …token.get, and every request carries the
// newest at once. The connection itself moves to the newest token at half
// its connection's remaining life (PROTOCOL.md, Connecting), or at once
// when its token was revoked or it lost its permissions: make before
// break, the new connection is opened and subscribed first, new requests
// go to it, and the old one is closed once its requests in flight are
// answered. A rotation thus costs an acknowledgement, not a reconnection.
// Safe for concurrent use.
//
// Its state is the fields under mu, changed by its methods and the
// connections' callbacks; one goroutine, loop, acts on it. mu is never held
// while calling a connection (nats calls the token handler, which takes
// mu, with the connection's own lock held) nor across a disk write.
type TokenSource struct {
	// Set by Start, then never changed.
	cfg      Config
	town     schemas.Town
	log      *slog.Logger
	handlers []Handler       // subscribed on every connection, the source's own …token first
	health   *busHealth      // what it knows of the bus (its own lock): the cause of trouble, the reconnect backoff
	ctx      context.Context // ends with Close: the loop and the retiring connections
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the loop and the retiring connections
	// wake (buffer 1) is poked after every change the loop may act on.
	wake chan struct{}
	// heartbeatSaid (buffer 1) is poked when heartbeat changes.
	heartbeatSaid chan struct{}

	// acceptMu makes accept one step: the token file is written, then the
	// token held, never two at once. It is held across the file's write
	// (synced to disk), which mu never is: Token never waits for a disk.
	acceptMu sync.Mutex

	mu sync.Mutex
	// cur is the connection new requests go to; only the loop replaces it.
	cur *conn
	// newest is the newest token held: what every request carries, and
	// what the token file holds.
	newest *held
	// adopted counts the tokens held, the bootstrap one included.
	adopted int64
	// switches counts the moves to a new connection.
	switches int64
	// refreshWanted asks the loop for a fresh token now: after a
	// permissions violation, which is how a reconnect with recovery
	// permissions only (an expired token) shows itself. A plain reconnect
	// asks for nothing, so a restarted server is not flooded.
	refreshWanted bool
	// switchWanted asks the loop to move to a new connection as soon as it
	// holds a newer token than the connection's, for the same reason.
	switchWanted bool
	// revokedBefore is the newest revocation the coordinator told of: a
	// connection using a token issued before it is replaced at once.
	revokedBefore time.Time
	// heartbeat is the newest heartbeat interval the coordinator sent
	// (0: none yet).
	heartbeat time.Duration
	// closed: Close was called; Do refuses new requests.
	closed bool
}

// conn is one connection and the requests in flight on it.
type conn struct {
	nc       *nats.Conn
	subs     []*nats.Subscription
	inflight sync.WaitGroup
	closed   chan struct{} // closed by the connection's closed handler

	// Guarded by the source's mu.
	// used is the token the connection last (re)connected with, since
	// when.
	used  *held
	since time.Time
	// retiring: the source is closing it on purpose.
	retiring bool
}

// Start checks the bootstrap token, writes the token file, connects, asks
// for a fresh token, and keeps the source fresh until Close. handlers are
// subscribed on every connection besides the source's own …token handler.
func Start(ctx context.Context, cfg Config, handlers ...Handler) (*TokenSource, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	claims, err := schemas.PeekContainerClaims(cfg.Token)
	if err != nil {
		return nil, errors.WithHint(errors.Wrap(err, EnvContainerToken),
			"it must be a container token, as printed by `gastown token mint --town <town>`")
	}
	town, err := schemas.ForTown(claims.TownID)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &TokenSource{
		cfg: cfg, town: town, log: cfg.Logger.With(keyTown, town.ID()),
		wake: make(chan struct{}, 1), ctx: runCtx, cancel: cancel,
		heartbeatSaid: make(chan struct{}, 1),
	}
	s.health = newBusHealth(cfg, s.log, town.ID())
	s.handlers = append([]Handler{{Subject: town.Token(), Queue: schemas.ContainerQueue, Handle: s.handleRotation}}, handlers...)
	if err := s.accept(cfg.Token); err != nil {
		cancel()
		return nil, err
	}
	c, err := s.dial(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	s.mu.Lock()
	s.cur = c
	s.mu.Unlock()
	// A fresh token right away: the bootstrap one may be old. Failing here
	// is not fatal; the current token still works and the loop retries.
	if err := s.Refresh(ctx); err != nil {
		s.log.Warn("could not get a fresh token at start; carrying on with the bootstrap token", keyErr, err)
	}
	s.wg.Go(s.loop)
	return s, nil
}

// Town is the source's town.
func (s *TokenSource) Town() schemas.Town { return s.town }

// ContainerID names this container.
func (s *TokenSource) ContainerID() string { return s.cfg.ContainerID }

// Token is the newest token held: what every request must carry.
func (s *TokenSource) Token() string { return s.held().token }

// Expires is when the newest token expires.
func (s *TokenSource) Expires() time.Time { return s.held().claims.Expires() }

// held is the newest token held.
func (s *TokenSource) held() *held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newest
}

// Switches counts how many times the source moved to a new connection.
func (s *TokenSource) Switches() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.switches
}

// Adopted counts the tokens the source has held, the bootstrap one
// included: one more for every rotation or refresh it took.
func (s *TokenSource) Adopted() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adopted
}

// Conn is the current connection. Prefer Do for requests, so the connection
// is not closed under them.
func (s *TokenSource) Conn() *nats.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.nc
}

// Do runs f with the current connection, which stays open until f returns.
// Unlike an agent's FileSession it does not watch for the connection
// dropping under a request: the container's own requests are all short
// (token.get, bounded by RequestTimeout), and its callers are the hot path.
func (s *TokenSource) Do(ctx context.Context, f func(ctx context.Context, nc *nats.Conn) error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("token source is closed")
	}
	c := s.cur
	c.inflight.Add(1)
	s.mu.Unlock()
	defer c.inflight.Done()
	return f(ctx, c.nc)
}

// Refresh asks the coordinator for a fresh token (…token.get) and adopts it.
func (s *TokenSource) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	var rot schemas.TokenRotation
	err := s.Do(ctx, func(ctx context.Context, nc *nats.Conn) error {
		return bus.Request(ctx, nc, s.town.TokenGet(),
			&schemas.TokenRequest{TownID: s.town.ID(), ContainerID: s.cfg.ContainerID}, &rot)
	})
	if errors.Is(err, nats.ErrNoResponders) {
		s.health.failed(err, false) // logged once: the coordinator is not answering
	}
	if err != nil {
		return errors.Wrap(err, "asking for a fresh token")
	}
	s.health.answered()
	if rot.TownID != s.town.ID() {
		return errors.Newf("coordinator answered with a token for town %s", rot.TownID)
	}
	if err := s.accept(rot.Token); err != nil {
		return err
	}
	s.noteRevoked(rot.RevokedBefore)
	s.noteHeartbeat(rot.HeartbeatInterval())
	return nil
}

// HeartbeatInterval is the newest heartbeat interval the coordinator sent
// in a TokenRotation, or 0 when it has sent none yet.
func (s *TokenSource) HeartbeatInterval() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heartbeat
}

// HeartbeatIntervalChanged is signalled when HeartbeatInterval changes.
func (s *TokenSource) HeartbeatIntervalChanged() <-chan struct{} { return s.heartbeatSaid }

// noteHeartbeat records the coordinator's heartbeat interval (0: not said).
func (s *TokenSource) noteHeartbeat(d time.Duration) {
	d = d.Truncate(time.Millisecond) // as the wire has it
	if d <= 0 {
		return
	}
	s.mu.Lock()
	same := s.heartbeat == d
	s.heartbeat = d
	s.mu.Unlock()
	if same {
		return
	}
	select {
	case s.heartbeatSaid <- struct{}{}:
	default:
	}
}

// noteRevoked records that the town's tokens issued before t are revoked,
// and wakes the loop when that is news.
func (s *TokenSource) noteRevoked(t time.Time) {
	s.mu.Lock()
	news := t.After(s.revokedBefore)
	if news {
		s.revokedBefore = t
	}
	s.mu.Unlock()
	if news {
		s.poke()
	}
}

// revokedLocked reports whether h was issued before the newest revocation
// told. Called with mu held.
func (s *TokenSource) revokedLocked(h *held) bool {
	return h.claims.Issued().Before(s.revokedBefore)
}

// want asks the loop for a fresh token and a new connection.
func (s *TokenSource) want() {
	s.mu.Lock()
	s.refreshWanted, s.switchWanted = true, true
	s.mu.Unlock()
	s.poke()
}

// accept adopts tok if it is a container token of this town not older
// than the newest held: it is written to the token file first, then held.
// A token issued in the same millisecond as the one held (tokens differ by
// their jti) is its equal, and the one received last is held.
func (s *TokenSource) accept(tok string) error {
	claims, err := schemas.PeekContainerClaims(tok)
	return s.acceptPeeked(tok, claims, err)
}

// acceptPeeked is accept of a token already peeked at (claims and err are
// PeekContainerClaims's): a pushed token is peeked at once, not twice.
func (s *TokenSource) acceptPeeked(tok string, claims schemas.ContainerClaims, err error) error {
	if err != nil {
		return errors.Wrap(err, "received token")
	}
	if s.town.ID() != "" && claims.TownID != s.town.ID() {
		return errors.Mark(errors.Newf("received a token for town %s, not %s", claims.TownID, s.town.ID()), errOtherTown)
	}
	s.acceptMu.Lock()
	defer s.acceptMu.Unlock()
	if cur := s.held(); cur != nil && (tok == cur.token || claims.Issued().Before(cur.claims.Issued())) {
		return nil // held already, or older: nothing to do
	}
	if s.cfg.TokenFile != "" {
		if err := WriteTokenFile(s.cfg.TokenFile, tok); err != nil {
			return errors.Mark(err, errTokenFile)
		}
	}
	s.mu.Lock()
	s.newest = &held{token: tok, claims: claims}
	s.adopted++
	s.mu.Unlock()
	if s.log.Enabled(context.Background(), slog.LevelDebug) { // its argument costs an allocation, on every rotation
		s.log.Debug("new token held", keyExpires, claims.Expires())
	}
	s.poke()
	return nil
}

func (s *TokenSource) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// handleRotation answers …token: store the pushed token, then acknowledge.
func (s *TokenSource) handleRotation(m *nats.Msg) {
	var rot schemas.TokenRotation
	if err := schemas.Decode(m.Data, &rot); err != nil {
		_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodeInvalidArgument, "invalid token rotation: %s", err.Error()))
		return
	}
	if rot.TownID != s.town.ID() {
		s.log.Warn("refused a pushed token for another town", "otherTown", rot.TownID)
		_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodePermissionDenied, "this container is town %s's, not %s's", s.town.ID(), rot.TownID))
		return
	}
	claims, peekErr := schemas.PeekContainerClaims(rot.Token)
	if peekErr == nil && !claims.Expires().After(s.cfg.Now()) {
		s.log.Warn("refused a pushed token that has expired", keyExpires, claims.Expires())
		_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodeUnauthenticated, "the pushed token expired at %s", claims.Expires().UTC().Format(time.RFC3339)))
		return
	}
	if err := s.acceptPeeked(rot.Token, claims, peekErr); err != nil {
		s.log.Warn("refused a pushed token", keyErr, err)
		_ = bus.RespondRefusal(m, refusalOf(err))
		return
	}
	s.noteRevoked(rot.RevokedBefore)
	s.noteHeartbeat(rot.HeartbeatInterval())
	if err := bus.Respond(m, &schemas.Ack{OK: true}); err != nil {
		s.log.Debug("acknowledging token", keyErr, err)
	}
}

// refusalOf is the wire refusal of a token accept refused: a token that
// is not a container token of this town is invalid_argument (another
// town's, permission_denied); one that could not be stored, internal.
func refusalOf(err error) *schemas.Error {
	switch {
	case errors.Is(err, errOtherTown):
		return schemas.NewError(schemas.CodePermissionDenied, "%s", err.Error())
	case errors.Is(err, errTokenFile):
		return schemas.NewError(schemas.CodeInternal, "the token could not be stored in the token file")
	}
	return schemas.NewError(schemas.CodeInvalidArgument, "%s", err.Error())
}

// Marks of accept's refusals.
var (
	errOtherTown = errors.New("token of another town")
	errTokenFile = errors.New("token file not written")
)

// dial opens a connection that authenticates with the newest token on every
// connect and reconnect, and subscribes every handler on it.
func (s *TokenSource) dial(ctx context.Context) (*conn, error) {
	c := &conn{closed: make(chan struct{})}
	nc, err := nats.Connect(s.cfg.URL,
		nats.Name("gastown-container "+s.cfg.ContainerID),
		nats.TokenHandler(func() string {
			s.mu.Lock()
			defer s.mu.Unlock()
			c.used, c.since = s.newest, s.cfg.Now()
			return s.newest.token
		}),
		nats.CustomInboxPrefix(s.town.Inbox()),
		s.cfg.TLS.Option(),
		nats.MaxReconnects(-1),
		// A restarting coordinator refuses tokens until it has loaded its
		// revocations: keep trying rather than give up on auth errors at
		// once, backing off, and give up only after RefusedExitAfter
		// (bushealth.go).
		nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(int) time.Duration { return s.health.delay() }),
		nats.ReconnectHandler(func(*nats.Conn) { s.health.connected(); s.poke() }),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed); s.poke() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.mu.Lock()
			meant := s.closed || c.retiring
			s.mu.Unlock()
			if !meant {
				s.health.disconnected(err, s.expired())
			}
		}),
		// A failed reconnect: the server unreachable (an auth refusal
		// comes to the ErrorHandler instead).
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { s.health.failed(err, s.expired()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Debug("bus error", keyErr, err)
			if classify(err, false) == causeRefused {
				s.health.failed(err, s.expired())
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				s.want()
			}
		}),
	)
	if err != nil {
		return nil, s.dialError(err)
	}
	c.nc = nc
	for _, h := range s.handlers {
		sub, err := nc.QueueSubscribe(h.Subject, h.Queue, h.Handle)
		if err != nil {
			nc.Close()
			return nil, errors.Wrapf(err, "subscribing %s", h.Subject)
		}
		c.subs = append(c.subs, sub)
	}
	if err := nc.FlushWithContext(ctxOr(ctx, s.cfg.RequestTimeout)); err != nil {
		nc.Close()
		return nil, errors.Wrap(err, "flushing subscriptions")
	}
	if err := nc.LastError(); err != nil {
		nc.Close()
		return nil, errors.Wrap(err, "subscribing")
	}
	return c, nil
}

func ctxOr(ctx context.Context, d time.Duration) context.Context {
	if _, ok := ctx.Deadline(); ok {
		return ctx
	}
	c, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(c, cancel)
	return c
}

// switchAtLocked is when a connection should be replaced: at half of its
// token's remaining life when it connected. Called with the source's mu
// held.
func (c *conn) switchAtLocked() time.Time {
	return c.since.Add(c.used.claims.Expires().Sub(c.since) / 2)
}

// Retry waits of the loop after a failed switch or refresh: retryMin
// doubling up to a twentieth of the token's life left, at most retryMax.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
)

// step is what the loop does when it wakes.
type step int

const (
	stepWait    step = iota // nothing is due
	stepSwitch              // move to a new connection
	stepRefresh             // ask for a fresh token
)

// loop moves to a new connection when the current one reaches half its
// life (or was closed, or uses a revoked token, or lost its permissions)
// and a newer token is held, and asks for a fresh token when the current
// one reaches half its life without one. After a failure it waits its
// backoff even when the connection is past its switch time: an overdue
// switch time alone would retry at once, in a tight loop against a bus or
// coordinator that is down.
func (s *TokenSource) loop() {
	retry := backoff{lo: retryMin}
	var failed time.Duration // the wait after a failure; 0: until the switch time
	for {
		wait := failed
		if wait == 0 {
			wait = s.untilSwitch()
		}
		if !s.sleep(wait) {
			return
		}
		failed = 0
		switch s.next() {
		case stepSwitch:
			if err := s.switchConn(); err != nil {
				s.log.Warn("could not open a connection with the new token; will retry", keyErr, err)
				retry.hi = s.retryCeiling()
				failed = retry.next()
				continue
			}
			s.mu.Lock()
			s.switchWanted = false
			s.mu.Unlock()
			retry.reset()
		case stepRefresh:
			if err := s.Refresh(s.ctx); err != nil {
				s.mu.Lock()
				s.refreshWanted = true
				s.mu.Unlock()
				s.log.Warn("could not get a fresh token; carrying on with the current one", keyErr, err)
				// A coordinator that says when to ask again is believed,
				// up to MaxRetryWait.
				retry.hi = s.retryCeiling()
				failed = max(retry.next(), min(schemas.RetryAfterOf(err), MaxRetryWait))
				continue
			}
			retry.reset()
		}
	}
}

// untilSwitch is the time left until the current connection's switch time.
func (s *TokenSource) untilSwitch() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.switchAtLocked().Sub(s.cfg.Now())
}

// sleep waits d (not at all when it is not positive) or until the loop is
// poked; it reports false when the source is closing.
func (s *TokenSource) sleep(d time.Duration) bool {
	t := s.cfg.Clock.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return false
	case <-s.wake:
	case <-t.C():
	}
	return true
}

// next decides the loop's step from the source's state: a switch when the
// connection was lost, or a newer token is held and the connection is due
// (or asked to move, or uses a revoked token); else a refresh when one was
// asked for or the connection is due without a newer token.
func (s *TokenSource) next() step {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	closedConn := c.nc.IsClosed() // not under mu: see TokenSource
	s.mu.Lock()
	defer s.mu.Unlock()
	due := !s.cfg.Now().Before(c.switchAtLocked())
	newer := s.newest.claims.Issued().After(c.used.claims.Issued())
	if closedConn && !s.closed || newer && (due || s.switchWanted || s.revokedLocked(c.used)) {
		return stepSwitch
	}
	if s.refreshWanted || due {
		s.refreshWanted = false
		return stepRefresh
	}
	return stepWait
}

// retryCeiling is the longest retry wait of the loop: a twentieth of the
// newest token's life left, between retryMin and retryMax.
func (s *TokenSource) retryCeiling() time.Duration {
	left := s.held().claims.Expires().Sub(s.cfg.Now())
	return min(max(left/20, retryMin), retryMax)
}

// switchConn opens a connection with the newest token, moves new requests
// to it, and retires the old one in the background.
func (s *TokenSource) switchConn() error {
	c, err := s.dial(s.ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.cur
	s.cur = c
	s.switches++
	switchAt := c.switchAtLocked()
	s.mu.Unlock()
	s.log.Debug("moved to a new connection", keySwitch, switchAt)
	s.wg.Go(func() { s.retire(old) })
	return nil
}

// retire waits for old's requests in flight (at most DrainTimeout), then
// drains it: its subscriptions finish the messages they hold, and it closes.
func (s *TokenSource) retire(old *conn) {
	s.mu.Lock()
	old.retiring = true
	s.mu.Unlock()
	if !waitTimeout(&old.inflight, s.cfg.DrainTimeout) {
		s.log.Warn("closing an old connection with requests still in flight")
	}
	if err := old.nc.Drain(); err != nil {
		old.nc.Close()
		return
	}
	select {
	case <-old.closed:
	case <-time.After(s.cfg.DrainTimeout):
		old.nc.Close()
	}
}

// waitTimeout waits for wg, at most d; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Close stops the source and closes its connections. Safe to call twice.
func (s *TokenSource) Close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return
	}
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	waitTimeout(&c.inflight, s.cfg.DrainTimeout)
	c.unsubscribe(s.cfg.RequestTimeout)
	c.nc.Close()
}

// unsubscribe takes the connection's subscriptions off the bus and waits
// (at most d) until the server has them off: from then on a request to
// the container (a dispatch) finds no responder at once, rather than
// reaching a connection about to close and waiting out its timeout.
func (c *conn) unsubscribe(d time.Duration) {
	if !c.nc.IsConnected() {
		return // the server dropped them with the connection, or will
	}
	for _, sub := range c.subs {
		_ = sub.Unsubscribe()
	}
	_ = c.nc.FlushTimeout(d)
}
