package coordinator

import (
	"context"
	"fmt"
	"sort"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// DoneResult names the merge request a polecat's done created.
type DoneResult struct {
	MergeRequest string `json:"mergeRequest"`
	SourceBead   string `json:"sourceBead"`
}

// toolDone: the polecat's work on its hooked bead is ready. A merge-request
// bead is created, the source bead goes to in_review, the polecat is
// unhooked, and the rig's refinery is dispatched to merge.
func (c *Coordinator) toolDone(ctx context.Context, caller Caller, r schemas.DoneRequest) (any, error) {
	if err := selfOnly(caller, r.AgentID); err != nil {
		return nil, err
	}
	a, _ := c.st.agents.Get(schemas.Key(caller.TownID, caller.AgentID))
	if err := currentRun(a, r.RunID); err != nil {
		return nil, err
	}
	if a.Hook == "" {
		return nil, schemas.NewError(schemas.CodeConflict, "nothing is on your hook")
	}
	src, err := c.lookupBead(ctx, caller.TownID, a.Hook)
	if err != nil {
		return nil, err
	}
	// A done whose reply was lost (the coordinator crashed after the merge
	// request was written) is sent again, maybe by the next run: it finds
	// the merge request already there and finishes the rest.
	mr, found := c.openMergeRequest(caller.TownID, src.BeadID)
	if src.Final() || src.Status == BeadInReview && !found {
		return nil, schemas.NewError(schemas.CodeConflict, "bead %s is %s", src.BeadID, src.Status)
	}
	// Four writes; after a crash between two, what finishes the step:
	// 1. the merge request: the run sends done again (its reply was lost)
	// and finds it; a run that ends first is dispatched again, its bead on
	// its hook, and does the same.
	if !found {
		var err error
		mr, err = c.createBead(ctx, schemas.BeadCreate{TownID: caller.TownID, Type: BeadMergeRequest, RigID: a.RigID,
			Title: fmt.Sprintf("Merge %s (%s)", r.Branch, src.Title), Body: r.Summary}, func(b *Bead) {
			b.SourceBead, b.Polecat, b.Branch, b.Summary, b.PRURL, b.CreatedBy = src.BeadID, caller.AgentID, r.Branch, r.Summary, r.PRURL, caller.AgentID
		})
		if err != nil {
			return nil, err
		}
	}
	// 2. the bead in review: repair rule 1 unhooks the polecat once its run
	// ends, and rule 5 feeds the merge request to the refinery.
	c.setBeadStatus(ctx, caller.TownID, src.BeadID, BeadInReview, BeadOpen, BeadInProgress)
	// 3. the polecat unhooked: repair rule 5 feeds the merge request.
	if _, err := c.endRun(ctx, caller.TownID, caller.AgentID, r.RunID, endDone, "", func(x *Agent) error {
		if x.Hook != src.BeadID {
			return errNoChange
		}
		x.Hook, x.Attempts = "", 0
		return nil
	}); err != nil && !errors.Is(err, errNoChange) {
		return nil, err
	}
	c.log.Info("polecat done; merge request created", KeyTown, caller.TownID, KeyAgent, caller.AgentID, KeyBead, src.BeadID, "mergeRequest", mr.BeadID)
	// 4. the review queue: a hook (its rule) and a dispatch (patrol's).
	c.feedRefinery(ctx, caller.TownID, a.RigID)
	return DoneResult{MergeRequest: mr.BeadID, SourceBead: src.BeadID}, nil
}

// openMergeRequest finds the merge request, not yet decided, that carries
// the work on bead src.
func (c *Coordinator) openMergeRequest(townID, src string) (Bead, bool) {
	mrs := c.st.beads.List(func(_ string, b Bead) bool {
		return b.TownID == townID && b.Type == BeadMergeRequest && b.SourceBead == src && !b.Final()
	})
	if len(mrs) == 0 {
		return Bead{}, false
	}
	return mrs[0], true
}

// currentRun refuses a completion from a run that is not the agent's
// current one (conflict); a request that names no run is let through.
func currentRun(a Agent, runID string) error {
	if runID == "" || runID == a.RunID {
		return nil
	}
	return schemas.NewError(schemas.CodeConflict, "run %s of %s is not its current run; its work went to another run", runID, a.AgentID)
}

// refineryID names the refinery of a rig (one per rig).
func refineryID(rigID string) string {
	id := rigID + "-refinery"
	if len(id) > schemas.MaxIDLen {
		id = id[len(id)-schemas.MaxIDLen:]
	}
	return id
}

// feedRefinery hooks the oldest waiting merge request of the rig to its
// refinery, if the refinery is free, and dispatches it: the review queue.
func (c *Coordinator) feedRefinery(ctx context.Context, townID, rigID string) {
	ref, ok := c.hookRefinery(ctx, townID, rigID)
	if !ok {
		return
	}
	// A crash here: patrol dispatches the hooked refinery.
	if err := c.dispatch(ctx, townID, ref); err != nil {
		c.log.Info("refinery dispatch deferred to patrol", KeyTown, townID, KeyAgent, ref, KeyErr, err)
	}
}

// hookRefinery hooks the oldest waiting merge request of the rig to the
// rig's refinery (made on first use) if it is free. It reports the
// refinery and whether it was left hooked.
func (c *Coordinator) hookRefinery(ctx context.Context, townID, rigID string) (string, bool) {
	queue := c.st.beads.List(func(_ string, b Bead) bool {
		return b.TownID == townID && b.RigID == rigID && b.Type == BeadMergeRequest && b.Status == BeadOpen && b.Assignee == ""
	})
	if len(queue) == 0 {
		return "", false
	}
	sort.Slice(queue, func(i, j int) bool { return queue[i].CreatedAt.Before(queue[j].CreatedAt) })
	ref := refineryID(rigID)
	hooked, err := c.hook(ctx, townID, queue[0].BeadID, func(hook func(*Agent) error) (string, error) {
		_, err := c.st.agents.Upsert(ctx, schemas.Key(townID, ref), func(a *Agent) error {
			if a.AgentID == "" {
				*a = newAgent(townID, ref, rigID, schemas.RoleRefinery)
			}
			return hook(a)
		})
		return ref, err
	}, func(b *Bead) error { return b.move(BeadInProgress, c.now()) })
	if err != nil && !errors.Is(err, schemas.ErrConflict) {
		c.log.Warn("hooking refinery", KeyTown, townID, KeyAgent, ref, KeyBead, queue[0].BeadID, KeyErr, err)
	}
	// On a conflict the refinery is busy (the queue waits) or the merge
	// request was taken; a failed bead write left it hooked (hook's rule).
	return ref, hooked != ""
}

// toolReviewComplete: the refinery's verdict. Merged closes the source
// bead (and moves its convoy); failed or conflict sends it back to work,
// and conflict also opens an escalation.
func (c *Coordinator) toolReviewComplete(ctx context.Context, caller Caller, r schemas.ReviewComplete) (any, error) {
	mr, err := c.lookupBead(ctx, caller.TownID, r.BeadID)
	if err != nil {
		return nil, err
	}
	if mr.Type != BeadMergeRequest || mr.Assignee != caller.AgentID {
		return nil, schemas.NewError(schemas.CodePermissionDenied, "merge request %s is not on your hook", r.BeadID)
	}
	a, _ := c.st.agents.Get(schemas.Key(caller.TownID, caller.AgentID))
	if err := currentRun(a, r.RunID); err != nil {
		return nil, err
	}
	if mr.Final() {
		return nil, schemas.NewError(schemas.CodeConflict, "merge request %s is already %s", r.BeadID, mr.Status)
	}
	final := BeadClosed
	if r.Outcome != schemas.ReviewMerged {
		final = BeadFailed
	}
	// After a crash between the writes, what finishes the step: the merge
	// request decided: repair rule 3 closes the source bead or sends it
	// back to work, rule 1 unhooks the refinery once its run ends, and
	// rule 5 feeds it the next merge request.
	if _, err := c.st.beads.Update(ctx, schemas.Key(caller.TownID, mr.BeadID), func(b *Bead) error {
		b.Summary = r.Note
		return b.move(final, c.now())
	}); err != nil {
		return nil, err
	}
	c.unhook(ctx, caller.TownID, caller.AgentID, mr.BeadID)
	if _, err := c.endRun(ctx, caller.TownID, caller.AgentID, r.RunID, endReviewed, "", nil); err != nil {
		c.log.Warn("idling refinery", KeyTown, caller.TownID, KeyErr, err)
	}
	// The refinery unhooked and idle: rules 3 and 5 still apply.
	var out any = map[string]string{"mergeRequest": mr.BeadID, "outcome": r.Outcome}
	if r.Outcome == schemas.ReviewMerged {
		// The source bead closed: rule 4 lands its convoy.
		if _, err := c.closeBead(ctx, caller.TownID, mr.SourceBead); err != nil {
			return nil, err
		}
	} else {
		c.backToWork(ctx, caller.TownID, mr)
		if r.Outcome == schemas.ReviewConflict {
			if _, err := c.escalate(ctx, caller.TownID, caller.AgentID, mr.SourceBead,
				"Merge conflict on "+mr.Branch, r.Note); err != nil {
				c.log.Warn("opening escalation", KeyTown, caller.TownID, KeyErr, err)
			}
		}
	}
	c.feedRefinery(ctx, caller.TownID, mr.RigID)
	return out, nil
}

// backToWork reopens a merge request's source bead and slings it again,
// to its polecat when that one is free.
func (c *Coordinator) backToWork(ctx context.Context, townID string, mr Bead) {
	if _, err := c.st.beads.Update(ctx, schemas.Key(townID, mr.SourceBead), func(b *Bead) error {
		if b.Final() {
			return errNoChange
		}
		b.Assignee = ""
		return b.move(BeadOpen, c.now())
	}); err != nil {
		if !errors.Is(err, errNoChange) {
			c.log.Warn("reopening bead", KeyTown, townID, KeyBead, mr.SourceBead, KeyErr, err)
		}
		return
	}
	// A crash here leaves the bead open and assigned to nobody: no repair
	// rule slings it; it waits for a sling by hand.
	res, err := c.sling(ctx, schemas.Sling{TownID: townID, BeadID: mr.SourceBead, RigID: mr.RigID, AgentID: mr.Polecat})
	if err != nil && errors.Is(err, schemas.ErrConflict) {
		res, err = c.sling(ctx, schemas.Sling{TownID: townID, BeadID: mr.SourceBead, RigID: mr.RigID})
	}
	if err != nil {
		c.log.Warn("sending bead back to work", KeyTown, townID, KeyBead, mr.SourceBead, KeyErr, err)
		return
	}
	c.log.Info("bead sent back to work", KeyTown, townID, KeyBead, mr.SourceBead, KeyAgent, res.AgentID)
}

// closeBead closes a bead and moves its convoy; a convoy whose every bead
// is closed lands.
func (c *Coordinator) closeBead(ctx context.Context, townID, beadID string) (Bead, error) {
	b, err := c.st.beads.Update(ctx, schemas.Key(townID, beadID), func(b *Bead) error {
		if b.Status == BeadClosed {
			return errNoChange
		}
		return b.move(BeadClosed, c.now())
	})
	if errors.Is(err, errNoChange) {
		return c.bead(townID, beadID)
	}
	if err != nil {
		return Bead{}, notFoundAs(err, "no bead %s", beadID)
	}
	t, _ := schemas.ForTown(townID)
	c.publishEvent(t, schemas.EventBeadClosed, beadID, map[string]any{"title": b.Title, "convoyId": b.ConvoyID})
	if b.ConvoyID != "" { // a crash before it lands: repair rule 4
		c.convoyProgress(ctx, townID, b.ConvoyID)
	}
	return b, nil
}

// convoyProgress lands the convoy when every bead it tracks is closed.
func (c *Coordinator) convoyProgress(ctx context.Context, townID, convoyID string) {
	st, err := c.convoyStatus(ctx, townID, convoyID)
	if err != nil || st.Closed < st.Tracked {
		return
	}
	_, err = c.st.beads.Update(ctx, schemas.Key(townID, convoyID), func(b *Bead) error {
		if b.Landed || b.Final() { // a convoy failed by hand stays failed
			return errNoChange
		}
		b.Landed = true
		return b.move(BeadClosed, c.now())
	})
	if errors.Is(err, errNoChange) {
		return
	}
	if err != nil {
		c.log.Warn("landing convoy", KeyTown, townID, KeyBead, convoyID, KeyErr, err)
		return
	}
	c.metrics.convoyLanded()
	c.log.Info("convoy landed", KeyTown, townID, KeyBead, convoyID, KeyCount, st.Tracked)
	t, _ := schemas.ForTown(townID)
	c.publishEvent(t, schemas.EventConvoyLanded, convoyID, map[string]any{"title": st.Title, "beads": st.Tracked})
}

// convoyStatus counts a convoy's closed beads.
func (c *Coordinator) convoyStatus(ctx context.Context, townID, convoyID string) (schemas.ConvoyStatus, error) {
	cv, err := c.lookupBead(ctx, townID, convoyID)
	if err != nil {
		return schemas.ConvoyStatus{}, err
	}
	if cv.Type != BeadConvoy {
		return schemas.ConvoyStatus{}, schemas.NewError(schemas.CodeInvalidArgument, "bead %s is not a convoy", convoyID)
	}
	st := schemas.ConvoyStatus{ConvoyID: convoyID, Title: cv.Title, Tracked: len(cv.Tracks), Landed: cv.Landed}
	for _, id := range cv.Tracks {
		if b, ok := c.st.beads.Get(schemas.Key(townID, id)); ok && b.Status == BeadClosed {
			st.Closed++
		} else {
			st.Open = append(st.Open, id)
		}
	}
	return st, nil
}

// toolConvoyCreate creates a convoy tracking beads not yet in one.
func (c *Coordinator) toolConvoyCreate(ctx context.Context, caller Caller, r schemas.ConvoyCreate) (any, error) {
	return c.createConvoy(ctx, caller.TownID, r)
}

func (c *Coordinator) createConvoy(ctx context.Context, townID string, r schemas.ConvoyCreate) (Bead, error) {
	for _, id := range r.Beads {
		b, err := c.lookupBead(ctx, townID, id)
		if err != nil {
			return Bead{}, err
		}
		if b.ConvoyID != "" {
			return Bead{}, schemas.NewError(schemas.CodeConflict, "bead %s is already in convoy %s", id, b.ConvoyID)
		}
	}
	cv, err := c.createBead(ctx, schemas.BeadCreate{TownID: townID, Type: BeadConvoy, Title: r.Title}, func(b *Bead) {
		b.Tracks = append([]string(nil), r.Beads...)
	})
	if err != nil {
		return Bead{}, err
	}
	for _, id := range r.Beads {
		if _, err := c.st.beads.Update(ctx, schemas.Key(townID, id), func(b *Bead) error {
			if b.ConvoyID != "" && b.ConvoyID != cv.BeadID {
				return schemas.NewError(schemas.CodeConflict, "bead %s joined convoy %s meanwhile", id, b.ConvoyID)
			}
			b.ConvoyID = cv.BeadID
			return nil
		}); err != nil {
			return Bead{}, err
		}
	}
	return cv, nil
}
