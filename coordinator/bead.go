package coordinator

import (
	"context"
	"slices"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// The bead lifecycle. This file decides every change of a bead's Status:
//
//	(new) --createBead--> open
//	open, in_progress, in_review --move--> open, in_progress, in_review, closed, failed
//	closed, failed: final; no move
//
// Who moves a bead where: dispatch (open → in_progress), done (→ in_review),
// the review queue (a merge request → in_progress), review.complete (a merge
// request → closed or failed; its source bead → closed, or back to open),
// mail.check (a message → closed), a convoy landing (→ closed), too many
// failed dispatches, triage's fail verdict and a forced rig removal
// (→ failed), and an agent's bead.update (any move below).

// beadMoves are the legal moves of a bead's status: from each status, the
// statuses it may become. A final status has none; a move to the status a
// bead already has is legal while it is not final (bead.update touching
// only its title, say).
var beadMoves = map[BeadStatus][]BeadStatus{
	BeadOpen:       {BeadOpen, BeadInProgress, BeadInReview, BeadClosed, BeadFailed},
	BeadInProgress: {BeadOpen, BeadInProgress, BeadInReview, BeadClosed, BeadFailed},
	BeadInReview:   {BeadOpen, BeadInProgress, BeadInReview, BeadClosed, BeadFailed},
}

// valid reports whether s is one of the bead statuses.
func (s BeadStatus) valid() bool {
	_, open := beadMoves[s]
	return open || s.Final()
}

// canMove reports whether a bead in status s may move to status to.
func (s BeadStatus) canMove(to BeadStatus) bool { return slices.Contains(beadMoves[s], to) }

// move moves the bead to status to at now, or refuses the move with
// conflict if beadMoves does not allow it. Every write of a bead's Status
// goes through it (or is createBead's open).
func (b *Bead) move(to BeadStatus, now time.Time) error {
	if !b.Status.canMove(to) {
		return schemas.NewError(schemas.CodeConflict, "bead %s is %s; it cannot become %s", b.BeadID, b.Status, to)
	}
	b.Status, b.UpdatedAt = to, now
	return nil
}

// setBeadStatus moves a bead to status, best effort, but only from one of
// the given statuses (any non-final one when none are given): a bead that
// is final or elsewhere is left as it is, silently. A bead that fails this
// way loses its assignee.
func (c *Coordinator) setBeadStatus(ctx context.Context, townID, beadID string, status BeadStatus, from ...BeadStatus) {
	_, err := c.st.beads.Update(ctx, schemas.Key(townID, beadID), func(b *Bead) error {
		if b.Final() || (len(from) > 0 && !slices.Contains(from, b.Status)) {
			return errNoChange
		}
		if status == BeadFailed {
			b.Assignee = ""
		}
		return b.move(status, c.now())
	})
	if err != nil && !errors.Is(err, errNoChange) {
		c.log.Warn("updating bead status", KeyTown, townID, KeyBead, beadID, KeyErr, err)
	}
}
