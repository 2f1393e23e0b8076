package coordinator

import (
	"context"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// adminVerbHandlers are the admin methods that list, show and remove what
// town.create, rig.add, bead.create and convoy.create make.
func (c *Coordinator) adminVerbHandlers() map[string]nats.MsgHandler {
	return map[string]nats.MsgHandler{
		schemas.AdminTownList: adminMethod(c, func(context.Context, schemas.TownList) (any, error) {
			towns := c.st.towns.List(nil)
			sort.Slice(towns, func(i, j int) bool { return towns[i].TownID < towns[j].TownID })
			out := make([]schemas.TownSummary, 0, len(towns))
			for _, t := range towns {
				out = append(out, c.townSummary(t))
			}
			return out, nil
		}),
		schemas.AdminTownShow: adminMethod(c, func(_ context.Context, r schemas.TownRequest) (any, error) {
			t, err := c.requireTown(r.TownID)
			if err != nil {
				return nil, err
			}
			return TownShow{Town: c.townSummary(t), Rigs: c.rigsOf(r.TownID)}, nil
		}),
		schemas.AdminTownDelete: adminMethod(c, c.deleteTown),
		schemas.AdminRigList: adminMethod(c, func(_ context.Context, r schemas.TownRequest) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			return c.rigsOf(r.TownID), nil
		}),
		schemas.AdminRigRemove: adminMethod(c, c.removeRig),
		schemas.AdminBeadList: adminMethod(c, func(_ context.Context, r schemas.BeadList) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			beads := c.listBeads(r.TownID, schemas.BeadsList{Status: r.Status, Type: r.Type})
			if r.RigID != "" {
				beads = filter(beads, func(b Bead) bool { return b.RigID == r.RigID })
			}
			return beads, nil
		}),
		schemas.AdminBeadShow: adminMethod(c, func(ctx context.Context, r schemas.TownBeadRef) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			return c.lookupBead(ctx, r.TownID, r.BeadID)
		}),
		schemas.AdminConvoyList: adminMethod(c, func(_ context.Context, r schemas.TownRequest) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			return c.convoysOf(r.TownID), nil
		}),
		schemas.AdminConvoyShow: adminMethod(c, func(ctx context.Context, r schemas.ConvoyRef) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			return c.convoyStatus(ctx, r.TownID, r.ConvoyID)
		}),
	}
}

// TownShow is what town.show answers: the town's summary and its rigs.
type TownShow struct {
	Town schemas.TownSummary `json:"town"`
	Rigs []Rig               `json:"rigs"`
}

func filter[T any](in []T, keep func(T) bool) []T {
	out := in[:0]
	for _, v := range in {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

// rigsOf lists a town's rigs by id.
func (c *Coordinator) rigsOf(townID string) []Rig {
	rigs := c.st.rigs.List(func(_ string, r Rig) bool { return r.TownID == townID })
	sort.Slice(rigs, func(i, j int) bool { return rigs[i].RigID < rigs[j].RigID })
	return rigs
}

// convoysOf lists a town's convoys with their progress, oldest first.
func (c *Coordinator) convoysOf(townID string) []schemas.ConvoyStatus {
	convoys := c.listBeads(townID, schemas.BeadsList{Type: BeadConvoy})
	out := make([]schemas.ConvoyStatus, 0, len(convoys))
	for _, cv := range convoys {
		if st, err := c.convoyStatus(c.runCtx, townID, cv.BeadID); err == nil { // listed: in the view
			out = append(out, st)
		}
	}
	return out
}

// containerSeen is when the town's container was last heard of, and
// whether that is recent enough (three heartbeat intervals) to call it
// connected.
func (c *Coordinator) containerSeen(townID string) (last heartbeatRecord, connected bool) {
	hb, ok := c.st.heartbeats.Get(townID)
	if !ok {
		return heartbeatRecord{}, false
	}
	return hb, c.now().Sub(hb.ReceivedAt) <= c.deadAfter()
}

// townSummary counts a town's rigs, agents and beads.
func (c *Coordinator) townSummary(t Town) schemas.TownSummary {
	s := schemas.TownSummary{TownID: t.TownID, UserID: t.UserID, CreatedAt: t.CreatedAt, Beads: map[string]int{}}
	hb, connected := c.containerSeen(t.TownID)
	s.ContainerConnected, s.LastHeartbeatAt = connected, hb.ReceivedAt
	s.Rigs = len(c.st.rigs.Keys(func(_ string, r Rig) bool { return r.TownID == t.TownID }))
	for _, a := range c.st.agents.List(func(_ string, a Agent) bool { return a.TownID == t.TownID }) {
		s.Agents++
		if a.Status == AgentWorking {
			s.WorkingAgents++
		}
	}
	for _, b := range c.st.beads.List(func(_ string, b Bead) bool { return b.TownID == t.TownID }) {
		s.Beads[b.Status.String()]++
	}
	return s
}

// workingAgents lists the agents of a town (of one rig when rigID is not
// empty) that have a run.
func (c *Coordinator) workingAgents(townID, rigID string) []Agent {
	working := c.st.agents.List(func(_ string, a Agent) bool {
		return a.TownID == townID && (rigID == "" || a.RigID == rigID) && a.Status == AgentWorking
	})
	sort.Slice(working, func(i, j int) bool { return working[i].AgentID < working[j].AgentID })
	return working
}

func agentIDs(agents []Agent) string {
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = a.AgentID
	}
	return strings.Join(ids, ", ")
}

// stopRuns asks the container to stop each agent's run, best effort.
func (c *Coordinator) stopRuns(ctx context.Context, agents []Agent, reason string) {
	for _, a := range agents {
		if a.RunID != "" {
			c.stopRun(ctx, a.TownID, a.AgentID, a.RunID, reason)
		}
	}
}

// deleteTown removes a town and every record of it: its beads, agents,
// rigs, last heartbeat and lease, then the town itself (last, so a delete
// cut short can be run again). Its tokens are revoked first, which closes
// every connection using one; the token state keeps only that revocation
// (a tombstone), since forgetting it would make the revoked tokens work
// again. Without force it is refused while the town's container is
// connected or an agent is working.
func (c *Coordinator) deleteTown(ctx context.Context, r schemas.TownDelete) (any, error) {
	if _, err := c.requireTown(r.TownID); err != nil {
		return nil, err
	}
	working := c.workingAgents(r.TownID, "")
	if !r.Force {
		if hb, connected := c.containerSeen(r.TownID); connected {
			return nil, errors.WithHint(schemas.NewError(schemas.CodeConflict,
				"town %s has a connected container (%s, last heartbeat %s)", r.TownID, hb.ContainerID, hb.ReceivedAt.UTC().Format("15:04:05")),
				"stop the container first, or delete with force (gastown town delete --force)")
		}
		if len(working) > 0 {
			return nil, schemas.NewError(schemas.CodeConflict,
				"town %s has working agents (%s); stop them first, or delete with force", r.TownID, agentIDs(working))
		}
	}
	c.stopRuns(ctx, working, "town deleted")
	rev, err := c.adminTokenRevoke(ctx, schemas.TownRequest{TownID: r.TownID})
	if err != nil {
		return nil, err
	}
	revoked := rev.(schemas.RevokeResult)
	res := schemas.TownDeleteResult{TownID: r.TownID, RevokedBefore: revoked.RevokedBefore, Closed: revoked.Closed, Deleted: map[string]int{}}
	of := func(key string) bool { return strings.HasPrefix(key, r.TownID+".") }
	del := func(name string, keys []string, d func(context.Context, string) error) error {
		for _, k := range keys {
			if err := d(ctx, k); err != nil {
				return err
			}
			res.Deleted[name]++
		}
		return nil
	}
	err = errors.CombineErrors(nil, del(schemas.BucketBeads, c.st.beads.Keys(func(k string, _ Bead) bool { return of(k) }), c.st.beads.Delete))
	if err == nil {
		err = del(schemas.BucketAgents, c.st.agents.Keys(func(k string, _ Agent) bool { return of(k) }), c.st.agents.Delete)
	}
	if err == nil {
		err = del(schemas.BucketRigs, c.st.rigs.Keys(func(k string, _ Rig) bool { return of(k) }), c.st.rigs.Delete)
	}
	if err == nil {
		err = del(schemas.BucketHeartbeats, c.st.heartbeats.Keys(func(k string, _ heartbeatRecord) bool { return k == r.TownID }), c.st.heartbeats.Delete)
	}
	if err == nil {
		err = c.leases.forget(ctx, r.TownID)
	}
	if err == nil {
		_, err = c.tokens.update(ctx, r.TownID, func(s *townTokens) {
			*s = townTokens{TownID: r.TownID, RevokedBefore: s.RevokedBefore, Deleted: true}
		})
	}
	if err == nil {
		err = del(schemas.BucketTowns, []string{r.TownID}, c.st.towns.Delete)
	}
	if err != nil {
		c.log.Error("deleting town", KeyTown, r.TownID, KeyErr, err)
		return nil, schemas.NewError(schemas.CodeUnavailable, "town %s is only partly deleted (its tokens are revoked); run the delete again", r.TownID)
	}
	c.idleMu.Lock()
	delete(c.idleUntil, r.TownID)
	c.idleMu.Unlock()
	c.log.Info("town deleted", KeyTown, r.TownID, "force", r.Force, "closed", res.Closed)
	return res, nil
}

// removeRig removes a rig and its agents. Without force it is refused
// while an agent of the rig is working or a bead of the rig is not final;
// with force the runs are stopped and those beads fail.
func (c *Coordinator) removeRig(ctx context.Context, r schemas.RigRemove) (any, error) {
	if _, err := c.requireTown(r.TownID); err != nil {
		return nil, err
	}
	if _, err := fetch(ctx, c, c.st.rigs, schemas.Key(r.TownID, r.RigID), "no rig %s in town %s", r.RigID, r.TownID); err != nil {
		return nil, err
	}
	working := c.workingAgents(r.TownID, r.RigID)
	live := c.st.beads.List(func(_ string, b Bead) bool { return b.TownID == r.TownID && b.RigID == r.RigID && !b.Final() })
	sort.Slice(live, func(i, j int) bool { return live[i].BeadID < live[j].BeadID })
	if !r.Force {
		if len(working) > 0 {
			return nil, schemas.NewError(schemas.CodeConflict,
				"rig %s has working agents (%s); wait for them, or remove with force", r.RigID, agentIDs(working))
		}
		if len(live) > 0 {
			ids := make([]string, len(live))
			for i, b := range live {
				ids[i] = b.BeadID
			}
			return nil, schemas.NewError(schemas.CodeConflict,
				"rig %s has beads that are not closed or failed (%s); close them, or remove with force (they fail)", r.RigID, strings.Join(ids, ", "))
		}
	}
	c.stopRuns(ctx, working, "rig removed")
	res := schemas.RigRemoveResult{TownID: r.TownID, RigID: r.RigID, Agents: []string{}}
	for _, b := range live {
		c.setBeadStatus(ctx, r.TownID, b.BeadID, BeadFailed)
		res.FailedBeads = append(res.FailedBeads, b.BeadID)
	}
	agents := c.st.agents.List(func(_ string, a Agent) bool { return a.TownID == r.TownID && a.RigID == r.RigID })
	sort.Slice(agents, func(i, j int) bool { return agents[i].AgentID < agents[j].AgentID })
	for _, a := range agents {
		if err := c.st.agents.Delete(ctx, schemas.Key(r.TownID, a.AgentID)); err != nil {
			return nil, err
		}
		res.Agents = append(res.Agents, a.AgentID)
	}
	if err := c.st.rigs.Delete(ctx, schemas.Key(r.TownID, r.RigID)); err != nil {
		return nil, err
	}
	c.log.Info("rig removed", KeyTown, r.TownID, "rig", r.RigID, "force", r.Force, KeyCount, len(res.Agents))
	return res, nil
}
