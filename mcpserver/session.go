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

// connector opens the session on the first call that needs it (the bus
// may not be up when the agent starts its MCP servers), and again after
// a failed attempt.
type connector struct {
	url, file string
	timeout   time.Duration
	opts      []nats.Option

	mu   sync.Mutex
	sess *fileSession
}

// session is the open session, opened now if need be.
func (c *connector) session(ctx context.Context) (*fileSession, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		return c.sess, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fs, err := agentclient.OpenFileSession(ctx, c.url, c.file, c.timeout, c.opts...)
	if err != nil {
		return nil, err
	}
	c.sess = &fileSession{FileSession: fs, file: c.file}
	return c.sess, nil
}

// Close closes the session, if open; safe to call twice.
func (c *connector) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.Close()
		c.sess = nil
	}
}
