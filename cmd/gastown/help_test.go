package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A help with no flags has no "Flags:" header; a verb's help is its own.
func TestHelpSections(t *testing.T) {
	for _, args := range [][]string{{"town"}, {"rig"}, {"bead"}, {"convoy"}, {"token"}, {"ops"}, {"agent"}} {
		stdout, _, err := run(t, nil, append(args, "--help")...)
		require.NoError(t, err)
		require.NotContains(t, stdout, "Flags:", "gastown %s --help", args[0])
	}
	for _, args := range [][]string{{"status"}, {"town", "create"}, {"token", "mint"}} {
		stdout, _, err := run(t, nil, append(args, "--help")...)
		require.NoError(t, err)
		require.Contains(t, stdout, "\nFlags:\n", "gastown %v --help", args)
	}

	rotate, _, err := run(t, nil, "token", "rotate", "--help")
	require.NoError(t, err)
	require.Contains(t, rotate, "refresh the town's container token now")
	require.NotContains(t, rotate, "mint ")
	require.NotContains(t, rotate, "revoke ")
	revoke, _, err := run(t, nil, "token", "revoke", "--help")
	require.NoError(t, err)
	require.Contains(t, revoke, "closes every\nconnection that used one")
	require.NotContains(t, revoke, "mint    ")
	require.NotContains(t, revoke, "rotate")
}

// A missing or bad field of an admin verb names its flag, not the JSON
// field of the request.
func TestAdminFieldErrorsNameFlags(t *testing.T) {
	vars := map[string]string{"GASTOWN_ADMIN_PASSWORD": "pw"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"town", "create"}, "--town is required"},
		{[]string{"town", "create", "--town", "A", "--owner", "a.b"}, `--owner "a.b" may contain only`},
		{[]string{"rig", "add", "--town", "A"}, "--rig is required"},
		{[]string{"rig", "add", "--town", "A", "--rig", "r"}, "--git is required"},
		{[]string{"bead", "create", "--town", "A"}, "--title is required"},
		{[]string{"bead", "create", "--town", "A", "--title", "x", "--id", "b.1"}, `--id "b.1" may contain only`},
		{[]string{"convoy", "create", "--town", "A"}, "--title is required"},
		{[]string{"convoy", "create", "--town", "A", "--title", "x"}, "(--beads)"},
		{[]string{"convoy", "create", "--town", "A", "--title", "x", "--beads", "a,b.c"}, `--beads "b.c" may contain only`},
		{[]string{"sling", "--town", "A"}, "--bead is required"},
		{[]string{"sling", "--town", "A", "--bead", "b", "--agent", "x>"}, `--agent "x>" may contain only`},
		{[]string{"town", "show"}, "--town is required"},
		{[]string{"token", "rotate"}, "--town is required"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := run(t, vars, tc.args...)
			require.Equal(t, 2, exitCode(err), "%v", err)
			require.Contains(t, err.Error(), tc.want)
			for _, field := range []string{"townId", "rigId", "gitUrl", "beadId", "agentId", "userId"} {
				require.NotContains(t, err.Error(), field)
			}
		})
	}
}

// The real binary: a mistyped flag is reported once, with a hint, and
// without the whole usage.
func TestBadFlagPrintedOnce(t *testing.T) {
	for _, args := range [][]string{{"coordinator", "--bogus"}, {"status", "--twon", "A"}, {"coordinator", "--token-ttl", "forever"}} {
		cmd := exec.Command(binary(t), args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		require.Equal(t, 2, exit.ExitCode())
		require.Equal(t, 1, strings.Count(string(out), "gastown: "), "%s", out)
		require.Equal(t, 1, strings.Count(string(out), "\n"+"hint: run 'gastown "), "%s", out)
		require.NotContains(t, string(out), "Usage:", "%s", out)
	}
}

// `gastown tool` with the bus down fails at once with exit status 15
// (unavailable) and a hint, and its flags may come before the method.
func TestToolBusDown(t *testing.T) {
	token := mint(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret}, "--town", "A")
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	vars := map[string]string{"GASTOWN_TOKEN_FILE": tokenFile, "GASTOWN_NATS_URL": "nats://" + freeAddr(t)}
	for _, args := range [][]string{
		{"tool", "ping"},
		{"tool", "--timeout", "3s", "ping"},
		{"tool", "--timeout=3s", "bead.get", "beadId=b"},
		{"tool", "bead.get", "--timeout", "3s", "beadId=b"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, _, err := run(t, vars, args...)
			require.Error(t, err)
			require.Equal(t, 15, exitCode(err), "%v", err)
			p := printed(err)
			require.Contains(t, p, "is not reachable")
			require.Contains(t, p, "hint: ")
			require.NotContains(t, p, token)
			require.Empty(t, stdout)
		})
	}
	t.Run("a flag's value is not the method", func(t *testing.T) {
		_, _, err := run(t, vars, "tool", "--timeout", "3s")
		require.Equal(t, 2, exitCode(err))
		require.Contains(t, err.Error(), "tool needs a method")
		_, _, err = run(t, vars, "tool", "--timeout", "soon", "ping")
		require.Equal(t, 2, exitCode(err))
		require.Contains(t, err.Error(), "invalid value")
	})
}
