package coordinator

import (
	"maps"
	"slices"
	"testing"

	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestMethodListsComplete: schemas.Tools and schemas.AdminMethods name
// exactly the methods the coordinator answers, so the adversarial suite,
// which walks those lists, tests every handler.
func TestMethodListsComplete(t *testing.T) {
	c := &Coordinator{}
	require.ElementsMatch(t, schemas.Tools, slices.Collect(maps.Keys(c.rpcMethods())))
	require.ElementsMatch(t, schemas.AdminMethods, slices.Collect(maps.Keys(c.adminHandlers())))
}
