package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestContainerAgentPresets: --agent sets every role's command, a
// --<role>-agent one role's over it, and --<role>-cmd wins over both
// (applied after); an unknown preset is a usage error naming its flag.
func TestContainerAgentPresets(t *testing.T) {
	const bin = "/usr/bin/gastown"
	flags := func(polecat, refinery string) map[string]*string {
		m := map[string]*string{}
		for _, r := range schemas.Roles {
			v := ""
			switch r {
			case schemas.RolePolecat:
				v = polecat
			case schemas.RoleRefinery:
				v = refinery
			}
			m[r] = &v
		}
		return m
	}
	commands := map[string][]string{schemas.RoleMayor: {"from-config"}}
	require.NoError(t, presetCommands(commands, bin, "sim", flags("claude", "")))
	require.Equal(t, map[string][]string{
		schemas.RoleMayor:    {bin, "agent", "sim"},
		schemas.RolePolecat:  {bin, "agent", "launch", "claude"},
		schemas.RoleRefinery: {bin, "agent", "sim"},
		schemas.RoleTriage:   {bin, "agent", "sim"},
	}, commands)

	commands = map[string][]string{}
	require.NoError(t, presetCommands(commands, bin, "", flags("", "codex")))
	require.Equal(t, map[string][]string{schemas.RoleRefinery: {bin, "agent", "launch", "codex"}}, commands)

	require.ErrorContains(t, presetCommands(map[string][]string{}, bin, "", flags("cursor", "")), "--polecat-agent")

	token := mint(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret}, "--town", "A")
	_, _, err := run(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": token}, "container", "--agent", "cursor",
		"--server", "nats://127.0.0.1:1", "--workdir", t.TempDir())
	require.Equal(t, 2, exitCode(err))
	require.Contains(t, printed(err), `--agent: agent preset "cursor" is not one of sim, claude, codex, opencode`)
}

// TestAgentLaunch: gastown agent launch, run as a container's agent in
// its workspace, writes the CLI's MCP configuration there and becomes the
// CLI (here a stand-in on PATH that records what it was given), with the
// prompt passed the way that CLI takes it.
func TestAgentLaunch(t *testing.T) {
	bin := binary(t)
	fake := t.TempDir()
	for _, cli := range []string{"claude", "codex", "opencode"} {
		script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$OUT/args\"\n" +
			"echo \"CODEX_HOME=$CODEX_HOME\" > \"$OUT/env\"\necho \"OPENCODE_CONFIG=$OPENCODE_CONFIG\" >> \"$OUT/env\"\nexit 7\n"
		require.NoError(t, os.WriteFile(filepath.Join(fake, cli), []byte(script), 0o755))
	}
	for _, tc := range []struct {
		cli, file, env string
		args           []string
	}{
		{"claude", ".gastown/mcp.json", "", []string{"-p", "<prompt>", "--mcp-config", ".gastown/mcp.json", "--strict-mcp-config",
			"--permission-mode", "acceptEdits", "--allowedTools", "mcp__gastown,Bash"}},
		{"codex", ".gastown/codex/config.toml", "CODEX_HOME=<ws>/.gastown/codex", []string{"exec", "--sandbox", "danger-full-access",
			"--skip-git-repo-check", "<prompt>"}},
		{"opencode", ".gastown/opencode.json", "OPENCODE_CONFIG=<ws>/.gastown/opencode.json", []string{"run", "<prompt>"}},
	} {
		t.Run(tc.cli, func(t *testing.T) {
			ws, out := t.TempDir(), t.TempDir()
			ws, err := filepath.EvalSymlinks(ws)
			require.NoError(t, err)
			cmd := exec.Command(bin, "agent", "launch", tc.cli)
			cmd.Dir = ws
			cmd.Env = []string{"PATH=" + fake + ":" + os.Getenv("PATH"), "OUT=" + out,
				agentclient.EnvTownID + "=T1", agentclient.EnvRigID + "=app", agentclient.EnvAgentID + "=toast",
				agentclient.EnvAgentRole + "=polecat", agentclient.EnvRunID + "=r-1", agentclient.EnvNatsURL + "=nats://bus:4222",
				agentclient.EnvTokenFile + "=/work/token", agentclient.EnvPrompt + "=Add login"}
			b, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "%s", b)
			require.Equal(t, 7, ee.ExitCode(), "the process became the CLI: its exit status is the CLI's")

			args, err := os.ReadFile(filepath.Join(out, "args"))
			require.NoError(t, err)
			got := strings.Split(strings.TrimSuffix(string(args), "\n"), "\n")
			var prompt string
			for i, a := range tc.args {
				if a == "<prompt>" {
					prompt = strings.Join(got[i:len(got)-(len(tc.args)-1-i)], "\n")
					got = append(append(append([]string{}, got[:i]...), "<prompt>"), got[len(got)-(len(tc.args)-1-i):]...)
					break
				}
			}
			require.Equal(t, tc.args, got)
			require.Contains(t, prompt, "You are the Gastown polecat agent toast")
			require.Contains(t, prompt, "Your task:\n\nAdd login")
			if tc.env != "" {
				env, err := os.ReadFile(filepath.Join(out, "env"))
				require.NoError(t, err)
				require.Contains(t, string(env), strings.ReplaceAll(tc.env, "<ws>", ws))
			}
			cfg, err := os.ReadFile(filepath.Join(ws, tc.file))
			require.NoError(t, err)
			require.Contains(t, string(cfg), bin, "the configuration starts this binary's gastown mcp")
			require.Contains(t, string(cfg), "/work/token", "it names the token file, never a token")
			require.NotRegexp(t, jwtPattern, string(cfg))
		})
	}

	cmd := exec.Command(bin, "agent", "launch", "claude")
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=/nonexistent", agentclient.EnvAgentRole + "=polecat"}
	b, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(b), "install the claude CLI", "a missing CLI says what to do")
}
