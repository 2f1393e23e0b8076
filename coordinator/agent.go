package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// The agent lifecycle. This file is the one place an agent's Status is
// written:
//
//	(new) --newAgent--> idle
//	idle, dead --startRun--> working --endRun--> idle, dead
//	idle, dead --stall--> stalled --release--> idle
//
// An agent is working while a run is current (RunID names it); idle when
// nothing runs; dead when its last run went silent (due again at once);
// stalled while it is in a crash loop and waits for triage (never
// dispatched). What an agent is hooked to is the hook's (hook.go).

// newAgent is an agent as it is first written: idle, with nothing on its
// hook.
func newAgent(townID, agentID, rigID, role string) Agent {
	return Agent{TownID: townID, AgentID: agentID, RigID: rigID, Role: role, Status: AgentIdle}
}

// running reports whether the agent has a current run.
func (a Agent) running() bool { return a.Status == AgentWorking && a.RunID != "" }

// startRun makes runID the agent's current run, in the compare-and-set of
// dispatch, so two coordinators never start the same agent twice. It
// refuses (conflict) an agent already running, stalled, or cooling down.
func startRun(a *Agent, runID string, now time.Time) error {
	switch {
	case a.running():
		return schemas.NewError(schemas.CodeConflict, "agent %s is already running (run %s)", a.AgentID, a.RunID)
	case a.Status == AgentStalled:
		return schemas.NewError(schemas.CodeConflict, "agent %s is stalled in a crash loop, waiting for triage", a.AgentID)
	case a.NextAttemptAt.After(now):
		return schemas.NewError(schemas.CodeConflict, "agent %s is cooling down until %s", a.AgentID, a.NextAttemptAt.UTC().Format("15:04:05"))
	}
	a.RunID, a.Status, a.DispatchedAt, a.UpdatedAt = runID, AgentWorking, now, now
	return nil
}

// runStarted records that the container started run runID: its dispatch
// attempts and last error are cleared. A newer run makes it a no-op.
func (c *Coordinator) runStarted(ctx context.Context, townID, agentID, runID string) {
	if _, err := c.st.agents.Update(ctx, schemas.Key(townID, agentID), func(a *Agent) error {
		if a.RunID != runID {
			return errStaleRun
		}
		a.Attempts, a.LastError, a.AwaitsContainer, a.UpdatedAt = 0, "", false, c.now()
		return nil
	}); err != nil && !errors.Is(err, errStaleRun) {
		c.log.Warn("recording a started run", KeyTown, townID, KeyAgent, agentID, KeyErr, err)
	}
}

// errStaleRun abandons a write about a run that is no longer current.
var errStaleRun = schemas.NewError(schemas.CodeConflict, "stale run: a newer run of the agent exists")

// runEnd is why a run ended; it decides what endRun does beyond the rule
// every end follows.
type runEnd int

const (
	// endNotStarted: the dispatch failed, the container never ran it.
	endNotStarted runEnd = iota + 1
	// endExited: the container reported that its process exited 0.
	endExited
	// endCrashed: the container reported that its process exited non-zero.
	endCrashed
	// endSilent: it missed its heartbeats; the agent is dead.
	endSilent
	// endDone: the polecat's done handed its work to review.
	endDone
	// endReviewed: the refinery gave its verdict on its merge request.
	endReviewed
)

func (r runEnd) String() string {
	switch r {
	case endNotStarted:
		return "not started"
	case endExited:
		return "exited"
	case endCrashed:
		return "crashed"
	case endSilent:
		return "silent"
	case endDone:
		return "done"
	case endReviewed:
		return "reviewed"
	}
	return fmt.Sprintf("runEnd(%d)", int(r))
}

// endRun ends the agent's run runID for reason why, in one compare-and-set
// of the agent. The rule, whatever the reason:
//
//   - the write is refused with errStaleRun unless runID is still the
//     agent's current run: it is working and RunID names it ("" ends
//     whichever run is current, or none: a done or a review that named
//     no run);
//   - RunID is cleared and UpdatedAt set to now;
//   - once written, what liveness knew of the run is forgotten.
//
// The reason decides the rest, and nothing else does:
//
//   - status: dead for endSilent, idle for every other end;
//   - failure: detail becomes LastError for endNotStarted, endCrashed and
//     endSilent; the last two also count toward a crash loop (a run that
//     never started is a dispatch attempt, which step counts);
//   - next dispatch: after the cooldown for a run that ended by itself or
//     never started (endNotStarted, endExited, endCrashed); at once for
//     endSilent (its work was cut off); unchanged for endDone and
//     endReviewed (their step unhooks the agent: no work waits).
//
// step, if not nil, is what the caller's own step writes in the same
// compare-and-set (dispatch attempts, the hook); an error from it abandons
// the write and is returned. The agent as written is returned.
func (c *Coordinator) endRun(ctx context.Context, townID, agentID, runID string, why runEnd, detail string, step func(*Agent) error) (Agent, error) {
	now := c.now()
	var ended string
	a, err := c.st.agents.Update(ctx, schemas.Key(townID, agentID), func(a *Agent) error {
		if runID != "" && (a.RunID != runID || a.Status != AgentWorking) {
			return errStaleRun
		}
		ended = a.RunID
		a.Status, a.RunID, a.UpdatedAt = AgentIdle, "", now
		switch why {
		case endNotStarted:
			a.LastError = detail
		case endCrashed, endSilent:
			a.LastError = detail
			a.Failures = recentFailures(append(a.Failures, now), now)
		}
		switch why {
		case endNotStarted, endExited, endCrashed:
			a.NextAttemptAt = now.Add(c.cfg.DispatchCooldown)
		case endSilent:
			a.Status, a.NextAttemptAt = AgentDead, now
		}
		if step != nil {
			return step(a)
		}
		return nil
	})
	if err != nil {
		return a, err
	}
	if ended != "" {
		c.live.forget(townID, agentID, ended)
	}
	return a, nil
}

// stall stops the dispatches of a crash-looping agent until triage
// releases it. It reports false, and writes nothing, if the agent no
// longer counts as crash-looping.
func (c *Coordinator) stall(ctx context.Context, townID, agentID string) (bool, error) {
	_, err := c.st.agents.Update(ctx, schemas.Key(townID, agentID), func(x *Agent) error {
		if !crashLooping(*x) {
			return errNoChange
		}
		x.Status, x.UpdatedAt = AgentStalled, c.now()
		return nil
	})
	if errors.Is(err, errNoChange) {
		return false, nil
	}
	return err == nil, err
}

// release is triage's verdict on an agent: its failures are forgotten and
// it is idle and due at once. step, if not nil, writes the verdict's own
// change (the hook) in the same compare-and-set.
func (c *Coordinator) release(ctx context.Context, townID, agentID string, step func(*Agent)) error {
	now := c.now()
	_, err := c.st.agents.Update(ctx, schemas.Key(townID, agentID), func(a *Agent) error {
		a.Failures, a.Status, a.NextAttemptAt, a.UpdatedAt = nil, AgentIdle, now, now
		if step != nil {
			step(a)
		}
		return nil
	})
	return err
}
