package coordinator

import (
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// A write that lost every compare-and-set to other writers of its record
// (an agent's concurrent checkpoints, seen in the red team's flood) wrote
// nothing: the caller is told unavailable with a retry hint, not internal.
func TestStaleWriteIsUnavailable(t *testing.T) {
	c := &Coordinator{}
	err := errors.Wrap(errors.Mark(errors.New("wrong last sequence"), kvstore.ErrStale), "writing gastown_agents/alpha.mayor")
	e := c.wireError("gastown.town.alpha.rpc.checkpoint", err)
	require.Equal(t, schemas.CodeUnavailable, e.Code)
	require.Positive(t, e.RetryAfter)
	require.NotContains(t, e.Message, "gastown_agents", "the store's key is not the caller's business")
}
