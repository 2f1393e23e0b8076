package mcpserver

import (
	"context"
	"sync"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// fileSession is an agentclient.FileSession whose token is the token
// file's at every call (the container rewrites it at each rotation), or
// the one the session fetched itself when that is newer: a long-lived MCP
// server must never keep using the token it started with.
type fileSession struct {
	*agentclient.FileSession
	file string
}

var _ agentclient.Session = (*fileSession)(nil)

// Token is the newest of the token file's token and the session's.
func (s *fileSession) Token() string {
	held := s.FileSession.Token()
	tok, err := agentclient.ReadTokenFile(s.file)
	if err != nil || tok == held {
		return held
	}
	fresh, err := schemas.PeekContainerClaims(tok)
	if err != nil {
		return held
	}
	if h, err := schemas.PeekContainerClaims(held); err == nil && !fresh.Issued().After(h.Issued()) {
		return held
	}
	return tok
}

// conn is one open session and the calls using it.
type conn struct {
	sess *fileSession
	// issued and renewAt are of the token the connection was opened
	// with: past renewAt (half its life), a newer token opens the next
	// connection, since the bus closes this one at that token's expiry
	// and would lose the calls in flight then (make before break).
	issued, renewAt time.Time
	inflight        int
	retired         bool
}

// connector opens the session on the first call that needs it (the bus
// may not be up when the agent starts its MCP servers), again after a
// failed attempt, and a new one with the newest token at half the life of
// the current one's; a replaced session is closed once its calls are
// answered.
type connector struct {
	url, file string
	timeout   time.Duration
	opts      []nats.Option
	now       func() time.Time

	mu     sync.Mutex
	cur    *conn
	closed bool
}

// acquire is the session to make a call on, opened or renewed now if need
// be; release must be called when the call is answered.
func (c *connector) acquire(ctx context.Context) (*fileSession, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && c.now().After(c.cur.renewAt) {
		if fresh, err := schemas.PeekContainerClaims(c.cur.sess.Token()); err == nil && fresh.Issued().After(c.cur.issued) {
			if next, err := c.open(ctx); err == nil {
				c.retire(c.cur)
				c.cur = next
			} // else: keep the current one; the next call tries again
		}
	}
	if c.cur == nil {
		next, err := c.open(ctx)
		if err != nil {
			return nil, nil, err
		}
		c.cur = next
	}
	cn := c.cur
	cn.inflight++
	return cn.sess, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		cn.inflight--
		if cn.retired && cn.inflight == 0 {
			cn.sess.Close()
		}
	}, nil
}

// open connects with the newest token the file holds. c.mu is held.
func (c *connector) open(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fs, err := agentclient.OpenFileSession(ctx, c.url, c.file, c.timeout, c.opts...)
	if err != nil {
		return nil, err
	}
	cn := &conn{sess: &fileSession{FileSession: fs, file: c.file}}
	if claims, err := schemas.PeekContainerClaims(fs.Token()); err == nil {
		cn.issued = claims.Issued()
		cn.renewAt = claims.Issued().Add(claims.Expires().Sub(claims.Issued()) / 2)
	}
	return cn, nil
}

// retire closes cn once its calls are answered. c.mu is held.
func (c *connector) retire(cn *conn) {
	cn.retired = true
	if cn.inflight == 0 {
		cn.sess.Close()
	}
}

// Close closes the sessions; safe to call twice.
func (c *connector) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && !c.closed {
		c.retire(c.cur)
	}
	c.closed = true
}
