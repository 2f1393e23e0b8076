package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// admin calls an admin method on the harness and decodes its result.
func admin(t *testing.T, h *coordinatortest.Harness, method string, body, out any) error {
	t.Helper()
	subject, err := schemas.Admin(method)
	require.NoError(t, err)
	b, err := json.Marshal(body)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: subject, Data: b}, out)
}

// rpc calls a tool with explicit headers, as any client could.
func rpc(t *testing.T, h *coordinatortest.Harness, town, method, token, agent, rig string, body, out any) (*nats.Msg, error) {
	t.Helper()
	subject := "gastown.town." + town + ".rpc." + method
	b, err := json.Marshal(body)
	require.NoError(t, err)
	m := nats.NewMsg(subject)
	m.Data = b
	if token != "" {
		m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+token)
	}
	if agent != "" {
		m.Header.Set(schemas.AgentIDHeader, agent)
	}
	if rig != "" {
		m.Header.Set(schemas.RigIDHeader, rig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.TownConn(town).RequestMsgWithContext(ctx, m)
	require.NoError(t, err)
	return resp, schemas.DecodeResult(resp.Data, out)
}

// townFixture makes town T (owner u1) with rigs r1 and r2, a polecat of r1
// hooked to bead b1, a polecat of r2, and a mayor, with no container
// connected (dispatches fail; state is all there).
func townFixture(t *testing.T, h *coordinatortest.Harness) {
	t.Helper()
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "T", UserID: "u1"}, nil))
	for _, r := range []string{"r1", "r2"} {
		require.NoError(t, admin(t, h, schemas.AdminRigAdd, schemas.RigAdd{TownID: "T", RigID: r, GitURL: "/nonexistent/" + r}, nil))
	}
	for _, b := range []struct{ id, rig, agent string }{{"b1", "r1", "p1"}, {"b2", "r2", "p2"}} {
		require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: b.id, RigID: b.rig, Title: "work " + b.id}, nil))
		var res schemas.SlingResult
		require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: b.id, AgentID: b.agent}, &res))
		require.Equal(t, b.agent, res.AgentID)
		require.False(t, res.Dispatched, "no container is connected")
	}
}

func TestRPCMiddlewareRules(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchCooldown: time.Hour})
	townFixture(t, h)
	other := coordinatortest.Start(t, coordinator.Config{})
	tok := h.ContainerToken("T")
	expired, _, err := h.Issuer.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }).MintContainer("T", "", time.Hour)
	require.NoError(t, err)
	otherTown := h.ContainerToken("U")
	foreign := other.ContainerToken("T") // signed with another secret
	legacyP1, _, err := h.Issuer.MintAgent("T", "r1", "p1", "u1", time.Hour)
	require.NoError(t, err)

	statusBefore := townStatus(t, h)
	for _, tc := range []struct {
		name, method, token, agent, rig string
		body                            any
		code                            schemas.Code
	}{
		{"no token", "prime", "", "p1", "r1", nil, schemas.CodeUnauthenticated},
		{"garbage token", "prime", "not-a-jwt", "p1", "r1", nil, schemas.CodeUnauthenticated},
		{"expired token", "prime", expired, "p1", "r1", nil, schemas.CodeUnauthenticated},
		{"token of another secret", "prime", foreign, "p1", "r1", nil, schemas.CodeUnauthenticated},
		{"token of another town", "prime", otherTown, "p1", "r1", nil, schemas.CodePermissionDenied},
		{"agent not in the town", "prime", tok, "ghost", "r1", nil, schemas.CodePermissionDenied},
		{"agent of another rig", "prime", tok, "p1", "r2", nil, schemas.CodePermissionDenied},
		{"no identity for an agent method", "prime", tok, "", "", nil, schemas.CodePermissionDenied},
		{"legacy token whose headers disagree", "prime", legacyP1, "p2", "r2", nil, schemas.CodePermissionDenied},
		{"body naming another agent", "checkpoint", tok, "p1", "r1", schemas.Checkpoint{AgentID: "p2", Note: "x"}, schemas.CodePermissionDenied},
		{"mayor-only method by a polecat", "sling", tok, "p1", "r1", schemas.Sling{BeadID: "b2"}, schemas.CodePermissionDenied},
		{"triage.resolve by a non-triage agent", "triage.resolve", tok, "p1", "r1", schemas.TriageResolve{Action: "restart"}, schemas.CodePermissionDenied},
		{"unknown method", "no.such", tok, "p1", "r1", nil, schemas.CodeNotFound},
		{"malformed body", "checkpoint", tok, "p1", "r1", "not an object", schemas.CodeInvalidArgument},
		{"missing bead", "bead.get", tok, "p1", "r1", schemas.BeadRef{BeadID: "nope"}, schemas.CodeNotFound},
		{"closing a bead not on the hook", "bead.close", tok, "p1", "r1", schemas.BeadRef{BeadID: "b2"}, schemas.CodePermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rpc(t, h, "T", tc.method, tc.token, tc.agent, tc.rig, tc.body, nil)
			require.Error(t, err)
			var e *schemas.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tc.code, e.Code, "message: %s", e.Message)
			require.Equal(t, string(tc.code), resp.Header.Get(schemas.ErrorHeader))
			if tc.token != "" {
				require.NotContains(t, string(resp.Data), tc.token, "an error never echoes the token")
			}
		})
	}
	require.Equal(t, statusBefore, townStatus(t, h), "refused requests change nothing")

	// The same calls, rightly made, work: a legacy token, a container token
	// with the right identity.
	var p coordinator.Prime
	_, err = rpc(t, h, "T", "prime", legacyP1, "", "", nil, &p)
	require.NoError(t, err)
	require.Equal(t, "p1", p.AgentID)
	require.Equal(t, "b1", p.Hook.BeadID)
	_, err = rpc(t, h, "T", "prime", tok, "p1", "r1", nil, &p)
	require.NoError(t, err)
	require.Equal(t, schemas.RolePolecat, p.Role)
	var b coordinator.Bead
	_, err = rpc(t, h, "T", "bead.get", tok, "p2", "r2", schemas.BeadRef{BeadID: "b2"}, &b)
	require.NoError(t, err)
	require.Equal(t, "p2", b.Assignee)
}

func townStatus(t *testing.T, h *coordinatortest.Harness) json.RawMessage {
	t.Helper()
	var st json.RawMessage
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
	return st
}

// TestMayorTools: role rules and mail over the bus.
func TestMayorTools(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchCooldown: time.Hour})
	townFixture(t, h)
	tok := h.ContainerToken("T")
	var rigs []coordinator.Rig
	_, err := rpc(t, h, "T", "rigs.list", tok, "p1", "r1", nil, &rigs)
	require.ErrorIs(t, err, schemas.ErrPermissionDenied, "polecats may not list rigs")

	// mail: p1 → p2, read once.
	var m coordinator.Bead
	_, err = rpc(t, h, "T", "mail.send", tok, "p1", "r1", schemas.MailSend{To: "p2", Subject: "hello"}, &m)
	require.NoError(t, err)
	require.Equal(t, "p1", m.From)
	var inbox []coordinator.Bead
	_, err = rpc(t, h, "T", "mail.check", tok, "p2", "r2", nil, &inbox)
	require.NoError(t, err)
	require.Len(t, inbox, 1)
	require.Equal(t, "hello", inbox[0].Title)
	_, err = rpc(t, h, "T", "mail.check", tok, "p2", "r2", nil, &inbox)
	require.NoError(t, err)
	require.Empty(t, inbox, "mail is read once")
}

// TestCloseCancelsBlockedHandlers: Close cancels the handlers it waits for.
// A sling whose dispatch waits on a container that never answers (and a
// dispatch timeout of an hour) is cut short by Close: the caller is told
// the dispatch was cancelled, Close returns, and the container is still
// sitting on the request it never answered.
func TestCloseCancelsBlockedHandlers(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchTimeout: time.Hour})
	slingOne(t, h) // town T, rig r, bead b
	tw, err := schemas.ForTown("T")
	require.NoError(t, err)
	received := make(chan struct{}, 1)
	answered := make(chan struct{})
	_, err = h.Conn().QueueSubscribe(tw.Dispatch(), schemas.ContainerQueue, func(*nats.Msg) {
		received <- struct{}{} // and never answer
	})
	require.NoError(t, err)
	require.NoError(t, h.Conn().Flush())

	var res schemas.SlingResult
	var slingErr error
	go func() {
		defer close(answered)
		slingErr = admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res)
	}()
	<-received // the sling's handler now waits on the container
	h.Daemon.Close()
	<-answered
	require.NoError(t, slingErr)
	require.False(t, res.Dispatched)
	require.Contains(t, res.Error, "container did not answer: context canceled", "the handler's wait was cancelled, not timed out")
	require.Len(t, received, 0, "the container got the one request and never answered it")
}
