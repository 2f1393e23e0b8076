package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// put writes v straight into a state bucket, as a coordinator that died
// after one write of a step and before the next would have left it.
func put(t *testing.T, h *coordinatortest.Harness, bucket, key string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv := stateKV(t, h, bucket)
	b, err := json.Marshal(v)
	require.NoError(t, err)
	_, err = kv.Put(ctx, key, b)
	require.NoError(t, err)
}

// TestRepairHalfDoneSteps: each state a crash between two writes of one
// step can leave is put in the store directly; patrol repairs every one,
// and the flow carries on from there.
func TestRepairHalfDoneSteps(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 100 * time.Millisecond, DispatchCooldown: time.Hour, RequestTimeout: time.Second})
	slingOne(t, h) // town T, rig r, bead b (not slung)
	for _, id := range []string{"b1", "b2", "b3", "b4", "b5", "b7"} {
		require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: id, RigID: "r", Title: "work " + id}, nil))
	}
	var convoy3, convoy4 coordinator.Bead
	require.NoError(t, admin(t, h, schemas.AdminConvoy, schemas.AdminConvoyCreate{TownID: "T",
		ConvoyCreate: schemas.ConvoyCreate{Title: "three", Beads: []string{"b3"}}}, &convoy3))
	require.NoError(t, admin(t, h, schemas.AdminConvoy, schemas.AdminConvoyCreate{TownID: "T",
		ConvoyCreate: schemas.ConvoyCreate{Title: "four", Beads: []string{"b4"}}}, &convoy4))
	status := func() (map[string]coordinator.Bead, map[string]coordinator.Agent) {
		var st coordinator.TownStatus
		require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
		beads, agents := map[string]coordinator.Bead{}, map[string]coordinator.Agent{}
		for _, b := range st.Beads {
			beads[b.BeadID] = b
		}
		for _, a := range st.Agents {
			agents[a.AgentID] = a
		}
		return beads, agents
	}
	beads, _ := status()
	long := time.Now().UTC().Add(-time.Hour)
	later := time.Now().UTC().Add(time.Hour) // no dispatch during the test
	polecat := func(id, hook string) coordinator.Agent {
		return coordinator.Agent{TownID: "T", AgentID: id, RigID: "r", Role: schemas.RolePolecat, Status: coordinator.AgentIdle,
			Hook: hook, NextAttemptAt: later, UpdatedAt: long}
	}

	// sling died after hooking the polecat, before assigning the bead.
	put(t, h, schemas.BucketAgents, schemas.Key("T", "p1"), polecat("p1", "b1"))
	// done died after the bead went to review, before unhooking.
	b2 := beads["b2"]
	b2.Status, b2.Assignee = coordinator.BeadInReview, "p2"
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b2"), b2)
	put(t, h, schemas.BucketBeads, schemas.Key("T", "m2"), coordinator.Bead{TownID: "T", BeadID: "m2", Type: coordinator.BeadMergeRequest,
		Status: coordinator.BeadOpen, RigID: "r", SourceBead: "b2", Polecat: "p2", CreatedAt: long, UpdatedAt: long})
	put(t, h, schemas.BucketAgents, schemas.Key("T", "p2"), polecat("p2", "b2"))
	// review.complete died after deciding the merge request, before closing
	// the bead (and landing its convoy).
	b3 := beads["b3"]
	b3.Status, b3.Assignee = coordinator.BeadInReview, "p3"
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b3"), b3)
	put(t, h, schemas.BucketBeads, schemas.Key("T", "m3"), coordinator.Bead{TownID: "T", BeadID: "m3", Type: coordinator.BeadMergeRequest,
		Status: coordinator.BeadClosed, RigID: "r", SourceBead: "b3", Polecat: "p3", CreatedAt: long, UpdatedAt: long})
	// closing the last bead of a convoy died before landing it.
	b4 := beads["b4"]
	b4.Status = coordinator.BeadClosed
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b4"), b4)
	// an agent left hooked to a bead another agent has.
	b5 := beads["b5"]
	b5.Assignee = "p1"
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b5"), b5)
	put(t, h, schemas.BucketAgents, schemas.Key("T", "p5"), polecat("p5", "b5"))
	// a step that cleared the polecat's hook died before the bead's write:
	// the issue is in progress for a free polecat.
	b7 := beads["b7"]
	b7.Status, b7.Assignee, b7.UpdatedAt = coordinator.BeadInProgress, "p7", long
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b7"), b7)
	put(t, h, schemas.BucketAgents, schemas.Key("T", "p7"), polecat("p7", ""))

	require.Eventually(t, func() bool {
		beads, agents := status()
		return beads["b1"].Assignee == "p1" && agents["p1"].Hook == "b1" &&
			agents["p2"].Hook == "" && beads["b2"].Status == coordinator.BeadInReview &&
			beads["b3"].Status == coordinator.BeadClosed && beads[convoy3.BeadID].Landed &&
			beads[convoy4.BeadID].Landed &&
			agents["p5"].Hook == "" && beads["b5"].Assignee == "p1" &&
			agents["p7"].Hook == "b7" && beads["b7"].Assignee == "p7"
	}, 10*time.Second, 50*time.Millisecond, "patrol repairs every half-done step")

	// A polecat whose done reply was lost (the coordinator died after the
	// bead went to review) sends done again from its run: the merge
	// request already there is reused, not duplicated, and the step ends.
	p6 := polecat("p6", "b6")
	p6.Status, p6.RunID, p6.NextAttemptAt = coordinator.AgentWorking, "run6", time.Time{}
	p6.DispatchedAt = time.Now().UTC()
	require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: "b6", RigID: "r", Title: "work b6"}, nil))
	beads, _ = status()
	b6 := beads["b6"]
	b6.Status, b6.Assignee = coordinator.BeadInReview, "p6"
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b6"), b6)
	put(t, h, schemas.BucketBeads, schemas.Key("T", "m6"), coordinator.Bead{TownID: "T", BeadID: "m6", Type: coordinator.BeadMergeRequest,
		Status: coordinator.BeadOpen, RigID: "r", SourceBead: "b6", Polecat: "p6", Branch: "p6-work", CreatedAt: long, UpdatedAt: long})
	put(t, h, schemas.BucketAgents, schemas.Key("T", "p6"), p6)
	require.Eventually(t, func() bool { // each bucket's watch brings its own writes
		beads, agents := status()
		return beads["m6"].SourceBead == "b6" && beads["b6"].Status == coordinator.BeadInReview && agents["p6"].Hook == "b6"
	}, 5*time.Second, 20*time.Millisecond, "the coordinator sees the half-done step")
	var done coordinator.DoneResult
	_, err := rpc(t, h, "T", schemas.ToolDone, h.ContainerToken("T"), "p6", "r", schemas.DoneRequest{Branch: "p6-work"}, &done)
	require.NoError(t, err, "done is accepted again")
	require.Equal(t, "m6", done.MergeRequest)
	beads, agents := status()
	n := 0
	for _, b := range beads {
		if b.Type == coordinator.BeadMergeRequest && b.SourceBead == "b6" {
			n++
		}
	}
	require.Equal(t, 1, n, "one merge request for b6")
	require.Equal(t, "", agents["p6"].Hook, "the polecat is unhooked")
	require.Equal(t, coordinator.BeadInReview, beads["b6"].Status)
}

// TestRepairFeedsTheReviewQueue: a done that died after the polecat was
// unhooked, before the review queue was fed, leaves a merge request
// waiting with the rig's refinery free; patrol hooks it to the refinery
// and dispatches it, with its container connected.
func TestRepairFeedsTheReviewQueue(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour, RequestTimeout: time.Second})
	slingOne(t, h) // town T, rig r, bead b (not slung)
	c := startBeating(t, h, "T", interval/2)
	long := time.Now().UTC().Add(-time.Hour)
	put(t, h, schemas.BucketBeads, schemas.Key("T", "b"), coordinator.Bead{TownID: "T", BeadID: "b", Type: coordinator.BeadIssue,
		Status: coordinator.BeadInReview, RigID: "r", Title: "work", CreatedAt: long, UpdatedAt: long})
	put(t, h, schemas.BucketBeads, schemas.Key("T", "m"), coordinator.Bead{TownID: "T", BeadID: "m", Type: coordinator.BeadMergeRequest,
		Status: coordinator.BeadOpen, RigID: "r", Title: "Merge p-work (work)", SourceBead: "b", Polecat: "p", Branch: "p-work", CreatedAt: long, UpdatedAt: long})
	ref := "r-refinery"
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
		for _, a := range st.Agents {
			if a.AgentID == ref {
				return a.Hook == "m" && c.run(ref) != ""
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "the waiting merge request goes to the refinery, which is dispatched")
	var st coordinator.TownStatus
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
	for _, b := range st.Beads {
		if b.BeadID == "m" {
			require.Equal(t, ref, b.Assignee)
			require.Equal(t, coordinator.BeadInProgress, b.Status)
		}
	}
}
