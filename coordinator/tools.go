package coordinator

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
)

// tool makes an rpcMethod that decodes and validates a body of type R.
// Who may call it is schemas.ToolRoles's.
func tool[R validator](h func(ctx context.Context, caller Caller, req R) (any, error)) rpcMethod {
	return rpcMethod{h: func(ctx context.Context, caller Caller, body json.RawMessage) (any, error) {
		var req R
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, schemas.NewError(schemas.CodeInvalidArgument, "body is not the JSON object this method takes")
		}
		if err := req.Validate(); err != nil {
			return nil, schemas.NewError(schemas.CodeInvalidArgument, "%s", err.Error())
		}
		return h(ctx, caller, req)
	}}
}

// noBody is the body of methods that take none.
type noBody struct{}

func (noBody) Validate() error { return nil }

// rpcMethods is the table of tool methods (PROTOCOL.md, RPC).
func (c *Coordinator) rpcMethods() map[string]rpcMethod {
	return map[string]rpcMethod{
		// ping is a no-op: it proves the token (and identity, if given) is
		// accepted, and measures the middleware.
		schemas.ToolPing: {container: true, inline: true, h: func(_ context.Context, caller Caller, _ json.RawMessage) (any, error) {
			return schemas.PingResult{TownID: caller.TownID, AgentID: caller.AgentID}, nil
		}},
		schemas.ToolPrime:      tool(func(ctx context.Context, caller Caller, _ noBody) (any, error) { return c.prime(ctx, caller) }),
		schemas.ToolBeadGet:    tool(c.toolBeadGet),
		schemas.ToolBeadClose:  tool(c.toolBeadClose),
		schemas.ToolDone:       tool(c.toolDone),
		schemas.ToolMailSend:   tool(c.toolMailSend),
		schemas.ToolMailCheck:  tool(c.toolMailCheck),
		schemas.ToolEscalate:   tool(c.toolEscalate),
		schemas.ToolCheckpoint: tool(c.toolCheckpoint),
		schemas.ToolRigsList: tool(func(_ context.Context, caller Caller, _ noBody) (any, error) {
			return c.rigsOfUser(caller.UserID), nil
		}),
		schemas.ToolBeadsList: tool(func(_ context.Context, caller Caller, r schemas.BeadsList) (any, error) {
			return c.listBeads(caller.TownID, r), nil
		}),
		schemas.ToolAgentsList: tool(func(_ context.Context, caller Caller, _ noBody) (any, error) {
			st, err := c.townStatus(caller.TownID)
			return st.Agents, err
		}),
		schemas.ToolSling: tool(func(ctx context.Context, caller Caller, r schemas.Sling) (any, error) {
			if r.TownID == "" {
				r.TownID = caller.TownID
			}
			if r.TownID != caller.TownID {
				return nil, schemas.NewError(schemas.CodePermissionDenied, "sling names another town")
			}
			return c.sling(ctx, r)
		}),
		schemas.ToolBeadUpdate:   tool(c.toolBeadUpdate),
		schemas.ToolConvoyCreate: tool(c.toolConvoyCreate),
		schemas.ToolConvoyStatus: tool(func(ctx context.Context, caller Caller, r schemas.BeadRef) (any, error) {
			return c.convoyStatus(ctx, caller.TownID, r.BeadID)
		}),
		schemas.ToolReviewComplete: tool(c.toolReviewComplete),
		schemas.ToolTriageResolve:  tool(c.toolTriageResolve),
	}
}

// selfOnly refuses a body field that names an agent other than the caller.
func selfOnly(caller Caller, named string) error {
	if named != "" && named != caller.AgentID {
		return schemas.NewError(schemas.CodePermissionDenied, "the body names agent %s, but the caller is %s", named, caller.AgentID)
	}
	return nil
}

// Prime is what an agent learns when it starts.
type Prime struct {
	AgentID      string `json:"agentId"`
	RigID        string `json:"rigId"`
	Role         string `json:"role"`
	RunID        string `json:"runId,omitempty"`
	Hook         *Bead  `json:"hook,omitempty"`
	Instructions string `json:"instructions"`
}

var roleInstructions = map[string]string{
	schemas.RoleMayor:    "You are the mayor: plan the town's work, create convoys, and sling beads to polecats.",
	schemas.RolePolecat:  "You are a polecat: do the work on your hook in your workspace, commit it on your branch, then call done.",
	schemas.RoleRefinery: "You are the refinery: review the merge request on your hook, merge it into the default branch, then call review.complete.",
	schemas.RoleTriage:   "You are a triage agent: look at the crash-looping agent on your hook, then call triage.resolve with restart or fail.",
}

// prime reads the agent and its hooked bead from the store, not the view:
// an agent primes as its run starts, right after the coordinator that
// dispatched it wrote both, and this one's watch may not have them yet.
func (c *Coordinator) prime(ctx context.Context, caller Caller) (Prime, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	a, ok, err := c.st.agents.Read(ctx, schemas.Key(caller.TownID, caller.AgentID))
	if err != nil {
		return Prime{}, err
	}
	if !ok {
		return Prime{}, schemas.NewError(schemas.CodeNotFound, "no agent %s in town %s", caller.AgentID, caller.TownID)
	}
	p := Prime{AgentID: a.AgentID, RigID: a.RigID, Role: a.Role, RunID: a.RunID, Instructions: roleInstructions[a.Role]}
	if a.Hook != "" {
		b, ok, err := c.st.beads.Read(ctx, schemas.Key(caller.TownID, a.Hook))
		if err != nil {
			return Prime{}, err
		}
		if ok {
			p.Hook = &b
		}
	}
	return p, nil
}

// bead returns a bead of the caller's town, or not_found.
func (c *Coordinator) bead(townID, beadID string) (Bead, error) {
	b, ok := c.st.beads.Get(schemas.Key(townID, beadID))
	if !ok {
		return Bead{}, schemas.NewError(schemas.CodeNotFound, "no bead %s", beadID)
	}
	return b, nil
}

func (c *Coordinator) toolBeadGet(ctx context.Context, caller Caller, r schemas.BeadRef) (any, error) {
	return c.lookupBead(ctx, caller.TownID, r.BeadID)
}

// toolBeadClose closes a bead: the caller's hooked bead, or any (mayor).
func (c *Coordinator) toolBeadClose(ctx context.Context, caller Caller, r schemas.BeadRef) (any, error) {
	b, err := c.lookupBead(ctx, caller.TownID, r.BeadID)
	if err != nil {
		return nil, err
	}
	if caller.Role != schemas.RoleMayor && b.Assignee != caller.AgentID {
		return nil, schemas.NewError(schemas.CodePermissionDenied, "bead %s is not on your hook", r.BeadID)
	}
	return c.closeBead(ctx, caller.TownID, r.BeadID)
}

func (c *Coordinator) toolMailSend(ctx context.Context, caller Caller, r schemas.MailSend) (any, error) {
	if err := selfOnly(caller, r.From); err != nil {
		return nil, err
	}
	if _, err := fetch(ctx, c, c.st.agents, schemas.Key(caller.TownID, r.To), "no agent %s", r.To); err != nil {
		return nil, err
	}
	return c.createBead(ctx, schemas.BeadCreate{TownID: caller.TownID, Type: BeadMessage, Title: r.Subject, Body: r.Body}, func(m *Bead) {
		m.From, m.Assignee = caller.AgentID, r.To
	})
}

// toolMailCheck returns the caller's unread mail and marks it read.
func (c *Coordinator) toolMailCheck(ctx context.Context, caller Caller, _ noBody) (any, error) {
	mail := c.st.beads.List(func(_ string, b Bead) bool {
		return b.TownID == caller.TownID && b.Type == BeadMessage && b.Assignee == caller.AgentID && b.Status == BeadOpen
	})
	sort.Slice(mail, func(i, j int) bool { return mail[i].CreatedAt.Before(mail[j].CreatedAt) })
	for _, m := range mail {
		c.setBeadStatus(ctx, caller.TownID, m.BeadID, BeadClosed, BeadOpen)
	}
	return mail, nil
}

func (c *Coordinator) toolEscalate(ctx context.Context, caller Caller, r schemas.Escalate) (any, error) {
	return c.escalate(ctx, caller.TownID, caller.AgentID, r.BeadID, r.Title, r.Body)
}

// escalate opens an escalation bead for the mayor.
func (c *Coordinator) escalate(ctx context.Context, townID, from, source, title, body string) (Bead, error) {
	return c.createBead(ctx, schemas.BeadCreate{TownID: townID, Type: BeadEscalation, Title: title, Body: body}, func(e *Bead) {
		e.From, e.SourceBead, e.CreatedBy = from, source, from
	})
}

func (c *Coordinator) toolCheckpoint(ctx context.Context, caller Caller, r schemas.Checkpoint) (any, error) {
	if err := selfOnly(caller, r.AgentID); err != nil {
		return nil, err
	}
	if err := c.admitNote(caller.TownID, r.Note); err != nil {
		return nil, err
	}
	a, err := c.st.agents.Update(ctx, schemas.Key(caller.TownID, caller.AgentID), func(a *Agent) error {
		a.Checkpoint, a.UpdatedAt = r.Note, c.now()
		return nil
	})
	return map[string]string{"agentId": a.AgentID, "checkpoint": a.Checkpoint}, err
}

// rigsOfUser lists the rigs of every town the user owns.
func (c *Coordinator) rigsOfUser(userID string) []Rig {
	rigs := c.st.rigs.List(func(_ string, r Rig) bool {
		t, ok := c.st.towns.Get(r.TownID)
		return ok && t.UserID == userID
	})
	sort.Slice(rigs, func(i, j int) bool {
		return schemas.Key(rigs[i].TownID, rigs[i].RigID) < schemas.Key(rigs[j].TownID, rigs[j].RigID)
	})
	return rigs
}

func (c *Coordinator) listBeads(townID string, r schemas.BeadsList) []Bead {
	beads := c.st.beads.List(func(_ string, b Bead) bool {
		return b.TownID == townID && (r.Status == "" || b.Status == BeadStatus(r.Status)) && (r.Type == "" || b.Type == r.Type)
	})
	sort.Slice(beads, func(i, j int) bool { return beads[i].CreatedAt.Before(beads[j].CreatedAt) })
	return beads
}

func (c *Coordinator) toolBeadUpdate(ctx context.Context, caller Caller, r schemas.BeadUpdate) (any, error) {
	status := BeadStatus(r.Status)
	if status == BeadClosed {
		return c.closeBead(ctx, caller.TownID, r.BeadID)
	}
	if status != "" && !status.valid() {
		return nil, schemas.NewError(schemas.CodeInvalidArgument, "status %q is not a bead status", r.Status)
	}
	release, err := c.admitBeadUpdate(ctx, caller.TownID, r)
	if err != nil {
		return nil, err
	}
	defer release()
	b, err := c.st.beads.Update(ctx, schemas.Key(caller.TownID, r.BeadID), func(b *Bead) error {
		if r.Title != "" {
			b.Title = r.Title
		}
		if r.Body != "" {
			b.Body = r.Body
		}
		b.UpdatedAt = c.now()
		if status != "" {
			return b.move(status, b.UpdatedAt)
		}
		return nil
	})
	if err != nil {
		return nil, notFoundAs(err, "no bead %s", r.BeadID)
	}
	return b, nil
}

// notFoundAs is where a handler answers for a missing key: the store's
// kvstore.ErrKeyNotFound becomes not_found (schemas.ErrNotFound), in the
// handler's words; any other error is returned as is.
func notFoundAs(err error, format string, args ...any) error {
	if errors.Is(err, kvstore.ErrKeyNotFound) {
		return schemas.NewError(schemas.CodeNotFound, format, args...)
	}
	return err
}
