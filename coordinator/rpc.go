package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Caller is who made an RPC request, as established by the middleware.
type Caller struct {
	TownID  string
	UserID  string
	AgentID string
	RigID   string
	Role    string
	Kind    token.Kind
}

// rpcMethod is one tool method: who may call it, and its handler.
type rpcMethod struct {
	// container: the container itself may call it with no agent identity.
	container bool
	// inline: the handler only reads the in-memory state by key, so it is
	// answered on the subscription's goroutine, which spares every call a
	// goroutine hand-off and a timer. Whatever writes, waits or scans runs
	// on its own goroutine, with a deadline.
	inline bool
	h      func(ctx context.Context, caller Caller, body json.RawMessage) (any, error)
}

// handleRPC is the middleware of every gastown.town.<T>.rpc.<method> and
// gastown.town.<T>.holder.rpc.<method> (the lease holder's). The
// checks run on the subscription's goroutine (they read memory only); the
// method then runs there too when inline, or on its own goroutine.
func (c *Coordinator) handleRPC(methods map[string]rpcMethod) nats.MsgHandler {
	now := c.now // bound once: a method value made per call is an allocation
	return func(m *nats.Msg) {
		townID, rest, err := schemas.ParseTownSubject(m.Subject)
		if err != nil || !c.townReplyOK(m, townID) || !c.pool.track() {
			return
		}
		method, _ := schemas.RPCMethod(rest) // only RPC subjects are subscribed
		call := c.metrics.rpcCall(method, now)
		h, caller, body, err := c.admitRPC(methods, m, townID, method)
		if err != nil || h.inline {
			defer c.pool.done()
			var res any
			if err == nil {
				res, err = h.h(c.runCtx, caller, body)
			}
			c.answerRPC(m, res, err)
			call.done(err)
			return
		}
		refused := c.spawnRPC(m, caller.TownID, func() {
			ctx, cancel := context.WithTimeout(c.runCtx, c.cfg.DispatchTimeout+c.cfg.RequestTimeout) // tools may dispatch
			defer cancel()
			res, err := h.h(ctx, caller, body)
			c.answerRPC(m, res, err)
			call.done(err)
		})
		if refused != nil {
			call.done(refused)
		}
	}
}

// answerRPC sends a method's result, or its error as the caller sees it.
func (c *Coordinator) answerRPC(m *nats.Msg, res any, err error) {
	if err != nil {
		_ = bus.RespondError(m, c.wireError(m.Subject, err))
		return
	}
	if err := bus.RespondResult(m, res); err != nil {
		c.log.Warn("answering rpc", KeySubject, m.Subject, KeyErr, err)
	}
}

// admitRPC runs the middleware's checks: subject, token, identity, role,
// body. It returns the method to run, for whom, with which body.
// townID and method are from m's subject, already parsed by handleRPC.
func (c *Coordinator) admitRPC(methods map[string]rpcMethod, m *nats.Msg, townID, method string) (rpcMethod, Caller, json.RawMessage, error) {
	caller, err := c.authenticate(townID, m.Header)
	if err != nil {
		return rpcMethod{}, Caller{}, nil, err
	}
	h, ok := methods[method]
	if !ok {
		return rpcMethod{}, Caller{}, nil, schemas.NewError(schemas.CodeNotFound, "no method %q", method)
	}
	if err := c.allowed(h, &caller, method); errors.Is(err, errAgentUnseen) {
		h = c.readAgentFirst(h, method)
	} else if err != nil {
		return rpcMethod{}, Caller{}, nil, err
	}
	if err := c.rateRPC(townID, h.inline); err != nil {
		return rpcMethod{}, Caller{}, nil, err
	}
	if len(m.Data) > schemas.MaxBodySize {
		return rpcMethod{}, Caller{}, nil, schemas.NewError(schemas.CodeInvalidArgument, "body is %d bytes; at most %d are allowed", len(m.Data), schemas.MaxBodySize)
	}
	body := json.RawMessage(m.Data)
	if len(body) == 0 {
		body = json.RawMessage("{}")
	}
	if !json.Valid(body) {
		return rpcMethod{}, Caller{}, nil, schemas.NewError(schemas.CodeInvalidArgument, "body is not JSON")
	}
	return h, caller, body, nil
}

// allowed checks that the caller is an agent of its town and rig (or the
// container itself, for container methods) whose role may call method.
func (c *Coordinator) allowed(h rpcMethod, caller *Caller, method string) error {
	if caller.AgentID == "" {
		if h.container && caller.Kind == token.KindContainer {
			return nil
		}
		return schemas.NewError(schemas.CodePermissionDenied, "%s needs the calling agent's identity (%s and %s headers)", method, schemas.AgentIDHeader, schemas.RigIDHeader)
	}
	a, ok := c.st.agents.Get(schemas.Key(caller.TownID, caller.AgentID))
	if !ok {
		return errAgentUnseen
	}
	return allowedAs(a, caller, method)
}

// allowedAs is allowed's check of an agent record: the caller's rig, and
// that its role may call method. It sets caller.Role.
func allowedAs(a Agent, caller *Caller, method string) error {
	if caller.RigID != a.RigID {
		return schemas.NewError(schemas.CodePermissionDenied, "agent %s belongs to rig %s, not %q", caller.AgentID, a.RigID, caller.RigID)
	}
	caller.Role = a.Role
	if !schemas.MayCall(a.Role, method) { // the one role table (schemas.ToolRoles)
		return schemas.NewError(schemas.CodePermissionDenied, "%s is for %v, not a %s", method, schemas.ToolRoles[method], a.Role)
	}
	return nil
}

// authenticate checks the bearer token (container first, then legacy), its
// town, its revocation, and establishes the caller's identity.
func (c *Coordinator) authenticate(townID string, h nats.Header) (Caller, error) {
	auth := h.Get(schemas.AuthorizationHeader)
	bearer, ok := strings.CutPrefix(auth, schemas.BearerPrefix)
	if !ok || bearer == "" {
		return Caller{}, schemas.NewError(schemas.CodeUnauthenticated, "no bearer token in the Authorization header")
	}
	v, err := c.verified.Verify(bearer)
	switch {
	case errors.Is(err, token.ErrTokenExpired):
		return Caller{}, schemas.NewError(schemas.CodeUnauthenticated, "token has expired; fetch a fresh one")
	case err != nil:
		return Caller{}, schemas.NewError(schemas.CodeUnauthenticated, "token is not valid")
	}
	if v.TownID() != townID {
		return Caller{}, schemas.NewError(schemas.CodePermissionDenied, "token is for another town")
	}
	if revoked, err := c.tokens.Revoked(townID, v.Issued()); err != nil {
		return Caller{}, schemas.NewError(schemas.CodeUnavailable, "coordinator is starting; try again")
	} else if revoked {
		return Caller{}, schemas.NewError(schemas.CodeUnauthenticated, "token was revoked; fetch a fresh one")
	}
	agentID, rigID := h.Get(schemas.AgentIDHeader), h.Get(schemas.RigIDHeader)
	for _, p := range [][2]string{{schemas.AgentIDHeader, agentID}, {schemas.RigIDHeader, rigID}} {
		if p[1] != "" {
			if err := schemas.ValidateID(p[0], p[1]); err != nil {
				return Caller{}, schemas.NewError(schemas.CodeInvalidArgument, "%s", err.Error())
			}
		}
	}
	if v.Kind == token.KindAgent {
		a := v.Agent
		if (agentID != "" && agentID != a.AgentID) || (rigID != "" && rigID != a.RigID) {
			return Caller{}, schemas.NewError(schemas.CodePermissionDenied, "identity headers do not match the token")
		}
		return Caller{TownID: townID, UserID: a.UserID, AgentID: a.AgentID, RigID: a.RigID, Kind: token.KindAgent}, nil
	}
	return Caller{TownID: townID, UserID: v.Container.UserID, AgentID: agentID, RigID: rigID, Kind: token.KindContainer}, nil
}

// staleRetryAfter is the retry hint of a write that kept losing to other
// writers of its record.
const staleRetryAfter = 50 * time.Millisecond

// wireError turns a handler error into what the caller sees. Errors that
// are not *schemas.Error are internal: logged with a correlation id, no
// detail sent. Their log is rate-limited per subject (a caller decides how
// many there are); a correlation id whose line was left out is counted on
// the subject's next line.
func (c *Coordinator) wireError(subject string, err error) *schemas.Error {
	var e *schemas.Error
	if errors.As(err, &e) {
		return e
	}
	if code := schemas.CodeOf(err); code == schemas.CodeInvalidArgument {
		return schemas.NewError(code, "%s", err.Error())
	}
	if errors.Is(err, kvstore.ErrStale) {
		// Every compare-and-set lost to another writer of the same record
		// (an agent's concurrent calls): nothing was written.
		e := schemas.NewError(schemas.CodeUnavailable, "the record changed under every attempt to write it (concurrent calls on it); nothing was written: try again")
		e.RetryAfter = staleRetryAfter
		return e
	}
	id := nats.NewInbox()[len(nats.InboxPrefix):]
	c.errLog.Log(context.Background(), slog.LevelError, subject, "rpc failed", KeySubject, subject, KeyCorrelation, id, KeyErr, err)
	return schemas.NewError(schemas.CodeInternal, "internal error; correlation id %s", id)
}
