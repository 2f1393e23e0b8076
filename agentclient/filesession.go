package agentclient

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// FileSession is an agent process's session: it reads the container's
// token file when it connects (never a copy taken at start), holds the
// container's permissions, and on Refresh asks …token.get itself (keeping
// the fresh token in memory: the file is the container's to write).
type FileSession struct {
	town    schemas.Town
	nc      *nats.Conn
	timeout time.Duration

	file string
	drop *dropSignal

	// lastErr is the last error the client reported, to say why it never
	// connected.
	lastErr atomic.Pointer[error]

	mu sync.Mutex
	// token is the newest token the session holds.
	token string
	// retry is the reconnect backoff, afresh at each (re)connect.
	retry backoff
}

// connectToken is the token to (re)connect with: the token file's, read
// now, unless the session holds a newer one.
func (s *FileSession) connectToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok, err := ReadTokenFile(s.file); err == nil && tok != s.token {
		if fresh, err := schemas.PeekContainerClaims(tok); err == nil {
			if held, err := schemas.PeekContainerClaims(s.token); err != nil || fresh.Issued().After(held.Issued()) {
				s.token = tok
			}
		}
	}
	return s.token
}

// OpenFileSession connects to url with the token in tokenFile; opts are
// added to the connection's (e.g. bus.ClientTLS's Option).
func OpenFileSession(ctx context.Context, url, tokenFile string, timeout time.Duration, opts ...nats.Option) (*FileSession, error) {
	tok, err := ReadTokenFile(tokenFile)
	if err != nil {
		return nil, err
	}
	claims, err := schemas.PeekContainerClaims(tok)
	if err != nil {
		return nil, errors.Wrapf(err, "token file %s", tokenFile)
	}
	town, err := schemas.ForTown(claims.TownID)
	if err != nil {
		return nil, err
	}
	s := &FileSession{town: town, token: tok, timeout: timeout, file: tokenFile, drop: newDropSignal(),
		retry: backoff{lo: DefaultReconnectMin, hi: DefaultReconnectMax}}
	// The bus may be restarting: keep trying (requests wait, bounded by
	// their context) rather than fail the agent at once.
	// A refused token is retried too (the container may write a fresh
	// one), backing off like the container, until ctx ends; the error
	// then says why.
	seen := func(err error) {
		if err != nil {
			s.lastErr.Store(&err)
		}
	}
	s.nc, err = nats.Connect(url, nats.Name("gastown-tool"),
		nats.TokenHandler(s.connectToken),
		nats.CustomInboxPrefix(town.Inbox()), nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true), nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(int) time.Duration {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.retry.next()
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { seen(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { seen(err) }),
		nats.ConnectHandler(func(*nats.Conn) { s.resetRetry() }),
		nats.ReconnectHandler(func(*nats.Conn) { s.resetRetry() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { seen(err); s.drop.dropped() }),
		nats.ClosedHandler(func(*nats.Conn) { s.drop.dropped() }),
		allOf(opts))
	if err == nil {
		err = waitConnected(ctx, s.nc)
	}
	if err != nil {
		if s.nc != nil {
			s.nc.Close()
		}
		var last error
		if p := s.lastErr.Load(); p != nil {
			last = *p
		}
		held, _ := schemas.PeekContainerClaims(s.connectToken())
		return nil, connectError(errors.Wrapf(err, "connecting to %s", url), last, town.ID(), !time.Now().Before(held.Expires()),
			"is the bus reachable from this container, and is the token file current? for a tls:// bus, is "+EnvNatsCA+" its CA (and "+EnvNatsCert+" and "+EnvNatsKey+" set if it requires client certificates)?")
	}
	return s, nil
}

// resetRetry starts the reconnect backoff afresh: connected.
func (s *FileSession) resetRetry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retry.reset()
}

// Town is the session's town.
func (s *FileSession) Town() schemas.Town { return s.town }

// Token is the newest token the session holds.
func (s *FileSession) Token() string { s.mu.Lock(); defer s.mu.Unlock(); return s.token }

// Do runs f on the session's connection, with a context that also ends
// when the connection drops.
func (s *FileSession) Do(ctx context.Context, f func(ctx context.Context, nc *nats.Conn) error) error {
	return s.drop.run(ctx, func(ctx context.Context) error { return f(ctx, s.nc) })
}

// Refresh asks the coordinator for a fresh token.
func (s *FileSession) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var rot schemas.TokenRotation
	if err := bus.Request(ctx, s.nc, s.town.TokenGet(), &schemas.TokenRequest{TownID: s.town.ID(), ContainerID: "tool"}, &rot); err != nil {
		return errors.Wrap(err, "asking for a fresh token")
	}
	if _, err := schemas.PeekContainerClaims(rot.Token); err != nil {
		return err
	}
	s.mu.Lock()
	s.token = rot.Token
	s.mu.Unlock()
	return nil
}

// Close closes the connection.
func (s *FileSession) Close() { s.nc.Close() }

var _ Session = (*FileSession)(nil)

// allOf is opts as one nats.Option.
func allOf(opts []nats.Option) nats.Option {
	return func(o *nats.Options) error {
		for _, apply := range opts {
			if err := apply(o); err != nil {
				return err
			}
		}
		return nil
	}
}

// waitConnected waits until nc is connected (a first connect may still be
// retrying), at most until ctx is done.
func waitConnected(ctx context.Context, nc *nats.Conn) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			if last := nc.LastError(); last != nil {
				// Why the connects failed (a TLS error, say) says more.
				return errors.WithSecondaryError(errors.Wrap(last, "waiting for the bus"), ctx.Err())
			}
			return errors.Wrap(ctx.Err(), "waiting for the bus")
		case <-t.C:
		}
	}
	return nil
}
