package agentclient

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrors "github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// Defaults of reconnecting to the bus.
const (
	// DefaultReconnectMin is the wait before the first reconnect attempt;
	// it doubles with each failed one, up to DefaultReconnectMax, with
	// ±25% jitter so a fleet of containers does not reconnect in step.
	DefaultReconnectMin = 100 * time.Millisecond
	DefaultReconnectMax = 30 * time.Second
	// DefaultRefusedExitAfter is how long a container goes on retrying
	// when the bus keeps refusing its token before it gives up (exits
	// non-zero): long enough for a coordinator restart, which refuses
	// tokens until it has loaded its revocations, short enough for a
	// supervisor to bring it back with a fresh token soon.
	DefaultRefusedExitAfter = 5 * time.Minute
)

// ErrTokenRefused is returned (by TokenSource.Err, and so by
// RunContainer) when the bus refused the container's token for longer
// than RefusedExitAfter: it was revoked, signed with a secret the
// coordinator does not accept, or expired past the recovery window. No
// retry can fix that; a fresh bootstrap token can.
var ErrTokenRefused = cerrors.New("the bus keeps refusing the container token")

// Log keys of the bus's health.
const (
	keyHint     = "hint"
	keyGiveUpIn = "givesUpAfter"
	keyFor      = "after"
)

// Why the bus cannot be used, as far as a container can tell.
type busCause int

const (
	causeNone busCause = iota
	// causeRefused: the server refused the token while it had not expired.
	causeRefused
	// causeRefusedExpired: the server refused an expired token.
	causeRefusedExpired
	// causeUnreachable: nothing listens at the address, or it does not resolve.
	causeUnreachable
	// causeLost: the connection dropped for another reason.
	causeLost
	// causeNotAnswering: connected, but no coordinator answers …token.get.
	causeNotAnswering
	// causeStarting: refused right after the bus was unreachable: the
	// embedded server refuses every token until the coordinator has
	// loaded its revocations, and says no more than "Authorization
	// Violation". Taken for a start for up to ReconnectMax; a refusal
	// lasting longer is causeRefused.
	causeStarting
)

// refusal reports whether c is a refused token, whatever the reason.
func (c busCause) refusal() bool {
	return c == causeRefused || c == causeRefusedExpired || c == causeStarting
}

// classify names the cause of a failed connect or reconnect.
func classify(err error, expired bool) busCause {
	if err == nil {
		return causeNone
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		if expired {
			return causeRefusedExpired
		}
		return causeRefused
	}
	var dns *net.DNSError
	if errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, nats.ErrNoServers) {
		return causeUnreachable
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return causeNotAnswering
	}
	if errors.Is(err, io.EOF) {
		return causeLost
	}
	return causeLost
}

// busHealth is what a token source knows of its bus: the current cause of
// trouble (logged once per change, and once more when it is over), the
// reconnect backoff, and whether the token has been refused long enough
// to give up. Safe for concurrent use.
type busHealth struct {
	log    *slog.Logger
	now    func() time.Time
	town   string
	max    time.Duration // the longest reconnect wait
	giveUp time.Duration

	mu       sync.Mutex
	cause    busCause
	since    time.Time // when cause began
	retry    backoff   // the reconnect backoff: consecutive failed attempts
	upSince  time.Time // when the connection last came up
	fatal    chan struct{}
	fatalErr error
}

func newBusHealth(cfg Config, log *slog.Logger, town string) *busHealth {
	return &busHealth{log: log, now: cfg.Now, town: town, max: cfg.ReconnectMax,
		retry:  backoff{lo: cfg.ReconnectMin, hi: cfg.ReconnectMax},
		giveUp: cfg.RefusedExitAfter, fatal: make(chan struct{})}
}

// delay is the wait before the next reconnect attempt: ReconnectMin
// doubling to ReconnectMax with each failed attempt, ±25% jitter.
func (h *busHealth) delay() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.retry.next()
}

// connectError says why a connection never came up, from the last error
// the client saw, and what to do. hint is added when the cause is unknown.
func connectError(err, last error, town string, expired bool, hint string) error {
	switch classify(last, expired) {
	case causeRefused:
		return cerrors.WithHint(cerrors.Mark(cerrors.Wrapf(err, "the bus refused the container token, which has not expired: it was revoked, or is signed with a secret the coordinator does not accept (%v)", last), ErrTokenRefused),
			"if the town's tokens were revoked, restart the container with a fresh bootstrap token: gastown token mint --town "+town)
	case causeRefusedExpired:
		return cerrors.WithHint(cerrors.Mark(cerrors.Wrapf(err, "the bus refused the container token, which has expired (%v)", last), ErrTokenRefused),
			"is the container running and refreshing its token file? If not, restart it with a fresh bootstrap token: gastown token mint --town "+town)
	case causeUnreachable:
		return cerrors.WithHint(cerrors.Wrapf(err, "the bus is unreachable (%v)", last), "is the coordinator running, and is "+EnvNatsURL+" its address?")
	}
	return cerrors.WithHint(err, hint)
}

// failed records a failed attempt (or a lost connection) and logs its
// cause if it is news.
func (h *busHealth) failed(err error, expired bool) {
	c := classify(err, expired)
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if c == causeRefused && (h.cause == causeUnreachable || h.cause == causeStarting && now.Sub(h.since) < h.max) {
		c = causeStarting
	}
	if c == h.cause {
		h.checkGiveUp(now)
		return
	}
	if !(h.cause.refusal() && c.refusal()) {
		h.since = now
	}
	h.cause = c
	switch c {
	case causeStarting:
		h.log.Warn("the bus refuses the container token just after it was unreachable: the coordinator is probably still starting; retrying with backoff",
			keyErr, err)
	case causeRefused:
		h.log.Error("the bus refused the container token, which has not expired: it was revoked, or is signed with a secret the coordinator does not accept (or the coordinator is still starting); retrying with backoff",
			keyErr, err, keyHint, "if the town's tokens were revoked, restart this container with a fresh bootstrap token: gastown token mint --town "+h.town,
			keyGiveUpIn, h.giveUp)
	case causeRefusedExpired:
		h.log.Error("the bus refused the container token, which has expired (past the recovery window, or revoked); retrying with backoff",
			keyErr, err, keyHint, "restart this container with a fresh bootstrap token: gastown token mint --town "+h.town,
			keyGiveUpIn, h.giveUp)
	case causeUnreachable:
		h.log.Warn("the bus is unreachable (connection refused or the name does not resolve); retrying with backoff",
			keyErr, err, keyHint, "is the coordinator running, and is --server ("+EnvNatsURL+") its address?")
	case causeNotAnswering:
		h.log.Warn("connected, but no coordinator answers yet (still starting?); retrying with backoff", keyErr, err)
	default:
		h.log.Warn("connection to the bus lost; reconnecting with backoff", keyErr, err)
	}
	h.checkGiveUp(now)
}

// checkGiveUp declares the source failed once its token has been refused
// for giveUp. Called with mu held.
func (h *busHealth) checkGiveUp(now time.Time) {
	if h.giveUp <= 0 || h.fatalErr != nil || !h.cause.refusal() || now.Sub(h.since) < h.giveUp {
		return
	}
	h.fatalErr = cerrors.WithHint(cerrors.Wrapf(ErrTokenRefused, "refused for %s", now.Sub(h.since).Round(time.Second)),
		"restart this container with a fresh bootstrap token: gastown token mint --town "+h.town)
	h.log.Error("giving up: the bus kept refusing the container token", keyFor, now.Sub(h.since).Round(time.Second))
	close(h.fatal)
}

// connected records that a connection came up, and says so once if there
// had been trouble.
func (h *busHealth) connected() {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.upSince = now
	if h.cause != causeNone {
		h.log.Info("connection to the bus is back", keyFor, now.Sub(h.since).Round(time.Millisecond))
	}
	h.cause = causeNone
}

// answered records that the coordinator answered: "not answering" is over.
func (h *busHealth) answered() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cause == causeNotAnswering {
		h.log.Info("the coordinator answers again", keyFor, h.now().Sub(h.since).Round(time.Millisecond))
		h.cause = causeNone
	}
}

// disconnected records a lost connection: the backoff starts afresh if it
// had been up longer than the longest wait (it was healthy, not flapping).
func (h *busHealth) disconnected(err error, expired bool) {
	h.mu.Lock()
	if !h.upSince.IsZero() && h.now().Sub(h.upSince) >= h.max {
		h.retry.reset()
	}
	h.mu.Unlock()
	if err == nil {
		err = cerrors.New("connection closed")
	}
	h.failed(err, expired)
}

// Done is closed when the source gave up; Err then says why.
func (h *busHealth) Done() <-chan struct{} { return h.fatal }

// Err is why the source gave up, or nil.
func (h *busHealth) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fatalErr
}

// expired reports whether the newest token held has expired.
func (s *TokenSource) expired() bool {
	return !s.cfg.Now().Before(s.held().claims.Expires())
}

// dialError says why a connection could not be opened, and what to do.
func (s *TokenSource) dialError(err error) error {
	err = cerrors.Wrapf(err, "connecting to %s", s.cfg.URL)
	hint := "restart this container with a fresh bootstrap token: gastown token mint --town " + s.town.ID()
	switch classify(err, s.expired()) {
	case causeRefused:
		return cerrors.WithHint(cerrors.Mark(cerrors.Wrap(err, "the bus refused the container token, which has not expired: it was revoked, or is signed with a secret the coordinator does not accept"), ErrTokenRefused),
			"if the town's tokens were revoked, "+hint)
	case causeRefusedExpired:
		return cerrors.WithHint(cerrors.Mark(cerrors.Wrap(err, "the bus refused the container token, which has expired"), ErrTokenRefused), hint)
	case causeUnreachable:
		return cerrors.WithHint(cerrors.Wrap(err, "the bus is unreachable"),
			"is the coordinator running, and is --server ("+EnvNatsURL+") its address?")
	}
	return cerrors.WithHint(err, "is the coordinator reachable, and is the token valid and not revoked?")
}

// Done is closed when the source gave up because the bus kept refusing
// its token (see Config.RefusedExitAfter); Err then says why.
func (s *TokenSource) Done() <-chan struct{} { return s.health.Done() }

// Err is why the source gave up, or nil.
func (s *TokenSource) Err() error { return s.health.Err() }
