package coordinator

import (
	"context"
	"fmt"
	"sort"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nuid"
)

// polecatNames is the name pool new polecats are named from.
var polecatNames = []string{"toast", "nux", "slit", "capable", "furiosa", "dag", "ace", "rictus", "cheedo", "angharad"}

// The mayor's agent id and the pseudo-rig it belongs to.
const (
	MayorID  = "mayor"
	MayorRig = "town"
)

// createTown records a town and its owner (written into its tokens).
func (c *Coordinator) createTown(ctx context.Context, req schemas.TownCreate) (Town, error) {
	t := Town{TownID: req.TownID, UserID: req.UserID, CreatedAt: c.now()}
	if t.UserID == "" {
		t.UserID = t.TownID
	}
	if err := c.st.towns.Create(ctx, t.TownID, t); err != nil {
		if errors.Is(err, kvstore.ErrKeyExists) {
			return Town{}, schemas.NewError(schemas.CodeConflict, "town %s already exists", t.TownID)
		}
		return Town{}, err
	}
	if _, err := c.tokens.update(ctx, t.TownID, func(s *townTokens) { s.UserID, s.Deleted = t.UserID, false }); err != nil {
		return Town{}, err
	}
	// One mayor per town. It belongs to the town's pseudo-rig MayorRig and
	// is kept running by patrol.
	mayor := newAgent(t.TownID, MayorID, MayorRig, schemas.RoleMayor)
	mayor.UpdatedAt = t.CreatedAt
	if err := c.st.agents.Create(ctx, schemas.Key(t.TownID, MayorID), mayor); err != nil && !errors.Is(err, kvstore.ErrKeyExists) {
		return Town{}, err
	}
	c.log.Info("town created", KeyTown, t.TownID, "owner", t.UserID)
	return t, nil
}

// requireTown returns the town or not_found.
func (c *Coordinator) requireTown(townID string) (Town, error) {
	ctx, cancel := context.WithTimeout(c.runCtx, c.cfg.RequestTimeout)
	defer cancel()
	t, ok, err := c.st.towns.Fetch(ctx, townID)
	if err != nil {
		return Town{}, err
	}
	if !ok {
		return Town{}, schemas.NewError(schemas.CodeNotFound, "no town %s", townID)
	}
	return t, nil
}

// addRig records a git repository of a town.
func (c *Coordinator) addRig(ctx context.Context, req schemas.RigAdd) (Rig, error) {
	if _, err := c.requireTown(req.TownID); err != nil {
		return Rig{}, err
	}
	r := Rig{TownID: req.TownID, RigID: req.RigID, GitURL: req.GitURL, DefaultBranch: req.DefaultBranch, CreatedAt: c.now()}
	if r.DefaultBranch == "" {
		r.DefaultBranch = "main"
	}
	if err := c.st.rigs.Create(ctx, schemas.Key(r.TownID, r.RigID), r); err != nil {
		if errors.Is(err, kvstore.ErrKeyExists) {
			return Rig{}, schemas.NewError(schemas.CodeConflict, "rig %s already exists in town %s", r.RigID, r.TownID)
		}
		return Rig{}, err
	}
	c.log.Info("rig added", KeyTown, r.TownID, "rig", r.RigID)
	return r, nil
}

// createBead records a new bead, open, in one write: with sets the fields
// BeadCreate does not carry before it is written, so no reader (and no
// crash) ever sees it half made.
func (c *Coordinator) createBead(ctx context.Context, req schemas.BeadCreate, with ...func(*Bead)) (Bead, error) {
	if _, err := c.requireTown(req.TownID); err != nil {
		return Bead{}, err
	}
	if req.RigID != "" {
		if _, ok, err := c.st.rigs.Fetch(ctx, schemas.Key(req.TownID, req.RigID)); err != nil {
			return Bead{}, err
		} else if !ok {
			return Bead{}, schemas.NewError(schemas.CodeNotFound, "no rig %s in town %s", req.RigID, req.TownID)
		}
	}
	typ := req.Type
	if typ == "" {
		typ = BeadIssue
	}
	switch typ {
	case BeadIssue, BeadMessage, BeadMergeRequest, BeadConvoy, BeadEscalation:
	default:
		return Bead{}, schemas.NewError(schemas.CodeInvalidArgument, "bead type %q is not issue, message, merge_request, convoy or escalation", typ)
	}
	id := req.BeadID
	if id == "" {
		id = "b-" + nuid.Next()
	}
	now := c.now()
	b := Bead{TownID: req.TownID, BeadID: id, Type: typ, Status: BeadOpen, RigID: req.RigID, Title: req.Title, Body: req.Body, CreatedAt: now, UpdatedAt: now}
	for _, f := range with {
		f(&b)
	}
	release, err := c.admitBead(b)
	if err != nil {
		return Bead{}, err
	}
	defer release()
	if err := c.st.beads.Create(ctx, schemas.Key(b.TownID, b.BeadID), b); err != nil {
		if errors.Is(err, kvstore.ErrKeyExists) {
			return Bead{}, schemas.NewError(schemas.CodeConflict, "bead %s already exists", id)
		}
		return Bead{}, err
	}
	return b, nil
}

// sling hooks a bead to a polecat (the one named, an idle one of the rig,
// or a new one from the name pool) and dispatches it. A failed dispatch is
// reported in the result; patrol tries again after the cooldown.
func (c *Coordinator) sling(ctx context.Context, req schemas.Sling) (schemas.SlingResult, error) {
	res := schemas.SlingResult{TownID: req.TownID, BeadID: req.BeadID}
	if _, err := c.requireTown(req.TownID); err != nil {
		return res, err
	}
	bead, ok, err := c.st.beads.Fetch(ctx, schemas.Key(req.TownID, req.BeadID))
	if err != nil {
		return res, err
	}
	if !ok {
		return res, schemas.NewError(schemas.CodeNotFound, "no bead %s in town %s", req.BeadID, req.TownID)
	}
	rigID := req.RigID
	if rigID == "" {
		rigID = bead.RigID
	}
	if rigID == "" {
		return res, schemas.NewError(schemas.CodeInvalidArgument, "bead %s names no rig; give one", req.BeadID)
	}
	if _, ok, err := c.st.rigs.Fetch(ctx, schemas.Key(req.TownID, rigID)); err != nil {
		return res, err
	} else if !ok {
		return res, schemas.NewError(schemas.CodeNotFound, "no rig %s in town %s", rigID, req.TownID)
	}
	agentID, release, err := c.hookPolecat(ctx, req.TownID, rigID, req.AgentID, req.BeadID)
	if err != nil {
		return res, err
	}
	defer release()
	res.AgentID = agentID
	err = c.dispatch(ctx, req.TownID, agentID)
	if errors.Is(err, schemas.ErrConflict) {
		// Refused before the container was asked: this coordinator's
		// patrol leaves the polecat to the sling (hookPolecat claimed
		// it), another's may have dispatched it first. The store says,
		// not the view, which may be a write behind.
		if a, ok, rerr := c.st.agents.Read(ctx, schemas.Key(req.TownID, agentID)); rerr == nil && ok && a.running() && a.Hook == req.BeadID {
			err = nil
		}
	}
	if err != nil {
		res.Error = err.Error()
	} else {
		res.Dispatched = true
	}
	return res, nil
}

// hookPolecat hooks the bead to a polecat (the named one, or any free one
// of the rig) with hook, so two slings never share a bead or a polecat;
// the loser's polecat is unhooked again (hook's failure rule).
//
// The polecat's dispatch is claimed (c.dispatching) before its hook is
// written, and held until the caller calls release: the sling dispatches
// it itself and reports how that went, so this coordinator's patrol must
// not dispatch it meanwhile (between the agent's write and the bead's, a
// patrol round sees a due polecat). A polecat already being dispatched is
// busy. On an error nothing is held.
func (c *Coordinator) hookPolecat(ctx context.Context, townID, rigID, agentID, beadID string) (hooked string, release func(), err error) {
	if b, _ := c.st.beads.Get(schemas.Key(townID, beadID)); b.Final() || b.Assignee != "" {
		return "", nil, schemas.NewError(schemas.CodeConflict, "bead %s is %s and hooked to %q", beadID, b.Status, b.Assignee)
	}
	// hookOne may try several polecats, and a compare-and-set may apply
	// the hook more than once: the claim follows the polecat tried (all
	// in this goroutine).
	claimed := ""
	release = func() {
		if claimed != "" {
			c.dispatching.Delete(claimed)
			claimed = ""
		}
	}
	claimThen := func(hook func(*Agent) error) func(*Agent) error {
		return func(a *Agent) error {
			if key := schemas.Key(townID, a.AgentID); claimed != key {
				release()
				if _, busy := c.dispatching.LoadOrStore(key, true); busy {
					return schemas.NewError(schemas.CodeConflict, "%s %s is being dispatched", a.Role, a.AgentID)
				}
				claimed = key
			}
			return hook(a)
		}
	}
	hooked, err = c.hook(ctx, townID, beadID, func(hook func(*Agent) error) (string, error) {
		if agentID != "" {
			return agentID, c.hookNamed(ctx, townID, rigID, agentID, claimThen(hook))
		}
		return c.hookAny(ctx, townID, rigID, claimThen(hook))
	}, func(b *Bead) error { b.RigID = rigID; return nil })
	if err != nil {
		// Patrol's repair finishes a hook whose bead write failed: the
		// sling is reported failed all the same.
		release()
		return "", nil, err
	}
	return hooked, release, nil
}

// hookNamed hooks a named polecat, creating it if new.
func (c *Coordinator) hookNamed(ctx context.Context, townID, rigID, agentID string, hook func(*Agent) error) error {
	key := schemas.Key(townID, agentID)
	// The role is checked on the value read from the store, not the view:
	// another coordinator may have just made the agent.
	_, err := c.st.agents.Upsert(ctx, key, func(a *Agent) error {
		if a.AgentID == "" {
			*a = newAgent(townID, agentID, rigID, schemas.RolePolecat)
		} else if a.Role != schemas.RolePolecat || a.RigID != rigID {
			return schemas.NewError(schemas.CodeConflict, "agent %s is a %s of rig %s, not a polecat of %s", agentID, a.Role, a.RigID, rigID)
		}
		return hook(a)
	})
	return err
}

// hookAny hooks an idle polecat of the rig, or a new one from the pool.
func (c *Coordinator) hookAny(ctx context.Context, townID, rigID string, hook func(*Agent) error) (string, error) {
	idle := c.st.agents.List(func(_ string, a Agent) bool {
		return a.TownID == townID && a.RigID == rigID && a.Role == schemas.RolePolecat && a.free()
	})
	sort.Slice(idle, func(i, j int) bool { return idle[i].AgentID < idle[j].AgentID })
	for _, a := range idle {
		if _, err := c.st.agents.Update(ctx, schemas.Key(townID, a.AgentID), hook); err == nil {
			return a.AgentID, nil
		} else if !errors.Is(err, schemas.ErrConflict) {
			return "", err
		}
	}
	for i := 0; i < 1000; i++ {
		name := polecatNames[i%len(polecatNames)]
		if i >= len(polecatNames) {
			name = fmt.Sprintf("%s-%d", name, i/len(polecatNames)+1)
		}
		a := newAgent(townID, name, rigID, schemas.RolePolecat)
		if err := hook(&a); errors.Is(err, schemas.ErrConflict) {
			continue // a new agent is free: the name is busy (hookPolecat's claim)
		} else if err != nil {
			return "", err
		}
		err := c.st.agents.Create(ctx, schemas.Key(townID, name), a)
		if err == nil {
			c.log.Info("polecat created", KeyTown, townID, KeyAgent, name, "rig", rigID)
			return name, nil
		}
		if !errors.Is(err, kvstore.ErrKeyExists) {
			return "", err
		}
	}
	return "", schemas.NewError(schemas.CodeUnavailable, "the polecat name pool of town %s is exhausted", townID)
}

// TownStatus is what `gastown status` shows of a town.
type TownStatus struct {
	Town   Town    `json:"town"`
	Rigs   []Rig   `json:"rigs"`
	Agents []Agent `json:"agents"`
	Beads  []Bead  `json:"beads"`
	// Summary counts them and says whether the container is connected.
	Summary schemas.TownSummary `json:"summary"`
	// Convoys are the town's convoys with their progress.
	Convoys []schemas.ConvoyStatus `json:"convoys"`
}

// townStatus lists a town's rigs, agents and beads.
func (c *Coordinator) townStatus(townID string) (TownStatus, error) {
	t, err := c.requireTown(townID)
	if err != nil {
		return TownStatus{}, err
	}
	st := TownStatus{
		Town:   t,
		Rigs:   c.st.rigs.List(func(_ string, r Rig) bool { return r.TownID == townID }),
		Agents: c.st.agents.List(func(_ string, a Agent) bool { return a.TownID == townID }),
		Beads:  c.st.beads.List(func(_ string, b Bead) bool { return b.TownID == townID }),
	}
	sort.Slice(st.Rigs, func(i, j int) bool { return st.Rigs[i].RigID < st.Rigs[j].RigID })
	sort.Slice(st.Agents, func(i, j int) bool { return st.Agents[i].AgentID < st.Agents[j].AgentID })
	sort.Slice(st.Beads, func(i, j int) bool { return st.Beads[i].CreatedAt.Before(st.Beads[j].CreatedAt) })
	st.Summary, st.Convoys = c.townSummary(t), c.convoysOf(townID)
	return st, nil
}
