package coordinator

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// repair finishes, on every patrol round, what a coordinator that died
// between two writes of one step left half done, so that a bead and an
// agent never disagree for longer than a round and no work is stranded.
// The steps name, at each write, the rule below that completes them:
//
//  1. an agent hooked to a bead that is gone, decided, in review or
//     assigned to another agent is unhooked (the crash came between the
//     bead's write and the agent's);
//  2. an agent hooked to a bead assigned to nobody gets it (the crash came
//     between the agent's write and the bead's, in hook: sling, the review
//     queue, triage);
//  3. a bead in review whose merge request was decided is closed, or sent
//     back to work (the crash came in review.complete after the merge
//     request's write);
//  4. a convoy whose beads are all closed lands (the crash came between
//     closing the last bead and landing the convoy);
//  5. a merge request waiting in a rig's queue while the rig's refinery is
//     free is hooked to it, and patrol dispatches it (the crash came in
//     done or review.complete before the queue was fed);
//  6. an issue in progress whose assignee is free (nothing on its hook, no
//     run) is hooked back to it, and patrol dispatches it again (the crash
//     came after a step cleared the agent's hook in its own write, before
//     the bead's write: a done before the bead went to review, a last
//     failed dispatch before the bead failed). The work is done again;
//     nothing is stranded. Seen in the cluster fault test.
//
// Only agents that are not running are touched: a running agent's own
// calls finish its step. Rules 3, 5 and 6 leave a record alone for a request
// timeout after its last write: the step that wrote it finishes itself
// within a request.
func (c *Coordinator) repair(ctx context.Context, agents []Agent) {
	for _, a := range agents {
		if a.Hook == "" || a.Status == AgentWorking {
			continue
		}
		b, ok := c.st.beads.Get(schemas.Key(a.TownID, a.Hook))
		switch {
		case !ok || b.Final() || b.Status == BeadInReview || b.Assignee != "" && b.Assignee != a.AgentID: // rule 1
			c.log.Warn("repair: unhooking an agent from a bead it no longer works on", KeyTown, a.TownID, KeyAgent, a.AgentID,
				KeyBead, a.Hook, "beadStatus", b.Status, "assignee", b.Assignee)
			c.unhook(ctx, a.TownID, a.AgentID, a.Hook)
		case b.Assignee == "": // rule 2
			err := c.assign(ctx, a.TownID, b.BeadID, a.AgentID, func(x *Bead) error {
				if x.Final() || x.Assignee != "" {
					return errNoChange
				}
				return nil
			})
			switch {
			case err == nil:
				c.log.Warn("repair: assigned a bead to the agent hooked to it", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyBead, b.BeadID)
			case !errors.Is(err, errNoChange):
				c.log.Warn("repair: assigning a bead", KeyTown, a.TownID, KeyBead, b.BeadID, KeyErr, err)
			}
		}
	}

	now := c.now()
	stuck := c.st.beads.List(func(_ string, b Bead) bool {
		return c.leases.holds(b.TownID) && (b.Status == BeadInReview ||
			b.Type == BeadConvoy && !b.Landed && !b.Final() && len(b.Tracks) > 0)
	})
	for _, b := range stuck {
		if b.Type == BeadConvoy { // rule 4
			c.convoyProgress(ctx, b.TownID, b.BeadID)
			continue
		}
		// rule 3
		if _, open := c.openMergeRequest(b.TownID, b.BeadID); open {
			continue
		}
		mr, ok := c.lastMergeRequest(b.TownID, b.BeadID)
		// review.complete finishes its own step within a request.
		if !ok || now.Sub(mr.UpdatedAt) < c.cfg.RequestTimeout {
			continue
		}
		c.log.Warn("repair: finishing the review of a bead whose merge request was decided", KeyTown, b.TownID,
			KeyBead, b.BeadID, "mergeRequest", mr.BeadID, "outcome", mr.Status)
		if mr.Status == BeadClosed {
			if _, err := c.closeBead(ctx, b.TownID, b.BeadID); err != nil {
				c.log.Warn("repair: closing bead", KeyTown, b.TownID, KeyBead, b.BeadID, KeyErr, err)
			}
		} else {
			c.backToWork(ctx, b.TownID, mr)
		}
	}

	// rule 6
	for _, b := range c.st.beads.List(func(_ string, b Bead) bool {
		return c.leases.holds(b.TownID) && b.Type == BeadIssue && b.Status == BeadInProgress && b.Assignee != "" &&
			now.Sub(b.UpdatedAt) >= c.cfg.RequestTimeout
	}) {
		if a, ok := c.st.agents.Get(schemas.Key(b.TownID, b.Assignee)); !ok || !a.free() {
			continue
		}
		_, err := c.st.agents.Update(ctx, schemas.Key(b.TownID, b.Assignee), func(a *Agent) error { return hookAgent(a, b.BeadID, now) })
		switch {
		case err == nil:
			c.log.Warn("repair: hooked an issue in progress back to its free assignee", KeyTown, b.TownID, KeyAgent, b.Assignee, KeyBead, b.BeadID)
		case !errors.Is(err, schemas.ErrConflict):
			c.log.Warn("repair: hooking an issue back to its assignee", KeyTown, b.TownID, KeyBead, b.BeadID, KeyErr, err)
		}
	}

	// rule 5
	queued := map[string]bool{}
	for _, mr := range c.st.beads.List(func(_ string, b Bead) bool {
		return c.leases.holds(b.TownID) && b.Type == BeadMergeRequest && b.Status == BeadOpen && b.Assignee == "" &&
			now.Sub(b.UpdatedAt) >= c.cfg.RequestTimeout
	}) {
		rig := schemas.Key(mr.TownID, mr.RigID)
		if queued[rig] {
			continue
		}
		queued[rig] = true
		if ref, ok := c.st.agents.Get(schemas.Key(mr.TownID, refineryID(mr.RigID))); ok && !ref.free() {
			continue
		}
		if ref, ok := c.hookRefinery(ctx, mr.TownID, mr.RigID); ok {
			c.log.Warn("repair: fed a waiting merge request to the free refinery", KeyTown, mr.TownID, KeyAgent, ref)
		}
	}
}

// lastMergeRequest is the newest decided merge request for bead src.
func (c *Coordinator) lastMergeRequest(townID, src string) (Bead, bool) {
	mrs := c.st.beads.List(func(_ string, b Bead) bool {
		return b.TownID == townID && b.Type == BeadMergeRequest && b.SourceBead == src && b.Final()
	})
	if len(mrs) == 0 {
		return Bead{}, false
	}
	sort.Slice(mrs, func(i, j int) bool { return mrs[i].UpdatedAt.After(mrs[j].UpdatedAt) })
	return mrs[0], true
}
