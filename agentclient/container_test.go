package agentclient_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// alive reports whether a process with pid exists (and is not reaped).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// sleeperPid waits for the sleeper script of agent's run to record its pid.
func sleeperPid(t *testing.T, out, agent, run string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(out, agent+"-"+run+".pid"))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	return pid
}

// busRequest sends body on subject from the coordinator's connection and
// decodes the reply into out; it returns the raw reply.
func busRequest(t *testing.T, h *coordinatortest.Harness, subject string, body, out schemas.Message) []byte {
	t.Helper()
	data, err := schemas.Encode(body)
	require.NoError(t, err)
	m, err := h.Conn().Request(subject, data, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, schemas.Decode(m.Data, out))
	return m.Data
}

// TestRunContainerThroughTheBus runs a container end to end: it answers a
// dispatch and stops over the bus (refusing a stale run's stop), never puts
// its token in a reply, and on shutdown stops its agents and returns nil.
func TestRunContainerThroughTheBus(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	const town = "E"
	tok, _, err := h.Issuer.MintContainer(town, "", time.Hour)
	require.NoError(t, err)
	script, err := filepath.Abs("testdata/sleeper.sh")
	require.NoError(t, err)
	work, out := t.TempDir(), t.TempDir()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- agentclient.RunContainer(ctx, agentclient.ContainerConfig{
			Source: agentclient.Config{URL: h.URL(), Token: tok, ContainerID: "c-e", Logger: bustest.Logger(t)},
			Runner: agentclient.RunnerConfig{WorkDir: work, StopGrace: 5 * time.Second,
				Commands: map[string][]string{schemas.RoleMayor: {script}, schemas.RoleTriage: {script}}},
			HeartbeatInterval: time.Hour,
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("RunContainer did not return")
		}
	})
	t.Setenv(agentclient.EnvContainerToken, tok) // the container's own environment holds it

	t0, err := schemas.ForTown(town)
	require.NoError(t, err)
	start := func(agent, run, role string) schemas.StartAgentResult {
		var res schemas.StartAgentResult
		raw := busRequest(t, h, t0.Dispatch(), &schemas.StartAgent{TownID: town, RigID: "r", AgentID: agent, RunID: run, Role: role,
			Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}, Env: map[string]string{"SLEEPER_OUT": out}}, &res)
		require.NotContains(t, string(raw), tok, "a dispatch reply never holds the token")
		return res
	}
	stop := func(agent, run string) schemas.Ack {
		var ack schemas.Ack
		raw := busRequest(t, h, t0.ControlStop(), &schemas.StopAgent{AgentID: agent, RunID: run, Reason: "test"}, &ack)
		require.NotContains(t, string(raw), tok)
		return ack
	}
	// Ready once the dispatch subscription is there.
	require.Eventually(t, func() bool {
		_, err := h.Conn().Request(t0.Dispatch(), []byte("{}"), time.Second)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	res := start("m", "r1", schemas.RoleMayor)
	require.True(t, res.OK, res.Error)
	require.Equal(t, "m", res.AgentID)
	require.Equal(t, "r1", res.RunID)
	pid := sleeperPid(t, out, "m", "r1")
	if _, err := os.Stat("/proc/self/environ"); err == nil { // Linux: the running agent's own environment
		// The script writes its pid and then execs sleep: during the exec
		// the process's environment reads empty.
		var env []byte
		require.Eventually(t, func() bool {
			env, err = os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			return err == nil && len(env) > 0
		}, 10*time.Second, 10*time.Millisecond, "the agent's environment never read")
		require.NotContains(t, string(env), tok, "the token never reaches an agent")
		require.Contains(t, string(env), "GASTOWN_TOKEN_FILE="+filepath.Join(work, "token"))
	}

	for _, tc := range []struct {
		name, run string
		ok        bool
		alive     bool
		errPart   string
	}{
		{"a stale run's stop is refused", "r0", false, true, "conflict"},
		{"the current run's stop ends it", "r1", true, false, ""},
		{"stopping it again is fine", "r1", true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ack := stop("m", tc.run)
			require.Equal(t, tc.ok, ack.OK, ack.Error)
			require.Equal(t, tc.errPart, string(ack.Code))
			require.Equal(t, tc.alive, alive(pid))
		})
	}

	// An agent still running when the container stops is stopped with it.
	require.True(t, start("t", "r1", schemas.RoleTriage).OK)
	pid = sleeperPid(t, out, "t", "r1")
	require.True(t, alive(pid))
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "a clean shutdown")
		done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("RunContainer did not return")
	}
	require.False(t, alive(pid), "no agent outlives its container")
}
