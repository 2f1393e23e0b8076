package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Two real coordinator processes on one data directory: the second is
// refused at once, naming the first by pid, before it opens the store or
// the port.
func TestDataDirInUseByAnotherProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret}
	first := startProcess(t, vars, "coordinator", "--listen", "127.0.0.1:0", "--data-dir", dir)
	require.Eventually(t, func() bool { return strings.Contains(first.logs.String(), "coordinator ready") },
		30*time.Second, 20*time.Millisecond, "first coordinator not ready:\n%s", first.logs.String())

	second := exec.Command(binary(t), "coordinator", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "debug")
	second.Env = first.env
	out, err := second.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 1, exit.ExitCode(), "%s", out)
	require.Contains(t, string(out), fmt.Sprintf("gastown: data directory %s is in use by process %d (gastown coordinator)\n", dir, first.cmd.Process.Pid))
	require.Contains(t, string(out), "hint: stop it or choose another --data-dir")
	for _, never := range []string{"Starting nats-server", "restore", "Listening", "ready"} {
		require.NotContains(t, string(out), never, "the refused coordinator started nothing")
	}

	// The first one kept running; once it is gone, the directory is free.
	require.NotContains(t, first.logs.String(), "stopping")
	first.kill()
	third := startProcess(t, vars, "coordinator", "--listen", "127.0.0.1:0", "--data-dir", dir)
	require.Eventually(t, func() bool { return strings.Contains(third.logs.String(), "coordinator ready") },
		30*time.Second, 20*time.Millisecond, "a killed holder's lock is gone with it:\n%s", third.logs.String())
}
