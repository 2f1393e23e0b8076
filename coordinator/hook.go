package coordinator

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
)

// A hook ties a bead to the agent that works on it: the agent's Hook names
// the bead, and the bead's Assignee names the agent. They are two records,
// so hooking is two compare-and-set writes, the agent's first. This file
// is the one way it is done: sling (hookPolecat), the review queue
// (hookRefinery), triage (hookTriageAgent) and repair (its second rule,
// the bead's half alone) all go through hook or assign. An unhook on its
// own goes through unhook; the steps that end a run or give a verdict
// clear the hook in that same write of the agent instead (done, a
// dispatch's last failed attempt, triage's fail verdict).

// free reports whether an agent may take a bead: nothing is on its hook
// and it has no run.
func (a Agent) free() bool { return a.Hook == "" && a.Status != AgentWorking }

// hookAgent is the agent's half of a hook: beadID goes on its hook, its
// dispatch attempts and last error start again, and it is due at once. An
// agent that is not free is refused with conflict.
func hookAgent(a *Agent, beadID string, now time.Time) error {
	if !a.free() {
		return schemas.NewError(schemas.CodeConflict, "%s %s is busy", a.Role, a.AgentID)
	}
	a.Hook, a.Attempts, a.NextAttemptAt, a.LastError, a.UpdatedAt = beadID, 0, now, "", now
	return nil
}

// hook hooks bead beadID to an agent and assigns the bead to it.
//
// hookOne makes the agent's write: it applies the hook function it is
// given to one agent (named, or the first free one of a pool), in that
// agent's compare-and-set, and says which agent it hooked. with, if not
// nil, adds the caller's own changes to the bead's write.
//
// The failure rule, when the bead's write fails after the agent's:
//
//   - the bead refused (it is final, another agent's, or gone: conflict or
//     not found): the agent is unhooked again, "" and the error are
//     returned. No agent stays hooked to a bead that is not its own.
//   - the write itself failed (the store did not answer): the agent stays
//     hooked, and its id is returned with the error. This is the state a
//     crash between the two writes leaves, and repair finishes it on the
//     next patrol round (rule 2: "hooked to a bead assigned to nobody").
func (c *Coordinator) hook(ctx context.Context, townID, beadID string, hookOne func(func(*Agent) error) (string, error), with func(*Bead) error) (string, error) {
	now := c.now()
	agentID, err := hookOne(func(a *Agent) error { return hookAgent(a, beadID, now) })
	if err != nil {
		return "", err
	}
	// A crash here: repair rule 2 assigns the bead to the hooked agent.
	if err := c.assign(ctx, townID, beadID, agentID, with); err != nil {
		if errors.Is(err, schemas.ErrConflict) || errors.Is(err, kvstore.ErrKeyNotFound) {
			c.unhook(ctx, townID, agentID, beadID)
			return "", err
		}
		return agentID, err
	}
	return agentID, nil
}

// assign is the bead's half of a hook: the bead is assigned to agentID.
// with runs first, in the same compare-and-set (an error from it abandons
// the write). A bead that is final or assigned to another agent is refused
// with conflict.
func (c *Coordinator) assign(ctx context.Context, townID, beadID, agentID string, with func(*Bead) error) error {
	_, err := c.st.beads.Update(ctx, schemas.Key(townID, beadID), func(b *Bead) error {
		if with != nil {
			if err := with(b); err != nil {
				return err
			}
		}
		if b.Final() || b.Assignee != "" && b.Assignee != agentID {
			return schemas.NewError(schemas.CodeConflict, "bead %s is %s and hooked to %q", beadID, b.Status, b.Assignee)
		}
		b.Assignee, b.UpdatedAt = agentID, c.now()
		return nil
	})
	return err
}

// unhook clears an agent's hook if it still holds beadID.
func (c *Coordinator) unhook(ctx context.Context, townID, agentID, beadID string) {
	if _, err := c.st.agents.Update(ctx, schemas.Key(townID, agentID), func(a *Agent) error {
		if a.Hook != beadID {
			return errNoChange
		}
		a.Hook, a.Attempts, a.UpdatedAt = "", 0, c.now()
		return nil
	}); err != nil && !errors.Is(err, errNoChange) {
		c.log.Warn("unhooking agent", KeyTown, townID, KeyAgent, agentID, KeyErr, err)
	}
}
