package coordinator_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

const noContainer = "no container of the town is connected"

// awaitingContainer waits until patrol (or a sling) tried to dispatch the
// agent with no container connected, and checks that the try did not
// count as an attempt.
func awaitingContainer(t *testing.T, h *coordinatortest.Harness, town, agent string) {
	t.Helper()
	require.Eventually(t, func() bool { return agentState(t, h, town, agent).LastError == noContainer }, 10*time.Second, 10*time.Millisecond,
		"the %s was never tried", agent)
	a := agentState(t, h, town, agent)
	require.True(t, a.AwaitsContainer)
	require.Zero(t, a.Attempts, "no container is not an attempt")
	require.WithinDuration(t, time.Now().Add(time.Hour), a.NextAttemptAt, 10*time.Minute, "the cooldown is an hour")
}

// The README's order by hand: the town (and a slung bead) first, the
// container afterwards. The container connecting ends the cooldown that
// the failed dispatches imposed; with an hour's cooldown, only that can
// explain the dispatch.
func TestDispatchWhenContainerConnects(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour})
	slingOne(t, h) // town T (its mayor), rig r, bead b
	awaitingContainer(t, h, "T", coordinator.MayorID)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.False(t, res.Dispatched)
	require.Contains(t, res.Error, noContainer)
	awaitingContainer(t, h, "T", res.AgentID)
	require.Equal(t, "b", agentState(t, h, "T", res.AgentID).Hook, "the bead stays hooked")

	c := startBeating(t, h, "T", interval/2) // asks token.get as it starts
	require.Eventually(t, func() bool { return c.run(coordinator.MayorID) != "" && c.run(res.AgentID) != "" }, 10*time.Second, 10*time.Millisecond,
		"the mayor and the polecat were not dispatched when the container connected")
	require.Eventually(t, func() bool { return bead(t, h, "b").Status == coordinator.BeadInProgress }, 10*time.Second, 10*time.Millisecond)
	for _, id := range []string{coordinator.MayorID, res.AgentID} {
		a := agentState(t, h, "T", id)
		require.Equal(t, coordinator.AgentWorking, a.Status, id)
		require.False(t, a.AwaitsContainer, id)
		require.Zero(t, a.Attempts, id)
	}
}

// A container that never asks token.get (one written from PROTOCOL.md
// alone may not) shows itself with its first heartbeat.
func TestDispatchOnFirstHeartbeat(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour})
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "T"}, nil))
	awaitingContainer(t, h, "T", coordinator.MayorID)

	nc := h.TownConn("T")
	started := make(chan string, 4)
	sub, err := nc.QueueSubscribe("gastown.town.T.dispatch", schemas.ContainerQueue, func(m *nats.Msg) {
		var req schemas.StartAgent
		if schemas.Decode(m.Data, &req) == nil {
			started <- req.AgentID
			_ = bus.Respond(m, &schemas.StartAgentResult{OK: true, AgentID: req.AgentID, RunID: req.RunID})
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, nc.Flush())
	data, err := schemas.Encode(&schemas.Heartbeat{TownID: "T", ContainerID: "c", SentAt: time.Now()})
	require.NoError(t, err)
	require.NoError(t, nc.Publish("gastown.town.T.heartbeat", data))
	select {
	case agent := <-started:
		require.Equal(t, coordinator.MayorID, agent)
	case <-time.After(10 * time.Second):
		t.Fatal("the mayor was not dispatched after the container's first heartbeat")
	}
}
