package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// freeAddr is a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// The coordinator runs until its context ends, answers the admin verbs, and
// shuts down cleanly.
func TestCoordinatorEndToEnd(t *testing.T) {
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{
		"GASTOWN_JWT_SECRET":     testSecret,
		"GASTOWN_ADMIN_PASSWORD": "admin-pw",
		"GASTOWN_OPS_PASSWORD":   "ops-pw",
	}
	env, _, logs := envOf(vars)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"coordinator", "--listen", addr, "--data-dir", t.TempDir(), "--log-level", "debug"}, env)
	}()

	// Ready when an admin call is answered: the server accepts connections
	// and the coordinator has subscribed its handlers.
	var rotated schemas.RotateResult
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for ready := false; !ready; {
		select {
		case err := <-done:
			t.Fatalf("coordinator exited early: %v\nlog:\n%s", err, logs.String())
		case <-deadline:
			t.Fatalf("coordinator not answering after 20s\nlog:\n%s", logs.String())
		case <-tick.C:
		}
		callEnv, out, _ := envOf(vars)
		callEnv.Stderr = io.Discard
		err := Run(ctx, []string{"town", "list", "--server", url, "--timeout", "2s"}, callEnv)
		if err != nil {
			continue
		}
		require.Contains(t, out.String(), "no towns yet")
		ready = true
	}
	coordinatorReady(t, logs) // stopped before, it would end with an error
	_, _, err := run(t, vars, "token", "rotate", "--town", "A", "--server", url)
	require.Error(t, err, "no town A yet")
	require.Equal(t, 13, exitCode(err), "not_found")
	_, _, err = run(t, vars, "town", "create", "--town", "A", "--server", url)
	require.NoError(t, err)
	stdout, _, err := run(t, vars, "token", "rotate", "--town", "A", "--server", url)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(stdout), &rotated), stdout)
	require.Equal(t, "A", rotated.TownID)
	require.True(t, rotated.Idle, "no container of A is connected")
	require.False(t, rotated.Acknowledged)
	require.Empty(t, rotated.Error)

	t.Run("revoke", func(t *testing.T) {
		stdout, _, err := run(t, vars, "token", "revoke", "--town", "A", "--server", url)
		require.NoError(t, err)
		var revoked schemas.RevokeResult
		require.NoError(t, json.Unmarshal([]byte(stdout), &revoked), stdout)
		require.Equal(t, "A", revoked.TownID)
		require.WithinDuration(t, time.Now(), revoked.RevokedBefore, time.Minute)
		require.Zero(t, revoked.Closed, "no container of A is connected")
		require.Contains(t, revoked.Next, "gastown token mint --town A")
	})

	t.Run("ops context", func(t *testing.T) {
		config := t.TempDir()
		stdout, _, err := run(t, map[string]string{"GASTOWN_OPS_PASSWORD": "ops-pw", "XDG_CONFIG_HOME": config}, "ops", "context", "--server", url)
		require.NoError(t, err)
		path := filepath.Join(config, "nats", "context", "gastown-ops.json")
		require.Contains(t, stdout, path)
		require.NotContains(t, stdout, "ops-pw", "the password is never printed")
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		var c map[string]string
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &c))
		require.Equal(t, schemas.OpsInbox, c["inbox_prefix"])
		require.Equal(t, url, c["url"])

		// The real nats CLI, with nothing but that context, reads the state.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := bustest.NatsCommand(ctx, t, "--context", "gastown-ops", "kv", "ls")
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "XDG_CONFIG_HOME="+config)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), schemas.BucketTowns)

		_, _, err = run(t, map[string]string{"XDG_CONFIG_HOME": config}, "ops", "context")
		require.Error(t, err)
		require.Contains(t, err.Error(), "GASTOWN_OPS_PASSWORD")
	})

	t.Run("wrong admin password", func(t *testing.T) {
		_, _, err := run(t, map[string]string{"GASTOWN_ADMIN_PASSWORD": "wrong"}, "token", "rotate", "--town", "A", "--server", url)
		require.Error(t, err)
		require.Equal(t, 1, exitCode(err))
		require.NotEmpty(t, errors.GetAllHints(err))
		require.NotContains(t, printed(err), "admin-pw")
	})

	t.Run("no admin password", func(t *testing.T) {
		_, _, err := run(t, nil, "token", "rotate", "--town", "A", "--server", url)
		require.Error(t, err)
		require.Equal(t, 1, exitCode(err))
		require.Contains(t, err.Error(), "GASTOWN_ADMIN_PASSWORD")
	})

	t.Run("a second coordinator on the same address fails promptly", func(t *testing.T) {
		start := time.Now()
		_, _, err := run(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret},
			"coordinator", "--listen", addr, "--data-dir", t.TempDir(), "--log-level", "error")
		require.Error(t, err)
		require.Equal(t, 1, exitCode(err))
		require.Contains(t, printed(err), "--listen")
		require.Less(t, time.Since(start), 10*time.Second)
	})

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "clean shutdown\nlog:\n%s", logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("coordinator did not stop within 20s of its context ending\nlog:\n%s", logs.String())
	}
	require.Contains(t, logs.String(), "coordinator stopping")
	require.NotContains(t, logs.String(), testSecret, "the secret is never logged")

	// The port is free again.
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err, "the listener was not closed")
	require.NoError(t, l.Close())
}

// Without a reachable coordinator the admin verbs fail with a hint.
func TestTokenRotateUnreachable(t *testing.T) {
	addr := freeAddr(t)
	_, _, err := run(t, map[string]string{"GASTOWN_ADMIN_PASSWORD": "pw"},
		"token", "rotate", "--town", "A", "--server", "nats://"+addr, "--timeout", "1s")
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	require.Contains(t, printed(err), "hint: ")
	require.Contains(t, err.Error(), addr)
}
