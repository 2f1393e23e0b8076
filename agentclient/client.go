package agentclient

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Session is what the tool client needs of a token source: the newest
// token, a connection to send on, and a way to get a fresh token.
type Session interface {
	Town() schemas.Town
	Token() string
	// Do runs f on a connection; an agent's session also ends ctx when that
	// connection drops (f's error is then ErrConnectionLost).
	Do(ctx context.Context, f func(ctx context.Context, nc *nats.Conn) error) error
	Refresh(ctx context.Context) error
}

var _ Session = (*TokenSource)(nil)

// Client calls the coordinator's tools for one agent. Every call carries
// the newest token and the agent's identity, read at the moment of the
// call. Error replies come back as *schemas.Error, matchable with
// errors.Is(err, schemas.ErrPermissionDenied) and the like.
type Client struct {
	s       Session
	agentID string
	rigID   string
	timeout time.Duration
	// headers are the requests' headers for the newest token, shared by
	// the copies WithTimeout makes.
	headers *headerCache
	// route says whether to send to the town's lease holder first, also
	// shared by the copies.
	route *holderRoute
}

// A call refused with resource_exhausted and a retry hint (its town is
// over a rate) is sent again after the hinted wait, at most
// ExhaustedRetries times, each wait at most MaxRetryWait and within the
// call's context. A refusal without a hint (a storage cap) is returned at
// once: waiting does not help.
const (
	ExhaustedRetries = 5
	MaxRetryWait     = 10 * time.Second
)

// DefaultCallTimeout bounds a call whose context has no deadline. It is
// long, since some tools dispatch agents (which may clone a repository),
// but finite: a request lost with a dying coordinator is never answered,
// and an agent must not wait for it forever.
const DefaultCallTimeout = 3 * time.Minute

// NewClient makes a tool client for an agent of rig rigID.
func NewClient(s Session, agentID, rigID string) *Client {
	return &Client{s: s, agentID: agentID, rigID: rigID, timeout: DefaultCallTimeout,
		headers: &headerCache{agentID: agentID, rigID: rigID}, route: &holderRoute{}}
}

// WithTimeout is a copy of the client whose calls without a deadline get
// d instead of DefaultCallTimeout.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.timeout = d
	return &cp
}

// Call invokes method with body (any JSON value, or nil for {}) and decodes
// the result into out (when not nil). On unauthenticated it fetches a fresh
// token once and retries once. On resource_exhausted with a retry hint it
// waits the hint and retries (ExhaustedRetries, MaxRetryWait); the last
// refusal is returned, matchable with errors.Is(err,
// schemas.ErrResourceExhausted). A ctx without a deadline gets the
// client's timeout (DefaultCallTimeout unless set WithTimeout).
func (c *Client) Call(ctx context.Context, method string, body, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var subject rpcSubjects
	var err error
	if subject.queue, err = c.s.Town().RPC(method); err != nil {
		return errors.Mark(err, schemas.ErrInvalidArgument)
	}
	subject.holder, _ = c.s.Town().HolderRPC(method) // the same method, valid

	data := emptyBody // what json.Marshal(struct{}{}) writes, without the encoder
	if body != nil {
		if data, err = json.Marshal(body); err != nil {
			return errors.Mark(errors.Wrapf(err, "encoding %s body", method), schemas.ErrInvalidArgument)
		}
	}
	err = c.callAdmitted(ctx, subject, data, out)
	if !errors.Is(err, schemas.ErrUnauthenticated) {
		return err
	}
	if rerr := c.s.Refresh(ctx); rerr != nil {
		return errors.WithSecondaryError(err, rerr)
	}
	return c.callAdmitted(ctx, subject, data, out)
}

// emptyBody is the body of a call without one. It is never written to:
// the request only reads it.
var emptyBody = []byte("{}")

// callAdmitted is callDelivered, sent again after the hinted wait while
// the town is over a rate: a refused call did nothing, so it is always
// safe to send again.
func (c *Client) callAdmitted(ctx context.Context, subject rpcSubjects, data []byte, out any) error {
	for attempt := 0; ; attempt++ {
		err := c.callDelivered(ctx, subject, data, out)
		wait := schemas.RetryAfterOf(err)
		if !errors.Is(err, schemas.ErrResourceExhausted) || wait <= 0 || attempt >= ExhaustedRetries {
			return err
		}
		// Up to a quarter more, so callers refused together do not all
		// come back at the same moment.
		wait = min(spread(wait, 1, 1.25), MaxRetryWait)
		if !sleepCtx(ctx, wait) {
			return err
		}
	}
}

// sleepCtx waits d, or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// callDelivered is callRouted, tried again while no coordinator is there
// to answer (the bus or the coordinator restarting): a request nobody
// received is always safe to send again. ctx bounds it.
func (c *Client) callDelivered(ctx context.Context, subject rpcSubjects, data []byte, out any) error {
	retry := backoff{lo: 50 * time.Millisecond, hi: time.Second}
	for {
		err := c.callRouted(ctx, subject, data, out)
		if !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		if !sleepCtx(ctx, retry.next()) {
			return err
		}
	}
}

func (c *Client) call(ctx context.Context, subject string, data []byte, out any) error {
	// The header is shared with the other calls of this token, read only.
	m := &nats.Msg{Subject: subject, Data: data, Header: c.headers.header(c.s.Token())}
	return c.s.Do(ctx, func(ctx context.Context, nc *nats.Conn) error { return bus.Call(ctx, nc, m, out) })
}
