package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/stretchr/testify/require"
)

// TestEndToEndMCPFlow runs the flow with real processes where every agent
// call goes through `gastown mcp`: the container's polecat and refinery
// are `gastown agent sim --via-mcp` (MCP clients of a gastown mcp child,
// as real coding agents are), the mayor and triage the --agent sim
// preset. A bead is slung, worked, merged and closed; `gastown tool prime
// --format markdown` prints the mayor's briefing. No token in any log.
func TestEndToEndMCPFlow(t *testing.T) {
	bin := binary(t)
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw-mcp", "GASTOWN_OPS_PASSWORD": "ops-pw-mcp"}
	daemon(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(), "--heartbeat-interval", "500ms")
	admin := adminCLI(t, vars, url)
	repo := bareRepo(t)
	admin("town", "create", "--town", "e2m", "--owner", "alice")
	admin("rig", "add", "--town", "e2m", "--rig", "app", "--git", repo, "--branch", "main")
	token, _, err := run(t, vars, "token", "mint", "--town", "e2m", "--user", "alice")
	require.NoError(t, err)
	token = strings.TrimSpace(token)

	work := t.TempDir()
	sim := bin + " agent sim --via-mcp --work 100ms --log-level debug"
	contLogs := daemon(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": token}, "container", "--server", url, "--workdir", work,
		"--heartbeat", "200ms", "--agent", "sim", "--polecat-cmd", sim, "--refinery-cmd", sim)

	admin("bead", "create", "--town", "e2m", "--rig", "app", "--id", "login", "--title", "Add login")
	slingOrHooked(t, vars, "--town", "e2m", "--bead", "login", "--server", url)
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		if json.Unmarshal([]byte(admin("status", "--town", "e2m", "--json")), &st) != nil {
			return false
		}
		for _, b := range st.Beads {
			if b.BeadID == "login" {
				return b.Status == coordinator.BeadClosed
			}
		}
		return false
	}, 90*time.Second, 200*time.Millisecond, "the bead is merged and closed\ncontainer log:\n%s", contLogs.String())
	out, err := exec.Command("git", "--git-dir", repo, "log", "--oneline", "main").CombinedOutput()
	require.NoError(t, err)
	require.Contains(t, string(out), "sim (mcp): Add login", "the polecat worked through gastown mcp")
	require.Contains(t, string(out), "Merge polecat/", "the refinery merged through gastown mcp")

	toolVars := map[string]string{"GASTOWN_TOKEN_FILE": filepath.Join(work, "token"), "GASTOWN_NATS_URL": url,
		"GASTOWN_AGENT_ID": coordinator.MayorID, "GASTOWN_RIG_ID": coordinator.MayorRig}
	md, _, err := run(t, toolVars, "tool", "prime", "--format", "markdown")
	require.NoError(t, err)
	for _, fact := range []string{"# Gastown briefing: mayor mayor", "town **e2m**", "`sling`", "No tool ends your work", "## Never"} {
		require.Contains(t, md, fact)
	}
	_, _, err = run(t, toolVars, "tool", "rigs.list", "--format", "markdown")
	require.Equal(t, 2, exitCode(err), "--format markdown is for prime only")

	agentLogs, _ := filepath.Glob(filepath.Join(work, "logs", "*.log"))
	require.NotEmpty(t, agentLogs)
	var sawMCP bool
	for _, p := range append(agentLogs, "") {
		text := contLogs.String() + md
		if p != "" {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			text = string(b)
			sawMCP = sawMCP || strings.Contains(text, "over mcp")
		}
		require.NotContains(t, text, token, p)
		require.Empty(t, jwtPattern.FindString(text), "%s holds something shaped like a token", p)
	}
	require.True(t, sawMCP, "the agents logged their MCP calls")
}
