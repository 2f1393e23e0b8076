package coordinator

import (
	"testing"
	"time"

	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// The coordinator's bead statuses are the wire's (schemas.BeadStatuses).
func TestBeadStatusesAreTheWireStrings(t *testing.T) {
	var all []string
	for _, s := range []BeadStatus{BeadOpen, BeadInProgress, BeadInReview, BeadClosed, BeadFailed} {
		require.True(t, s.valid(), s)
		all = append(all, s.String())
	}
	require.Equal(t, schemas.BeadStatuses, all)
	require.False(t, BeadStatus("done").valid())
}

// A final bead moves nowhere, not even to its own status: the move is a
// conflict and the bead is left as it was. Every other move is legal.
func TestBeadMoves(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	all := []BeadStatus{BeadOpen, BeadInProgress, BeadInReview, BeadClosed, BeadFailed}
	for _, from := range all {
		for _, to := range all {
			t.Run(from.String()+"->"+to.String(), func(t *testing.T) {
				b := Bead{BeadID: "b", Status: from}
				err := b.move(to, now)
				if from.Final() {
					require.ErrorIs(t, err, schemas.ErrConflict)
					require.Equal(t, Bead{BeadID: "b", Status: from}, b)
					return
				}
				require.NoError(t, err)
				require.Equal(t, to, b.Status)
				require.Equal(t, now, b.UpdatedAt)
			})
		}
	}
}
