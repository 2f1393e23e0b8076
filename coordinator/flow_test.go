package coordinator_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func bead(t *testing.T, h *coordinatortest.Harness, id string) coordinator.Bead {
	t.Helper()
	var st coordinator.TownStatus
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
	for _, b := range st.Beads {
		if b.BeadID == id {
			return b
		}
	}
	t.Fatalf("no bead %s", id)
	return coordinator.Bead{}
}

// TestFlowConvoyLands drives the flow over the bus, each agent's calls made
// as that agent: sling → done → the refinery merges → the convoy lands.
func TestFlowConvoyLands(t *testing.T) {
	const interval = 200 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour})
	slingOne(t, h) // town T, rig r, bead b
	c := startBeating(t, h, "T", interval/2)
	tok := h.ContainerToken("T")
	landed := make(chan string, 1)
	sub, err := h.Conn().Subscribe("gastown.town.T.events", func(m *nats.Msg) {
		var ev schemas.TownEvent
		if schemas.Decode(m.Data, &ev) == nil && ev.Kind == schemas.EventConvoyLanded {
			landed <- ev.Subject
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	for _, id := range []string{"b2", "b3"} {
		require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: id, RigID: "r", Title: "work " + id}, nil))
	}
	var convoy coordinator.Bead
	require.NoError(t, admin(t, h, schemas.AdminConvoy, schemas.AdminConvoyCreate{TownID: "T",
		ConvoyCreate: schemas.ConvoyCreate{Title: "three", Beads: []string{"b", "b2", "b3"}}}, &convoy))
	polecats := map[string]string{}
	for _, id := range []string{"b", "b2", "b3"} {
		var res schemas.SlingResult
		require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: id}, &res))
		require.True(t, res.Dispatched, res.Error)
		polecats[id] = res.AgentID
		require.Equal(t, coordinator.BeadInProgress, bead(t, h, id).Status)
	}
	require.Len(t, map[string]bool{polecats["b"]: true, polecats["b2"]: true, polecats["b3"]: true}, 3, "three polecats")

	// Each polecat is done: a merge request, the bead in review, unhooked.
	mrs := map[string]string{}
	for id, p := range polecats {
		var p1 coordinator.Prime
		_, err := rpc(t, h, "T", "prime", tok, p, "r", nil, &p1)
		require.NoError(t, err)
		require.Equal(t, id, p1.Hook.BeadID)
		// A run the coordinator gave up on cannot finish the work.
		_, err = rpc(t, h, "T", "done", tok, p, "r", schemas.DoneRequest{Branch: "polecat/" + p + "/" + id, RunID: "stale-run"}, nil)
		require.ErrorIs(t, err, schemas.ErrConflict, "done from a stale run")
		require.Equal(t, id, agentState(t, h, "T", p).Hook, "a stale done changes nothing")
		var done coordinator.DoneResult
		_, err = rpc(t, h, "T", "done", tok, p, "r", schemas.DoneRequest{Branch: "polecat/" + p + "/" + id, Summary: "did " + id,
			RunID: agentState(t, h, "T", p).RunID}, &done)
		require.NoError(t, err)
		mrs[id] = done.MergeRequest
		require.Equal(t, coordinator.BeadInReview, bead(t, h, id).Status)
		require.Empty(t, agentState(t, h, "T", p).Hook)
		_, err = rpc(t, h, "T", "done", tok, p, "r", schemas.DoneRequest{Branch: "x"}, nil)
		require.ErrorIs(t, err, schemas.ErrConflict, "done twice: nothing on the hook")
	}

	// The refinery works through the review queue, one merge request at a
	// time, each its own dispatch.
	for range 3 {
		ref := agentState(t, h, "T", "r-refinery")
		require.NotEmpty(t, ref.Hook, "the refinery has a merge request on its hook")
		require.Equal(t, coordinator.AgentWorking, ref.Status)
		require.Equal(t, ref.RunID, c.run("r-refinery"), "and was dispatched for it")
		var p coordinator.Prime
		_, err := rpc(t, h, "T", "prime", tok, "r-refinery", "r", nil, &p)
		require.NoError(t, err)
		require.Equal(t, coordinator.BeadMergeRequest, p.Hook.Type)
		_, err = rpc(t, h, "T", "review.complete", tok, "r-refinery", "r", schemas.ReviewComplete{BeadID: p.Hook.BeadID, Outcome: schemas.ReviewMerged, RunID: "stale-run"}, nil)
		require.ErrorIs(t, err, schemas.ErrConflict, "review.complete from a stale run")
		_, err = rpc(t, h, "T", "review.complete", tok, "r-refinery", "r", schemas.ReviewComplete{BeadID: p.Hook.BeadID, Outcome: schemas.ReviewMerged, RunID: ref.RunID}, nil)
		require.NoError(t, err)
		require.Equal(t, coordinator.BeadClosed, bead(t, h, p.Hook.SourceBead).Status)
	}
	select {
	case id := <-landed:
		require.Equal(t, convoy.BeadID, id)
	case <-time.After(10 * time.Second):
		t.Fatal("the convoy never landed")
	}
	var st schemas.ConvoyStatus
	_, err = rpc(t, h, "T", "convoy.status", tok, "mayor", "town", schemas.BeadRef{BeadID: convoy.BeadID}, &st)
	require.NoError(t, err)
	require.True(t, st.Landed)
	require.Equal(t, 3, st.Closed)
}

// TestFlowReviewFailureBackToWork: a failed review sends the bead back to
// work, to its polecat; a conflict also opens an escalation.
func TestFlowReviewFailureBackToWork(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 200 * time.Millisecond, DispatchCooldown: time.Hour})
	slingOne(t, h)
	c := startBeating(t, h, "T", 100*time.Millisecond)
	tok := h.ContainerToken("T")
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	p := res.AgentID
	firstRun := c.run(p)

	for i, outcome := range []string{schemas.ReviewFailed, schemas.ReviewConflict} {
		_, err := rpc(t, h, "T", "done", tok, p, "r", schemas.DoneRequest{Branch: "br", Summary: "s"}, nil)
		require.NoError(t, err)
		ref := agentState(t, h, "T", "r-refinery")
		_, err = rpc(t, h, "T", "review.complete", tok, "r-refinery", "r", schemas.ReviewComplete{BeadID: ref.Hook, Outcome: outcome, Note: "tests fail"}, nil)
		require.NoError(t, err)
		require.Equal(t, coordinator.BeadFailed, bead(t, h, ref.Hook).Status, "the merge request failed")
		b := bead(t, h, "b")
		require.Equal(t, coordinator.BeadInProgress, b.Status, "round %d: the bead is back at work", i)
		require.Equal(t, p, b.Assignee, "with its polecat")
		a := agentState(t, h, "T", p)
		require.Equal(t, "b", a.Hook)
		require.NotEqual(t, firstRun, a.RunID, "in a new run")
		require.Equal(t, a.RunID, c.run(p))
		firstRun = a.RunID
	}
	var st coordinator.TownStatus
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
	escalations := 0
	for _, b := range st.Beads {
		if b.Type == coordinator.BeadEscalation {
			escalations++
			require.Equal(t, "b", b.SourceBead)
		}
	}
	require.Equal(t, 1, escalations, "the conflict, not the failure, opened an escalation")
}
