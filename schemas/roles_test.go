package schemas_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestToolRolesTable: the role table names every tool method, and each
// role gets exactly its tools: the common ones, and the mayor's, the
// refinery's and triage's own.
func TestToolRolesTable(t *testing.T) {
	require.ElementsMatch(t, schemas.Tools, slices.Collect(maps.Keys(schemas.ToolRoles)))
	common := []string{schemas.ToolPing, schemas.ToolPrime, schemas.ToolBeadGet, schemas.ToolBeadClose, schemas.ToolDone,
		schemas.ToolMailSend, schemas.ToolMailCheck, schemas.ToolEscalate, schemas.ToolCheckpoint}
	mayor := []string{schemas.ToolRigsList, schemas.ToolBeadsList, schemas.ToolAgentsList, schemas.ToolSling,
		schemas.ToolBeadUpdate, schemas.ToolConvoyCreate, schemas.ToolConvoyStatus}
	require.ElementsMatch(t, append(slices.Clone(common), mayor...), schemas.ToolsFor(schemas.RoleMayor))
	require.ElementsMatch(t, common, schemas.ToolsFor(schemas.RolePolecat))
	require.ElementsMatch(t, append(slices.Clone(common), schemas.ToolReviewComplete), schemas.ToolsFor(schemas.RoleRefinery))
	require.ElementsMatch(t, append(slices.Clone(common), schemas.ToolTriageResolve), schemas.ToolsFor(schemas.RoleTriage))
	for _, role := range schemas.Roles {
		require.NotContains(t, schemas.AgentTools(role), schemas.ToolPing)
		if f := schemas.FinishingTool(role); f != "" {
			require.True(t, schemas.MayCall(role, f), "%s may call its finishing tool %s", role, f)
		}
	}
	require.False(t, schemas.MayCall("king", schemas.ToolPrime), "an unknown role calls nothing")
	require.False(t, schemas.MayCall(schemas.RoleMayor, "no.such"), "an unknown method is for no one")
	require.Equal(t, "polecat/toast/b-1", schemas.PolecatBranch("toast", "b-1"))
}
