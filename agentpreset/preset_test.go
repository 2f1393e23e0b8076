package agentpreset_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/agentpreset"
	"github.com/stretchr/testify/require"
)

const bin = "/opt/gastown/bin/gastown"

// agentEnv is an agent's environment, as its container gives it.
func agentEnv(role string) func(string) string {
	vars := map[string]string{
		agentclient.EnvTownID: "T1", agentclient.EnvRigID: "app", agentclient.EnvAgentID: "toast", agentclient.EnvAgentRole: role,
		agentclient.EnvRunID: "r-1", agentclient.EnvBeadID: "b-1", agentclient.EnvNatsURL: "nats://bus:4222",
		agentclient.EnvTokenFile: "/work/token", agentclient.EnvPrompt: "Add login\n\nA login page.",
	}
	return func(k string) string { return vars[k] }
}

// wantServerEnv is what every preset's configuration hands gastown mcp.
var wantServerEnv = map[string]any{
	"GASTOWN_TOWN_ID": "T1", "GASTOWN_RIG_ID": "app", "GASTOWN_AGENT_ID": "toast", "GASTOWN_AGENT_ROLE": "polecat",
	"GASTOWN_RUN_ID": "r-1", "GASTOWN_BEAD_ID": "b-1", "GASTOWN_NATS_URL": "nats://bus:4222", "GASTOWN_TOKEN_FILE": "/work/token",
}

// TestCommands: the container runs the sim directly and a CLI through
// gastown agent launch; an unknown preset is refused by name.
func TestCommands(t *testing.T) {
	for name, want := range map[string][]string{
		agentpreset.Sim:      {bin, "agent", "sim"},
		agentpreset.Claude:   {bin, "agent", "launch", "claude"},
		agentpreset.Codex:    {bin, "agent", "launch", "codex"},
		agentpreset.OpenCode: {bin, "agent", "launch", "opencode"},
	} {
		got, err := agentpreset.Command(name, bin)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := agentpreset.Command("cursor", bin)
	require.ErrorContains(t, err, `"cursor" is not one of sim, claude, codex, opencode`)
}

// TestClaude: .gastown/mcp.json registers gastown mcp with the agent's
// environment, and claude -p gets the prompt and loads only that file.
func TestClaude(t *testing.T) {
	dir := t.TempDir()
	l, err := agentpreset.Plan(agentpreset.Claude, bin, dir, agentEnv("polecat"))
	require.NoError(t, err)
	require.Equal(t, "claude", l.Argv[0])
	require.Equal(t, "-p", l.Argv[1])
	require.Contains(t, l.Argv[2], "You are the Gastown polecat agent toast (town T1, rig app)")
	require.Contains(t, l.Argv[2], "call its prime tool")
	require.Contains(t, l.Argv[2], "calling done once")
	require.Contains(t, l.Argv[2], "Your task:\n\nAdd login\n\nA login page.")
	require.Equal(t, []string{"--mcp-config", ".gastown/mcp.json", "--strict-mcp-config", "--permission-mode", "acceptEdits",
		"--allowedTools", "mcp__gastown,Bash"}, l.Argv[3:])
	require.Empty(t, l.Env)
	var doc map[string]map[string]map[string]any
	require.NoError(t, json.Unmarshal(l.Files[".gastown/mcp.json"], &doc))
	srv := doc["mcpServers"]["gastown"]
	require.Equal(t, "stdio", srv["type"])
	require.Equal(t, bin, srv["command"])
	require.Equal(t, []any{"mcp"}, srv["args"])
	require.Equal(t, wantServerEnv, srv["env"])
}

// TestCodex: CODEX_HOME is the workspace's .gastown/codex, whose
// config.toml has [mcp_servers.gastown]; codex exec gets the prompt.
func TestCodex(t *testing.T) {
	dir := t.TempDir()
	l, err := agentpreset.Plan(agentpreset.Codex, bin, dir, agentEnv("polecat"))
	require.NoError(t, err)
	require.Equal(t, []string{"codex", "exec", "--sandbox", "danger-full-access", "--skip-git-repo-check"}, l.Argv[:5])
	require.Len(t, l.Argv, 6)
	require.Contains(t, l.Argv[5], "Your task:\n\nAdd login")
	require.Equal(t, []string{"CODEX_HOME=" + filepath.Join(dir, ".gastown", "codex")}, l.Env)
	toml := string(l.Files[filepath.Join(".gastown", "codex", "config.toml")])
	for _, line := range []string{"[mcp_servers.gastown]", `command = "` + bin + `"`, `args = ["mcp"]`, "[mcp_servers.gastown.env]",
		`GASTOWN_AGENT_ROLE = "polecat"`, `GASTOWN_TOKEN_FILE = "/work/token"`, `GASTOWN_NATS_URL = "nats://bus:4222"`} {
		require.Contains(t, toml, line+"\n")
	}
}

// TestOpenCode: OPENCODE_CONFIG names .gastown/opencode.json, whose mcp
// section starts gastown mcp as a local server; opencode run gets the
// prompt.
func TestOpenCode(t *testing.T) {
	dir := t.TempDir()
	l, err := agentpreset.Plan(agentpreset.OpenCode, bin, dir, agentEnv("refinery"))
	require.NoError(t, err)
	require.Equal(t, []string{"opencode", "run"}, l.Argv[:2])
	require.Contains(t, l.Argv[2], "refinery agent toast")
	require.Contains(t, l.Argv[2], "calling review.complete once")
	require.Equal(t, []string{"OPENCODE_CONFIG=" + filepath.Join(dir, ".gastown", "opencode.json")}, l.Env)
	var doc struct {
		Schema string `json:"$schema"`
		MCP    map[string]struct {
			Type        string            `json:"type"`
			Command     []string          `json:"command"`
			Enabled     bool              `json:"enabled"`
			Environment map[string]string `json:"environment"`
		} `json:"mcp"`
	}
	require.NoError(t, json.Unmarshal(l.Files[filepath.Join(".gastown", "opencode.json")], &doc))
	require.Equal(t, "https://opencode.ai/config.json", doc.Schema)
	g := doc.MCP["gastown"]
	require.Equal(t, "local", g.Type)
	require.Equal(t, []string{bin, "mcp"}, g.Command)
	require.True(t, g.Enabled)
	require.Equal(t, "refinery", g.Environment["GASTOWN_AGENT_ROLE"])
}

// TestWriteKeepsConfigOutOfGit: the files are written 0600 under
// .gastown, which a git workspace excludes (once), so an agent's commit
// never carries them; no file holds a token.
func TestWriteKeepsConfigOutOfGit(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command("git", "init", "-q", dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for range 2 {
		l, err := agentpreset.Plan(agentpreset.Claude, bin, dir, agentEnv("polecat"))
		require.NoError(t, err)
		require.NoError(t, l.Write(dir))
	}
	st, err := os.Stat(filepath.Join(dir, ".gastown", "mcp.json"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	exclude, err := os.ReadFile(filepath.Join(dir, ".git", "info", "exclude"))
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(exclude), "/.gastown/\n"))
	status, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=all").CombinedOutput()
	require.NoError(t, err)
	require.Empty(t, strings.TrimSpace(string(status)), "git sees none of it")

	plain := t.TempDir() // a triage or mayor workspace: no git
	l, err := agentpreset.Plan(agentpreset.OpenCode, bin, plain, agentEnv("triage"))
	require.NoError(t, err)
	require.NoError(t, l.Write(plain))
	_, err = os.Stat(filepath.Join(plain, ".gastown", "opencode.json"))
	require.NoError(t, err)
}

// TestPlanRefusesBadInput: an unknown role, a relative path or the sim
// (which runs directly) are errors that say so.
func TestPlanRefusesBadInput(t *testing.T) {
	_, err := agentpreset.Plan(agentpreset.Claude, bin, t.TempDir(), func(string) string { return "" })
	require.ErrorContains(t, err, agentclient.EnvAgentRole)
	_, err = agentpreset.Plan(agentpreset.Claude, "gastown", t.TempDir(), agentEnv("polecat"))
	require.ErrorContains(t, err, "absolute")
	_, err = agentpreset.Plan(agentpreset.Sim, bin, t.TempDir(), agentEnv("polecat"))
	require.ErrorContains(t, err, "gastown agent sim")
}
