package coordinator

import (
	"context"
	"fmt"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// handleHeartbeat takes a container's heartbeat: lines naming each agent's
// current run are kept (stored as the town's last heartbeat, which every
// coordinator's liveness view follows); lines and exits naming an older run
// are dropped and logged, so a late message never touches a newer run.
func (c *Coordinator) handleHeartbeat(m *nats.Msg) {
	townID, _, err := schemas.ParseTownSubject(m.Subject)
	if err != nil {
		return
	}
	var hb schemas.Heartbeat
	if err := schemas.Decode(m.Data, &hb); err != nil {
		c.metrics.heartbeatMalformed()
		c.log.Warn("malformed heartbeat dropped", KeyTown, townID, KeyErr, err)
		return
	}
	if hb.TownID != townID {
		c.metrics.heartbeatOtherTown()
		c.log.Warn("heartbeat naming another town dropped", KeyTown, townID, "claimed", hb.TownID)
		return
	}
	heard := c.noContainer.stamp()
	c.noContainer.remove(townID, heard) // its container is back: warn again if it goes
	c.metrics.heartbeat()
	ctx, cancel := context.WithTimeout(c.runCtx, c.cfg.RequestTimeout)
	defer cancel()
	rec := heartbeatRecord{TownID: townID, ContainerID: hb.ContainerID, ReceivedAt: c.now()}
	for _, line := range hb.Agents {
		a, ok := c.st.agents.Get(schemas.Key(townID, line.AgentID))
		if !ok || a.RunID != line.RunID {
			// Normal: a heartbeat sent as the run ended, or before a restart.
			c.metrics.heartbeatStaleLine()
			c.log.Debug("stale heartbeat line dropped", KeyTown, townID, KeyAgent, line.AgentID, KeyRun, line.RunID)
			continue
		}
		rec.Agents = append(rec.Agents, line)
	}
	for _, e := range hb.Exits {
		if err := c.recordExit(ctx, townID, e); err != nil && !errors.Is(err, errStaleRun) {
			c.log.Warn("recording an agent exit", KeyTown, townID, KeyAgent, e.AgentID, KeyErr, err)
		}
	}
	_, wasConnected := c.containerSeen(townID)
	if err := c.st.heartbeats.Put(ctx, townID, rec); err != nil {
		c.log.Warn("storing heartbeat", KeyTown, townID, KeyErr, err)
	}
	if !wasConnected {
		c.containerArrived(townID, heard) // its first heartbeat after none
	}
}

// recordExit ends the agent's current run if the exit names it: the agent
// is idle again and, if it failed, the failure is counted and its work
// waits the cooldown before it is dispatched again. An exit naming another
// run is errStaleRun and changes nothing.
func (c *Coordinator) recordExit(ctx context.Context, townID string, e schemas.AgentExit) error {
	why, detail := endExited, ""
	if e.ExitCode != 0 {
		why, detail = endCrashed, fmt.Sprintf("exited with code %d", e.ExitCode)
	}
	_, err := c.endRun(ctx, townID, e.AgentID, e.RunID, why, detail, nil)
	if errors.Is(err, errStaleRun) {
		c.log.Info("stale exit dropped", KeyTown, townID, KeyAgent, e.AgentID, KeyRun, e.RunID)
		return err
	}
	if err == nil {
		c.log.Info("agent exited", KeyTown, townID, KeyAgent, e.AgentID, KeyRun, e.RunID, "exitCode", e.ExitCode)
	}
	return err
}
