package coordinator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// exit reports that an agent's run ended with code, as a container does.
func (bc *beatingContainer) exit(t *testing.T, town, agent, run string, code int) {
	t.Helper()
	data, err := schemas.Encode(&schemas.Heartbeat{TownID: town, ContainerID: "c", SentAt: time.Now(),
		Exits: []schemas.AgentExit{{AgentID: agent, RunID: run, ExitCode: code, EndedAt: time.Now()}}})
	require.NoError(t, err)
	require.NoError(t, bc.src.Do(context.Background(), func(_ context.Context, nc *nats.Conn) error {
		return nc.Publish("gastown.town."+town+".heartbeat", data)
	}))
}

// crash makes agent's current runs fail until it has failed n times.
func crash(t *testing.T, h *coordinatortest.Harness, c *beatingContainer, agent string, n int) {
	t.Helper()
	last := ""
	for i := 0; i < n; i++ {
		require.Eventually(t, func() bool {
			a := agentState(t, h, "T", agent)
			return a.Status == coordinator.AgentWorking && a.RunID != last && c.run(agent) == a.RunID
		}, 10*time.Second, 5*time.Millisecond, "%s is dispatched again (failure %d)", agent, i+1)
		last = c.run(agent)
		c.exit(t, "T", agent, last, 1)
		require.Eventually(t, func() bool { return agentState(t, h, "T", agent).RunID != last }, 10*time.Second, 5*time.Millisecond)
	}
}

func openTriage(t *testing.T, h *coordinatortest.Harness) []coordinator.Bead {
	t.Helper()
	var st coordinator.TownStatus
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
	var out []coordinator.Bead
	for _, b := range st.Beads {
		if b.TriageFor != "" && !b.Final() {
			out = append(out, b)
		}
	}
	return out
}

// TestCrashLoopTriage: 3 failures in 30 minutes stall an agent and open a
// triage request that a triage agent (empty workspace) resolves; only that
// triage agent may resolve it.
func TestCrashLoopTriage(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: time.Second, DispatchCooldown: 20 * time.Millisecond})
	slingOne(t, h)
	c := startBeating(t, h, "T", 200*time.Millisecond)
	tok := h.ContainerToken("T")
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	p := res.AgentID

	crash(t, h, c, p, 2)
	require.Empty(t, openTriage(t, h), "two failures are not a crash loop")
	crash(t, h, c, p, 1)
	var tb coordinator.Bead
	require.Eventually(t, func() bool {
		open := openTriage(t, h)
		if len(open) != 1 || open[0].Assignee == "" {
			return false
		}
		tb = open[0]
		return true
	}, 10*time.Second, 5*time.Millisecond, "one triage request, hooked to a triage agent")
	require.Equal(t, p, tb.TriageFor)
	require.Equal(t, coordinator.AgentStalled, agentState(t, h, "T", p).Status)
	tri := agentState(t, h, "T", tb.Assignee)
	require.Equal(t, schemas.RoleTriage, tri.Role)
	require.Equal(t, tb.BeadID, tri.Hook)
	require.Eventually(t, func() bool { return c.run(tri.AgentID) != "" }, 10*time.Second, 5*time.Millisecond, "the triage agent is dispatched")
	c.mu.Lock()
	ws := c.workspaces[tri.AgentID]
	c.mu.Unlock()
	require.Equal(t, schemas.WorkspaceEmpty, ws, "a triage agent gets a lightweight workspace")

	// Only the triage agent with that request on its hook may resolve it.
	_, err := rpc(t, h, "T", "triage.resolve", tok, p, "r", schemas.TriageResolve{Action: schemas.TriageRestart}, nil)
	require.ErrorIs(t, err, schemas.ErrPermissionDenied)
	_, err = rpc(t, h, "T", "triage.resolve", tok, tri.AgentID, tri.RigID, schemas.TriageResolve{Action: schemas.TriageRestart}, nil)
	require.NoError(t, err)
	require.Empty(t, openTriage(t, h))
	require.Eventually(t, func() bool {
		a := agentState(t, h, "T", p)
		return a.Status == coordinator.AgentWorking && len(a.Failures) == 0
	}, 10*time.Second, 5*time.Millisecond, "restarted: failures cleared and dispatched again")
	_, err = rpc(t, h, "T", "triage.resolve", tok, tri.AgentID, tri.RigID, schemas.TriageResolve{Action: schemas.TriageRestart}, nil)
	require.ErrorIs(t, err, schemas.ErrPermissionDenied, "nothing left on its hook")
}

// TestTriageCapAndExclusion: at most 5 triage requests are open at once,
// and triage agents' own failures never count as a crash loop.
func TestTriageCapAndExclusion(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: time.Second, DispatchCooldown: 20 * time.Millisecond})
	slingOne(t, h)
	c := startBeating(t, h, "T", 200*time.Millisecond)
	var polecats []string
	for i := range 7 {
		id := fmt.Sprintf("w%d", i)
		require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: id, RigID: "r", Title: id}, nil))
		var res schemas.SlingResult
		require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: id}, &res))
		polecats = append(polecats, res.AgentID)
	}
	for _, p := range polecats {
		crash(t, h, c, p, 3)
	}
	var tri string
	require.Eventually(t, func() bool {
		open := openTriage(t, h)
		if len(open) != 5 || open[0].Assignee == "" {
			return false
		}
		tri = open[0].Assignee
		return true
	}, 10*time.Second, 5*time.Millisecond)

	// Triage agents fail too: they never count.
	crash(t, h, c, tri, 3)
	a := agentState(t, h, "T", tri)
	require.NotEqual(t, coordinator.AgentStalled, a.Status)
	for _, b := range openTriage(t, h) {
		require.NotEqual(t, tri, b.TriageFor, "no triage of a triage agent")
	}
	require.Len(t, openTriage(t, h), 5, "still capped at 5")
}

// TestMayorCrashLoopTriage: the mayor belongs to no rig; its crash loop
// still opens a triage request, hooked to a triage agent that is
// dispatched, rather than failing on a rig that does not exist.
func TestMayorCrashLoopTriage(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: time.Second, DispatchCooldown: 20 * time.Millisecond})
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "T"}, nil))
	c := startBeating(t, h, "T", 200*time.Millisecond)
	crash(t, h, c, coordinator.MayorID, 3)
	var tb coordinator.Bead
	require.Eventually(t, func() bool {
		open := openTriage(t, h)
		if len(open) != 1 || open[0].Assignee == "" {
			return false
		}
		tb = open[0]
		return true
	}, 10*time.Second, 5*time.Millisecond, "the mayor's crash loop opens a triage request")
	require.Equal(t, coordinator.MayorID, tb.TriageFor)
	tri := agentState(t, h, "T", tb.Assignee)
	require.Equal(t, schemas.RoleTriage, tri.Role)
	require.Eventually(t, func() bool { return c.run(tri.AgentID) != "" }, 10*time.Second, 5*time.Millisecond, "the triage agent is dispatched")
	tok := h.ContainerToken("T")
	_, err := rpc(t, h, "T", "triage.resolve", tok, tri.AgentID, tri.RigID, schemas.TriageResolve{Action: schemas.TriageRestart}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		a := agentState(t, h, "T", coordinator.MayorID)
		return a.Status == coordinator.AgentWorking && len(a.Failures) == 0
	}, 10*time.Second, 5*time.Millisecond, "the mayor is restarted")
}

// TestTriageResumedAfterACrash: a coordinator that died in the middle of
// opening a triage left a stalled agent with no request (p), and a request
// nobody was hooked to (q); patrol opens the one and hooks the other, each
// to a triage agent, so no stalled agent waits for a triage nobody works on.
func TestTriageResumedAfterACrash(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour, RequestTimeout: time.Second})
	slingOne(t, h)
	startBeating(t, h, "T", interval/2)
	long := time.Now().UTC().Add(-time.Hour)
	fails := []time.Time{long, long, long}
	stalled := func(id string) coordinator.Agent {
		return coordinator.Agent{TownID: "T", AgentID: id, RigID: "r", Role: schemas.RolePolecat, Status: coordinator.AgentStalled,
			Failures: fails, LastError: "exited with code 1", UpdatedAt: long}
	}
	put(t, h, schemas.BucketAgents, schemas.Key("T", "p"), stalled("p"))
	put(t, h, schemas.BucketAgents, schemas.Key("T", "q"), stalled("q"))
	put(t, h, schemas.BucketBeads, schemas.Key("T", "tq"), coordinator.Bead{TownID: "T", BeadID: "tq", Type: coordinator.BeadIssue,
		Status: coordinator.BeadOpen, RigID: "r", Title: "Triage: q is crash-looping", CreatedBy: "patrol", TriageFor: "q", CreatedAt: long, UpdatedAt: long})
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
		hookedBy := map[string]string{} // request → the triage agent working on it
		for _, a := range st.Agents {
			if a.Role == schemas.RoleTriage && a.Hook != "" && a.Status == coordinator.AgentWorking {
				hookedBy[a.Hook] = a.AgentID
			}
		}
		requests := map[string]int{}
		worked := map[string]bool{}
		for _, b := range st.Beads {
			if b.TriageFor != "" && !b.Final() {
				requests[b.TriageFor]++
				worked[b.TriageFor] = worked[b.TriageFor] || hookedBy[b.BeadID] != "" && b.Assignee == hookedBy[b.BeadID]
			}
		}
		return requests["p"] == 1 && requests["q"] == 1 && worked["p"] && worked["q"]
	}, 10*time.Second, 50*time.Millisecond, "one request each, each hooked to a running triage agent")
}
