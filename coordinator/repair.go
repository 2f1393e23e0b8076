package coordinator

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// repair finishes, on every patrol round, what a coordinator that died
// between two writes of one step left half done, so that a bead and an
// agent never disagree for longer than a round and no work is stranded:
//
//   - an agent hooked to a bead that is gone, decided, in review or
//     assigned to another agent is unhooked (the crash came between the
//     bead's write and the agent's);
//   - an agent hooked to a bead assigned to nobody gets it (the crash came
//     between the agent's write and the bead's, in sling or the review
//     queue);
//   - a bead in review whose merge request was decided is closed, or sent
//     back to work (the crash came in review.complete after the merge
//     request's write);
//   - a convoy whose beads are all closed lands (the crash came between
//     closing the last bead and landing the convoy).
//
// Only agents that are not running are touched: a running agent's own
// calls finish its step.
func (c *Coordinator) repair(ctx context.Context, agents []Agent) {
	for _, a := range agents {
		if a.Hook == "" || a.Status == AgentWorking {
			continue
		}
		b, ok := c.st.beads.Get(schemas.Key(a.TownID, a.Hook))
		switch {
		case !ok || b.Final() || b.Status == BeadInReview || b.Assignee != "" && b.Assignee != a.AgentID:
			c.log.Warn("repair: unhooking an agent from a bead it no longer works on", KeyTown, a.TownID, KeyAgent, a.AgentID,
				KeyBead, a.Hook, "beadStatus", b.Status, "assignee", b.Assignee)
			c.unhook(ctx, a.TownID, a.AgentID, a.Hook)
		case b.Assignee == "":
			_, err := c.st.beads.Update(ctx, schemas.Key(a.TownID, b.BeadID), func(x *Bead) error {
				if x.Final() || x.Assignee != "" {
					return errNoChange
				}
				x.Assignee, x.UpdatedAt = a.AgentID, c.now().UTC()
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
		if b.Type == BeadConvoy {
			c.convoyProgress(ctx, b.TownID, b.BeadID)
			continue
		}
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
