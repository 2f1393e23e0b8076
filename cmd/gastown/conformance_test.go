package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/stretchr/testify/require"
)

// TestConformanceKitPassesGastownContainer runs the conformance kit
// against `gastown container` itself, as a container in any language is
// run: every check passes.
func TestConformanceKitPassesGastownContainer(t *testing.T) {
	bin := binary(t)
	cmd := exec.CommandContext(context.Background(), bin, "conformance", "container", "--work-dir", t.TempDir(),
		"--", bin, "container", "--workdir", t.TempDir(), "--stop-grace", "500ms")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err, "the kit found departures from docs/PROTOCOL.md")
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Regexp(t, `^[1-9][0-9]* passed, 0 failed$`, lines[len(lines)-1])
	require.NotContains(t, string(out), "FAIL")
	require.Contains(t, string(out), "PASS a superseding dispatch stops the old run")
	require.Contains(t, string(out), "PASS an exit while the bus is away is reported once the container is back")
	require.Contains(t, string(out), "PASS workspace kind git: a clone on a new branch, made from defaultBranch")
	require.Contains(t, string(out), "PASS workspace kind git for a refinery: a clone on the existing branch it merges into")
}

// TestConformanceKitFailsABrokenContainer: a container that never
// connects fails, with exit status 1 and a FAIL line saying so.
func TestConformanceKitFailsABrokenContainer(t *testing.T) {
	bin := binary(t)
	cmd := exec.CommandContext(context.Background(), bin, "conformance", "container", "--timeout", "1s",
		"--", "sh", "-c", "sleep 30")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	require.Equal(t, 1, ee.ExitCode())
	require.Contains(t, string(out), "FAIL connects with its bootstrap token and asks token.get")
	require.Contains(t, string(out), "0 passed, 2 failed")
}

// TestConformanceUsage: no container command is a usage error.
func TestConformanceUsage(t *testing.T) {
	_, _, err := run(t, nil, "conformance", "container", "--timeout", "1s")
	require.True(t, errors.Is(err, ErrUsage), "not a usage error: %v", err)
	require.Contains(t, printed(err), "no container command")
	stdout, _, err := run(t, nil, "conformance", "--help")
	require.NoError(t, err)
	require.Contains(t, stdout, "gastown conformance container")
}

// TestAgentCommandFromEnv: GASTOWN_AGENT_COMMAND sets every role's agent
// (run by sh -c) over the flags, GASTOWN_AGENT_COMMAND_<ROLE> one role's.
func TestAgentCommandFromEnv(t *testing.T) {
	vars := map[string]string{"GASTOWN_AGENT_COMMAND": "kit agent", "GASTOWN_AGENT_COMMAND_POLECAT": "  polecat agent --x "}
	commands := map[string][]string{"mayor": {"from-flag"}}
	envAgentCommands(func(k string) string { return vars[k] }, commands)
	require.Equal(t, map[string][]string{
		"mayor": {"sh", "-c", "kit agent"}, "refinery": {"sh", "-c", "kit agent"}, "triage": {"sh", "-c", "kit agent"},
		"polecat": {"sh", "-c", "polecat agent --x"},
	}, commands)
	none := map[string][]string{"mayor": {"from-flag"}}
	envAgentCommands(func(string) string { return "" }, none)
	require.Equal(t, map[string][]string{"mayor": {"from-flag"}}, none, "unset: the configuration stands")
}
