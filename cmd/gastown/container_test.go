package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

func TestContainerHelp(t *testing.T) {
	stdout, stderr, err := run(t, nil, "container", "--help")
	require.NoError(t, err)
	require.Empty(t, stderr)
	for _, want := range []string{
		"Usage: gastown container", "GASTOWN_CONTAINER_TOKEN", "GASTOWN_NATS_URL", "GASTOWN_CONTAINER_ID",
		"-town", "-server", "-workdir", "-token-file", "-heartbeat", "-stop-grace", "-config",
		"-mayor-cmd", "-polecat-cmd", "-refinery-cmd", "-triage-cmd",
	} {
		require.Contains(t, stdout, want)
	}
}

// TestContainerUsageErrors: a wrong command line stops before anything
// connects, with exit status 2, and never prints the token.
func TestContainerUsageErrors(t *testing.T) {
	secret := map[string]string{"GASTOWN_JWT_SECRET": testSecret}
	token := mint(t, secret, "--town", "A")
	withToken := map[string]string{"GASTOWN_CONTAINER_TOKEN": token}
	badConfig := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(badConfig, []byte(`{"commands": {"wizard": ["true"]}}`), 0o600))
	cmd := []string{"--mayor-cmd", "true", "--server", "nats://127.0.0.1:1", "--workdir", t.TempDir()}
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"a --town that is not the token's", withToken, append([]string{"--town", "B"}, cmd...), "town A"},
		{"no token", nil, cmd, "GASTOWN_CONTAINER_TOKEN"},
		{"not a container token", map[string]string{"GASTOWN_CONTAINER_TOKEN": "x.y.z"}, cmd, "GASTOWN_CONTAINER_TOKEN"},
		{"no agent commands", withToken, []string{"--workdir", t.TempDir()}, "no agent commands"},
		{"a config naming an unknown role", withToken, append([]string{"--config", badConfig}, cmd...), "wizard"},
		{"an extra argument", withToken, append(cmd, "extra"), "extra"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := run(t, tc.vars, append([]string{"container"}, tc.args...)...)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrUsage), "not a usage error: %v", err)
			require.Equal(t, 2, exitCode(err))
			require.Empty(t, stdout)
			require.Contains(t, printed(err), tc.want)
			require.NotContains(t, printed(err)+stderr, token, "the token is never printed")
		})
	}
}
