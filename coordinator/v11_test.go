package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestTokenRotationsCarryTheHeartbeatInterval: the answer to token.get and
// every pushed rotation say the coordinator's heartbeat interval.
func TestTokenRotationsCarryTheHeartbeatInterval(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 1234 * time.Millisecond})
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "A"}, nil))
	pushed := make(chan schemas.TokenRotation, 1)
	sub, err := h.Conn().QueueSubscribe("gastown.town.A.token", schemas.ContainerQueue, func(m *nats.Msg) {
		var rot schemas.TokenRotation
		if schemas.Decode(m.Data, &rot) == nil {
			select {
			case pushed <- rot:
			default:
			}
		}
		_ = bus.Respond(m, &schemas.Ack{OK: true})
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, h.Conn().Flush(), "the container's subscription is in place before the push")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rot schemas.TokenRotation
	require.NoError(t, bus.Request(ctx, h.TownConn("A"), "gastown.town.A.token.get", &schemas.TokenRequest{TownID: "A", ContainerID: "x"}, &rot))
	require.EqualValues(t, 1234, rot.HeartbeatIntervalMs)
	var res schemas.RotateResult
	require.NoError(t, admin(t, h, schemas.AdminTokenRotate, schemas.TownRequest{TownID: "A"}, &res))
	require.True(t, res.Acknowledged, res.Error)
	select {
	case got := <-pushed:
		require.EqualValues(t, 1234, got.HeartbeatIntervalMs)
	case <-ctx.Done():
		t.Fatal("no rotation was pushed")
	}
}

// TestDispatchRecordsTheContainersCode: a container's refusal of a
// dispatch (a StartAgentResult with its code and Gastown-Error) is
// recorded with its code.
func TestDispatchRecordsTheContainersCode(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	slingOne(t, h)
	sub, err := h.Conn().QueueSubscribe("gastown.town.T.dispatch", schemas.ContainerQueue, func(m *nats.Msg) {
		var req schemas.StartAgent
		if schemas.Decode(m.Data, &req) != nil {
			return
		}
		res := &schemas.StartAgentResult{AgentID: req.AgentID, RunID: req.RunID, Code: schemas.CodeResourceExhausted, Error: "no room for another agent"}
		_ = bus.RespondFailed(m, res, schemas.NewError(res.Code, "%s", res.Error))
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	var res schemas.SlingResult
	_ = admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res)
	require.False(t, res.Dispatched)
	a := agentState(t, h, "T", res.AgentID)
	require.Contains(t, a.LastError, "resource_exhausted: no room for another agent")
}
