package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// patrolTick is how often patrol looks at every agent.
func (c *Coordinator) patrolTick() time.Duration {
	return min(max(min(c.cfg.HeartbeatInterval/2, c.cfg.DispatchCooldown/4), 10*time.Millisecond), time.Second)
}

// deadAfter is how long an agent run may go unheard before it is dead.
func (c *Coordinator) deadAfter() time.Duration {
	return time.Duration(c.cfg.DeadAfter) * c.cfg.HeartbeatInterval
}

// patrolLoop declares silent runs dead and dispatches the agents whose work
// is waiting, until ctx is done.
func (c *Coordinator) patrolLoop(ctx context.Context) {
	every(ctx, c.cfg.Clock, c.patrolTick(), c.patrol)
}

// patrol runs one round: liveness first, then dispatches.
func (c *Coordinator) patrol(ctx context.Context) {
	now := c.now()
	var due []Agent
	agents := c.st.agents.List(func(_ string, a Agent) bool { return c.leases.holds(a.TownID) })
	c.repair(ctx, agents)
	c.triageCrashLoops(ctx, agents)
	for _, a := range agents {
		switch {
		case a.running():
			if seen := c.live.seen(a.TownID, a.AgentID, a.RunID, a.DispatchedAt); c.live.settled(a.TownID, now) && now.Sub(seen) > c.deadAfter() {
				c.markDead(ctx, a, seen)
			}
		case (a.Status == AgentIdle || a.Status == AgentDead) && (a.Hook != "" || a.Role == schemas.RoleMayor) && !a.NextAttemptAt.After(now):
			due = append(due, a)
		}
	}
	// Dispatches run on their own (a container may take minutes to clone),
	// so a slow one never holds up liveness; one at a time per agent.
	for _, a := range due {
		key := schemas.Key(a.TownID, a.AgentID)
		if _, busy := c.dispatching.LoadOrStore(key, true); busy {
			continue
		}
		c.wg.Go(func() {
			defer c.dispatching.Delete(key)
			err := c.dispatch(ctx, a.TownID, a.AgentID)
			if err != nil && !errors.Is(err, schemas.ErrConflict) && !errors.Is(err, schemas.ErrUnavailable) {
				c.log.Warn("patrol dispatch", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyErr, err)
			}
		})
	}
}

// markDead ends a run that missed its heartbeats: the agent is dead, the
// work on its hook goes back to be dispatched again (with a new run id),
// and …events says so.
func (c *Coordinator) markDead(ctx context.Context, a Agent, seen time.Time) {
	now := c.now()
	run := a.RunID
	missed := int(now.Sub(seen) / c.cfg.HeartbeatInterval)
	_, err := c.endRun(ctx, a.TownID, a.AgentID, run, endSilent, fmt.Sprintf("no heartbeat for %d intervals", missed), nil)
	if errors.Is(err, errStaleRun) {
		return
	}
	if err != nil {
		c.log.Error("marking agent dead", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyErr, err)
		return
	}
	c.metrics.agentDead()
	c.log.Warn("agent dead: missed heartbeats", KeyTown, a.TownID, KeyAgent, a.AgentID, KeyRun, run, "lastSeen", seen)
	t, _ := schemas.ForTown(a.TownID)
	c.publishEvent(t, schemas.EventAgentDead, a.AgentID, map[string]any{"runId": run, "lastSeenAt": seen.UTC(), "hook": a.Hook})
	// The container may still be there with a hung agent: stop it.
	c.wg.Go(func() { c.stopRun(ctx, a.TownID, a.AgentID, run, "declared dead: missed heartbeats") })
}

// crashLoopWindow is how far back failures count.
const crashLoopWindow = 30 * time.Minute

// recentFailures keeps the failures inside the crash-loop window.
func recentFailures(fs []time.Time, now time.Time) []time.Time {
	out := fs[:0]
	for _, f := range fs {
		if now.Sub(f) <= crashLoopWindow {
			out = append(out, f)
		}
	}
	return out
}
