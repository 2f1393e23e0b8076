package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// coordinatorReady waits for the coordinator's "coordinator ready": its
// handlers answer a little earlier, but stopping it before it is ready
// (while it still sets up the ops mirrors) ends it with an error.
func coordinatorReady(t *testing.T, logs *lockedBuffer) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "coordinator ready") }, 20*time.Second, 10*time.Millisecond,
		"log:\n%s", logs.String())
}

// A container started with a revoked token exits 1 at once, saying why and
// what to do; never with the token in the message.
func TestContainerRevokedToken(t *testing.T) {
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw"}
	coordinatorReady(t, daemon(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(), "--log-level", "info"))
	admin := adminCLI(t, vars, url)
	admin("town", "create", "--town", "X")
	tok, _, err := run(t, vars, "token", "mint", "--town", "X")
	require.NoError(t, err)
	tok = strings.TrimSpace(tok)
	admin("token", "revoke", "--town", "X")

	_, _, err = run(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": tok}, "container", "--server", url,
		"--workdir", t.TempDir(), "--mayor-cmd", "true", "--log-level", "error")
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	p := printed(err)
	require.Contains(t, p, "refused the container token, which has not expired: it was revoked")
	require.Contains(t, p, "hint: if the town's tokens were revoked, restart this container with a fresh bootstrap token: gastown token mint --town X")
	require.NotContains(t, p, tok)

	_, _, err = run(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": tok}, "container", "--server", url,
		"--workdir", t.TempDir(), "--mayor-cmd", "true", "--reconnect-min", "0s")
	require.Equal(t, 2, exitCode(err), "a bad --reconnect-min is a usage error")
}
