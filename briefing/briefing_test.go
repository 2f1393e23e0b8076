package briefing_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/gastown/gastown/briefing"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ`)

// TestBriefingPerRole: each role's briefing carries the facts its agent
// must know: who and where it is, the bead on its hook with its body, the
// branch to work on, its tools and the one that ends its work, how to ask
// for help, what it must never do; and never a token.
func TestBriefingPerRole(t *testing.T) {
	common := []string{"town **T1**", "escalate", "mail.send", "mail.check", "checkpoint", "## Never", "token"}
	for _, tc := range []struct {
		role  string
		prime briefing.Prime
		facts []string
		not   []string
	}{
		{schemas.RolePolecat, briefing.Prime{AgentID: "toast", RigID: "app", Role: schemas.RolePolecat, RunID: "r-1",
			Hook: &briefing.Bead{BeadID: "b-7", Type: "issue", Status: "in_progress", Title: "Add login", Body: "A form.\n# Not a heading"}},
			[]string{"**toast**", "**polecat**", "rig **app**", "run r-1", "**b-7**", "Add login", "> A form.", "> # Not a heading",
				"`polecat/toast/b-7`", "**`done`**", "`done`: **ends your work**",
				"## When you are run again", "`origin/polecat/toast/b-7`"},
			[]string{"review.complete", "triage.resolve", "`sling`"}},
		{schemas.RoleRefinery, briefing.Prime{AgentID: "app-refinery", RigID: "app", Role: schemas.RoleRefinery,
			Hook: &briefing.Bead{BeadID: "mr-1", Type: "merge_request", Status: "open", Title: "Merge polecat/toast/b-7 (Add login)",
				Branch: "polecat/toast/b-7", Polecat: "toast", SourceBead: "b-7", Summary: "added it"}},
			[]string{"**refinery**", "**mr-1**", "`polecat/toast/b-7`", "from polecat toast", "bead b-7", "added it",
				"**`review.complete`**", "`merged`", "`conflict`", "`failed`", "`review.complete`: **ends your work**"},
			[]string{"triage.resolve", "`sling`", "`ping`"}},
		{schemas.RoleTriage, briefing.Prime{AgentID: "t-1", RigID: "app", Role: schemas.RoleTriage,
			Hook: &briefing.Bead{BeadID: "tr-1", Type: "issue", Status: "in_progress", Title: "Crash loop: toast", TriageFor: "toast", SourceBead: "b-7"}},
			[]string{"**triage**", "**tr-1**", "Agent **toast** is in a crash loop", "b-7", "**`triage.resolve`**", "`restart`", "`fail`",
				"`triage.resolve`: **ends your work**"},
			[]string{"review.complete", "`sling`"}},
		{schemas.RoleMayor, briefing.Prime{AgentID: "mayor", RigID: "town", Role: schemas.RoleMayor},
			[]string{"**mayor**", "`sling`", "`convoy.create`", "`beads.list`", "No tool ends your work", "Nothing is on your hook"},
			[]string{"review.complete", "triage.resolve", "ends your work**"}},
	} {
		t.Run(tc.role, func(t *testing.T) {
			md, err := briefing.Render("T1", tc.prime)
			require.NoError(t, err)
			for _, f := range append(append([]string{}, common...), tc.facts...) {
				require.Contains(t, md, f)
			}
			for _, f := range tc.not {
				require.NotContains(t, md, f, "another role's tool is not offered")
			}
			for _, tool := range schemas.AgentTools(tc.role) {
				require.Contains(t, md, "`"+tool+"`", "every tool the role has is listed")
			}
			require.NotRegexp(t, jwtShape, md)
		})
	}
}

// TestBriefingEmptyHook: an agent with nothing on its hook is told so,
// and is not given a branch.
func TestBriefingEmptyHook(t *testing.T) {
	md, err := briefing.Render("T1", briefing.Prime{AgentID: "toast", RigID: "app", Role: schemas.RolePolecat})
	require.NoError(t, err)
	require.Contains(t, md, "Nothing is on your hook")
	require.NotContains(t, md, "## Your branch")
}

// TestBriefingNeverHoldsAToken: no field of prime carries a token, so
// even a bead whose body quotes the token file's path shows no token; a
// bad role is an error, not an empty briefing.
func TestBriefingNeverHoldsAToken(t *testing.T) {
	for _, role := range schemas.Roles {
		md, err := briefing.Render("T1", briefing.Prime{AgentID: "a", RigID: "r", Role: role,
			Hook: &briefing.Bead{BeadID: "b", Title: "t", Body: "see /work/token"}})
		require.NoError(t, err)
		require.NotRegexp(t, jwtShape, md)
		require.False(t, strings.Contains(md, "Bearer"), role)
	}
	_, err := briefing.Render("T1", briefing.Prime{Role: "king"})
	require.ErrorContains(t, err, "king")
}
