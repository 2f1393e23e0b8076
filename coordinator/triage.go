package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// Crash-loop rules (ARCHITECTURE.md, Patrol).
const (
	crashLoopFailures = 3
	maxOpenTriage     = 5
	patrolCreator     = "patrol"
)

// crashLooping reports whether an agent counts as crash-looping. Triage
// agents never count, whatever is on their hook now: the seed counted a
// triage agent's failures again once it was unhooked, and looped.
func crashLooping(a Agent) bool {
	return a.Role != schemas.RoleTriage && a.Status != AgentStalled && a.Status != AgentWorking &&
		len(a.Failures) >= crashLoopFailures
}

// openTriage lists the town's open triage beads made by patrol.
func (c *Coordinator) openTriage(townID string) []Bead {
	return c.st.beads.List(func(_ string, b Bead) bool {
		return b.TownID == townID && b.CreatedBy == patrolCreator && b.TriageFor != "" && !b.Final()
	})
}

// triageCrashLoops opens a triage request for each crash-looping agent,
// at most maxOpenTriage open per town: the agent is stalled (no more
// dispatches) and a triage agent is slung the request.
func (c *Coordinator) triageCrashLoops(ctx context.Context, agents []Agent) {
	for _, a := range agents {
		if !crashLooping(a) {
			continue
		}
		if len(recentFailures(append([]time.Time(nil), a.Failures...), c.now())) < crashLoopFailures {
			continue
		}
		open := c.openTriage(a.TownID)
		if len(open) >= maxOpenTriage {
			continue
		}
		already := false
		for _, b := range open {
			already = already || b.TriageFor == a.AgentID
		}
		if already {
			continue
		}
		if err := c.openTriageFor(ctx, a); err != nil {
			c.log.Warn("opening triage", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyErr, err)
		}
	}
}

func (c *Coordinator) openTriageFor(ctx context.Context, a Agent) error {
	if stalled, err := c.stall(ctx, a.TownID, a.AgentID); !stalled {
		return err
	}
	rig := a.RigID
	if rig == MayorRig {
		rig = "" // the mayor's pseudo-rig is no rig: the request belongs to the town
	}
	b, err := c.createBead(ctx, schemas.BeadCreate{TownID: a.TownID, Type: BeadIssue, RigID: rig,
		Title: fmt.Sprintf("Triage: %s is crash-looping", a.AgentID),
		Body:  fmt.Sprintf("Agent %s (%s) failed %d times in 30 minutes. Last error: %s", a.AgentID, a.Role, len(a.Failures), a.LastError)},
		func(x *Bead) { x.CreatedBy, x.TriageFor = patrolCreator, a.AgentID })
	if err != nil {
		return err
	}
	c.log.Warn("crash loop: triage requested", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyBead, b.BeadID)
	agentID, err := c.hookTriageAgent(ctx, a.TownID, a.RigID, b.BeadID)
	if err != nil {
		return err
	}
	if err := c.dispatch(ctx, a.TownID, agentID); err != nil {
		c.log.Info("triage dispatch deferred to patrol", KeyTown, a.TownID, KeyAgent, agentID, KeyErr, err)
	}
	return nil
}

// hookTriageAgent hooks a triage bead to a free triage agent of the rig,
// or a new one (a lightweight polecat: an empty workspace, no clone).
func (c *Coordinator) hookTriageAgent(ctx context.Context, townID, rigID, beadID string) (string, error) {
	now := c.now().UTC()
	for i := 1; i <= 100; i++ {
		id := fmt.Sprintf("triage-%d", i)
		_, err := c.st.agents.Upsert(ctx, schemas.Key(townID, id), func(a *Agent) error {
			if a.AgentID == "" {
				*a = newAgent(townID, id, rigID, schemas.RoleTriage)
			}
			if a.Hook != "" || a.Status == AgentWorking {
				return errNoChange
			}
			a.Hook, a.RigID, a.Attempts, a.NextAttemptAt, a.UpdatedAt = beadID, rigID, 0, now, now
			return nil
		})
		if errors.Is(err, errNoChange) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = c.st.beads.Update(ctx, schemas.Key(townID, beadID), func(b *Bead) error { b.Assignee = id; return nil })
		return id, err
	}
	return "", schemas.NewError(schemas.CodeUnavailable, "no triage agent is free")
}

// toolTriageResolve: the triage agent's verdict on the crash-looping agent
// of the patrol triage bead on its hook. Restart clears the failures so the
// agent is dispatched again; fail fails its bead and unhooks it.
func (c *Coordinator) toolTriageResolve(ctx context.Context, caller Caller, r schemas.TriageResolve) (any, error) {
	me, _ := c.st.agents.Get(schemas.Key(caller.TownID, caller.AgentID))
	tb, ok := c.st.beads.Get(schemas.Key(caller.TownID, me.Hook))
	if me.Hook == "" || !ok || tb.CreatedBy != patrolCreator || tb.TriageFor == "" {
		return nil, schemas.NewError(schemas.CodePermissionDenied, "triage.resolve needs a patrol triage request on your hook")
	}
	var failedBead string
	if err := c.release(ctx, caller.TownID, tb.TriageFor, func(a *Agent) {
		failedBead = ""
		if r.Action == schemas.TriageFail && a.Hook != "" {
			failedBead, a.Hook = a.Hook, ""
		}
	}); err != nil {
		return nil, notFoundAs(err, "no agent %s", tb.TriageFor)
	}
	if failedBead != "" {
		c.setBeadStatus(ctx, caller.TownID, failedBead, BeadFailed)
	}
	if _, err := c.closeBead(ctx, caller.TownID, tb.BeadID); err != nil {
		return nil, err
	}
	c.unhook(ctx, caller.TownID, caller.AgentID, tb.BeadID)
	c.log.Info("triage resolved", KeyTown, caller.TownID, KeyAgent, tb.TriageFor, "action", r.Action)
	return map[string]string{"agentId": tb.TriageFor, "action": r.Action, "failedBead": failedBead}, nil
}
