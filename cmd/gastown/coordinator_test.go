package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
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
		err := Run(ctx, []string{"token", "rotate", "--town", "A", "--server", url, "--timeout", "2s"}, callEnv)
		if err != nil {
			continue
		}
		require.NoError(t, json.Unmarshal([]byte(out.String()), &rotated), out.String())
		ready = true
	}
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
