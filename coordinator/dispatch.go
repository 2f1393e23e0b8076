package coordinator

import (
	"context"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// newRunID makes a fresh run id: 22 characters of [A-Za-z0-9].
func newRunID() string { return nuid.Next() }

// dispatch starts a new run of an agent in its town's container: the run
// id is recorded first (compare-and-set, so two coordinators never start
// the same agent twice), then the container is asked, and a failure is
// recorded with its cooldown. It never waits on a token refresh.
func (c *Coordinator) dispatch(ctx context.Context, townID, agentID string) error {
	key := schemas.Key(townID, agentID)
	runID := newRunID()
	now := c.now()
	a, err := c.st.agents.Update(ctx, key, func(a *Agent) error { return startRun(a, runID, now) })
	if err != nil {
		return err
	}
	c.metrics.dispatched()
	req, err := c.startRequest(ctx, a)
	if err != nil {
		return c.dispatchFailed(ctx, a, runID, err.Error())
	}
	t, _ := schemas.ForTown(townID)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.DispatchTimeout)
	defer cancel()
	var res schemas.StartAgentResult
	err = bus.Request(rctx, c.nc, t.Dispatch(), req, &res)
	heard := c.noContainer.stamp() // an answer is news of the container
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return c.dispatchFailed(ctx, a, runID, reasonNoContainer)
	case err != nil:
		return c.dispatchFailed(ctx, a, runID, "container did not answer: "+errors.UnwrapAll(err).Error())
	case !res.OK:
		return c.dispatchFailed(ctx, a, runID, "container refused: "+res.Err().Error())
	case res.RunID != runID:
		return c.dispatchFailed(ctx, a, runID, "container answered for another run")
	}
	c.runStarted(ctx, townID, agentID, runID)
	if a.Hook != "" {
		c.setBeadStatus(ctx, townID, a.Hook, BeadInProgress, BeadOpen)
	}
	c.noContainer.remove(townID, heard)
	c.log.Info("agent dispatched", KeyTown, townID, KeyAgent, agentID, KeyRun, runID, "role", a.Role)
	return nil
}

// dispatchFailed records a failed dispatch: the agent waits the cooldown,
// and after MaxAttempts its bead fails and it is unhooked.
func (c *Coordinator) dispatchFailed(ctx context.Context, a Agent, runID, reason string) error {
	seen := c.noContainer.stamp() // when the failure was seen, before its writes
	c.metrics.dispatchFailed()
	// A dispatch cut short by Close is recorded all the same (a short
	// write, which Close waits for), so no run that never started is left
	// working in the store.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
	defer cancel()
	var failed string
	now := c.now()
	if _, err := c.endRun(ctx, a.TownID, a.AgentID, runID, endNotStarted, reason, func(a *Agent) error {
		failed = ""
		// No container is not the work's fault: it is not an attempt, and
		// the container connecting ends the cooldown.
		if a.AwaitsContainer = reason == reasonNoContainer; a.AwaitsContainer {
			return nil
		}
		a.Attempts++
		if a.Attempts >= c.cfg.MaxAttempts && a.Hook != "" {
			failed, a.Hook, a.Attempts, a.NextAttemptAt = a.Hook, "", 0, now
		}
		return nil
	}); err != nil && !errors.Is(err, errStaleRun) {
		c.log.Error("recording a failed dispatch", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyErr, err)
	}
	// A town without a container fails every dispatch, every cooldown:
	// warn once per town until its container is heard from again.
	if reason != reasonNoContainer || c.noContainer.add(a.TownID, seen) {
		c.log.Warn("dispatch failed", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyRun, runID, KeyReason, reason)
	} else {
		c.log.Debug("dispatch failed", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyRun, runID, KeyReason, reason)
	}
	if failed != "" {
		c.setBeadStatus(ctx, a.TownID, failed, BeadFailed)
		c.log.Warn("bead failed after too many dispatch attempts", KeyTown, a.TownID, KeyBead, failed, KeyCount, c.cfg.MaxAttempts)
	}
	return schemas.NewError(schemas.CodeUnavailable, "dispatch of %s failed: %s", a.AgentID, reason)
}

var errNoChange = errors.New("no change")

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// startRequest builds the StartAgent of a run: its workspace from the
// agent's rig, its prompt from its hooked bead. It never holds a token.
func (c *Coordinator) startRequest(ctx context.Context, a Agent) (*schemas.StartAgent, error) {
	req := &schemas.StartAgent{
		TownID: a.TownID, RigID: a.RigID, AgentID: a.AgentID, RunID: a.RunID, Role: a.Role,
		BeadID: a.Hook, Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty},
	}
	if a.Hook != "" {
		if b, err := c.lookupBead(ctx, a.TownID, a.Hook); err == nil {
			req.Prompt = b.Title
			if b.Body != "" {
				req.Prompt += "\n\n" + b.Body
			}
		}
	}
	if a.Role == schemas.RolePolecat || a.Role == schemas.RoleRefinery {
		rig, ok, err := c.st.rigs.Fetch(ctx, schemas.Key(a.TownID, a.RigID))
		if err != nil {
			return nil, errors.Wrapf(err, "reading rig %s of agent %s", a.RigID, a.AgentID)
		}
		if !ok {
			return nil, errors.Newf("rig %s of agent %s does not exist", a.RigID, a.AgentID)
		}
		branch := rig.DefaultBranch
		if a.Role == schemas.RolePolecat && a.Hook != "" {
			branch = schemas.PolecatBranch(a.AgentID, a.Hook)
		}
		req.Workspace = schemas.Workspace{Kind: schemas.WorkspaceGit, GitURL: rig.GitURL, Branch: branch, DefaultBranch: rig.DefaultBranch}
	}
	return req, req.Validate()
}

// stopRun asks the container to stop a run, best effort.
func (c *Coordinator) stopRun(ctx context.Context, townID, agentID, runID, reason string) {
	t, err := schemas.ForTown(townID)
	if err != nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var ack schemas.Ack
	if err := bus.Request(rctx, c.nc, t.ControlStop(), &schemas.StopAgent{AgentID: agentID, RunID: runID, Reason: reason}, &ack); err != nil {
		c.log.Debug("stop request not delivered", KeyTown, townID, KeyAgent, agentID, KeyRun, runID, KeyErr, err)
	} else if err := ack.Err(); err != nil {
		c.log.Debug("stop refused by the container", KeyTown, townID, KeyAgent, agentID, KeyRun, runID, KeyErr, err)
	}
}
