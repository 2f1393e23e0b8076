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
	c.resumeTriage(ctx, agents)
}

// resumeTriage finishes what a coordinator that died in openTriageFor left
// half done, so that no stalled agent waits for a triage nobody works on:
// a stalled agent with no open request, and none made since it was
// stalled, gets one
// (within maxOpenTriage), and an open request assigned to nobody and on
// no agent's hook is hooked to a triage agent. Each waits a request
// timeout after the last write, which the step finishes itself.
func (c *Coordinator) resumeTriage(ctx context.Context, agents []Agent) {
	hooked := map[string]bool{}
	for _, a := range agents {
		if a.Hook != "" {
			hooked[schemas.Key(a.TownID, a.Hook)] = true
		}
	}
	now := c.now()
	for _, a := range agents {
		if a.Status != AgentStalled || now.Sub(a.UpdatedAt) < c.cfg.RequestTimeout {
			continue
		}
		asked := c.st.beads.List(func(_ string, b Bead) bool {
			return b.TownID == a.TownID && b.CreatedBy == patrolCreator && b.TriageFor == a.AgentID && (!b.Final() || !b.CreatedAt.Before(a.UpdatedAt))
		})
		var err error
		switch {
		case len(asked) == 0:
			if len(c.openTriage(a.TownID)) >= maxOpenTriage {
				continue
			}
			c.log.Warn("repair: opening the missing triage request of a stalled agent", KeyTown, a.TownID, KeyAgent, a.AgentID)
			err = c.requestTriage(ctx, a)
		default:
			req := asked[0]
			if req.Final() || req.Assignee != "" || hooked[schemas.Key(a.TownID, req.BeadID)] || now.Sub(req.UpdatedAt) < c.cfg.RequestTimeout {
				continue
			}
			c.log.Warn("repair: hooking a triage request nobody works on", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyBead, req.BeadID)
			err = c.slingTriage(ctx, a, req.BeadID)
		}
		if err != nil {
			c.log.Warn("repair: resuming triage", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyErr, err)
		}
	}
}

func (c *Coordinator) openTriageFor(ctx context.Context, a Agent) error {
	// Three writes and a dispatch; after a crash between two, what
	// finishes the step: 1. the agent stalled: resumeTriage opens its
	// missing request on the next round.
	if stalled, err := c.stall(ctx, a.TownID, a.AgentID); !stalled {
		return err
	}
	return c.requestTriage(ctx, a)
}

// requestTriage opens the triage request of stalled agent a and slings
// it to a triage agent.
func (c *Coordinator) requestTriage(ctx context.Context, a Agent) error {
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
	// 2. the request open: resumeTriage hooks it to a triage agent on the
	// next round. 3. the hook: its own rule; the dispatch: patrol's.
	return c.slingTriage(ctx, a, b.BeadID)
}

// slingTriage hooks the triage request beadID about agent a to a triage
// agent and dispatches it.
func (c *Coordinator) slingTriage(ctx context.Context, a Agent, beadID string) error {
	agentID, err := c.hookTriageAgent(ctx, a.TownID, a.RigID, beadID)
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
	return c.hook(ctx, townID, beadID, func(hook func(*Agent) error) (string, error) {
		for i := 1; i <= 100; i++ {
			id := fmt.Sprintf("triage-%d", i)
			_, err := c.st.agents.Upsert(ctx, schemas.Key(townID, id), func(a *Agent) error {
				if a.AgentID == "" {
					*a = newAgent(townID, id, rigID, schemas.RoleTriage)
				}
				if err := hook(a); err != nil {
					return err
				}
				a.RigID = rigID // a triage agent goes where it is needed
				return nil
			})
			if errors.Is(err, schemas.ErrConflict) {
				continue // busy
			}
			return id, err
		}
		return "", schemas.NewError(schemas.CodeUnavailable, "no triage agent is free")
	}, nil)
}

// toolTriageResolve: the triage agent's verdict on the crash-looping agent
// of the patrol triage bead on its hook. Restart clears the failures so the
// agent is dispatched again; fail fails its bead and unhooks it.
func (c *Coordinator) toolTriageResolve(ctx context.Context, caller Caller, r schemas.TriageResolve) (any, error) {
	me, _ := c.st.agents.Get(schemas.Key(caller.TownID, caller.AgentID))
	var tb Bead
	ok := false
	if me.Hook != "" {
		var err error
		if tb, ok, err = c.st.beads.Fetch(ctx, schemas.Key(caller.TownID, me.Hook)); err != nil {
			return nil, err
		}
	}
	if me.Hook == "" || !ok || tb.CreatedBy != patrolCreator || tb.TriageFor == "" {
		return nil, schemas.NewError(schemas.CodePermissionDenied, "triage.resolve needs a patrol triage request on your hook")
	}
	// Four writes; after a crash between two, what finishes the step:
	// 1. the agent released: its failed bead (fail) is left as it was, and
	// no repair rule fails it; the triage agent, still hooked, resolves
	// again (its run retries, or patrol dispatches it again).
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
	// 2. the bead failed: the triage agent resolves again, as after 1.
	if _, err := c.closeBead(ctx, caller.TownID, tb.BeadID); err != nil {
		return nil, err
	}
	// 3. the request closed: repair rule 1 unhooks the triage agent.
	c.unhook(ctx, caller.TownID, caller.AgentID, tb.BeadID)
	c.log.Info("triage resolved", KeyTown, caller.TownID, KeyAgent, tb.TriageFor, "action", r.Action)
	return map[string]string{"agentId": tb.TriageFor, "action": r.Action, "failedBead": failedBead}, nil
}
