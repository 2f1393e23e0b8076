package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

// gastown coordinator --metrics-listen serves /healthz, /readyz and
// /metrics while it runs, and nothing once it has stopped.
func TestCoordinatorMetricsListen(t *testing.T) {
	metricsAddr := freeAddr(t)
	env, _, logs := envOf(map[string]string{"GASTOWN_JWT_SECRET": testSecret})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"coordinator", "--listen", freeAddr(t), "--data-dir", t.TempDir(), "--metrics-listen", metricsAddr}, env)
	}()
	get := func(path string) (int, string, error) {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+metricsAddr+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	exited := false
	var exitErr error
	require.Eventually(t, func() bool {
		select {
		case exitErr = <-done:
			exited = true
			return true
		default:
		}
		code, _, err := get("/readyz")
		return err == nil && code == http.StatusOK
	}, 20*time.Second, 25*time.Millisecond, "ready")
	require.False(t, exited, "coordinator exited early: %v\nlog:\n%s", exitErr, logs)
	code, _, err := get("/healthz")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	code, body, err := get("/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "gastown_rotations_pushed_total 0")
	require.Contains(t, body, `gastown_connections{kind="internal"}`)
	require.NotContains(t, body, testSecret)

	cancel()
	require.NoError(t, <-done)
	_, err = net.DialTimeout("tcp", metricsAddr, time.Second)
	require.Error(t, err, "the listener stopped with the coordinator")
}

// A --metrics-listen that is not host:port stops the start with a hint.
func TestCoordinatorMetricsListenBad(t *testing.T) {
	env, _, _ := envOf(map[string]string{"GASTOWN_JWT_SECRET": testSecret})
	err := Run(context.Background(), []string{"coordinator", "--listen", freeAddr(t), "--data-dir", t.TempDir(), "--metrics-listen", "9464"}, env)
	require.Error(t, err)
	require.Contains(t, err.Error(), "metrics listen address")
	require.True(t, strings.Contains(errors.FlattenHints(err), "--metrics-listen"), errors.FlattenHints(err))
}
