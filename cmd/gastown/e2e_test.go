package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// natsConnect connects as a town's container.
func natsConnect(url, token, town string) (*nats.Conn, error) {
	t, err := schemas.ForTown(town)
	if err != nil {
		return nil, err
	}
	return nats.Connect(url, nats.Token(token), nats.CustomInboxPrefix(t.Inbox()), nats.MaxReconnects(0))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the gastown binary once, for containers to run agents
// ("gastown agent sim") as real child processes.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gastown-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gastown")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// bareRepo makes a bare repository with one commit on main: a rig.
func bareRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	repo, seed := filepath.Join(dir, "app.git"), filepath.Join(dir, "seed")
	for _, c := range [][]string{
		{"git", "init", "-q", "--bare", "-b", "main", repo},
		{"git", "clone", "-q", repo, seed},
		{"git", "-C", seed, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "init"},
		{"git", "-C", seed, "push", "-q", "origin", "HEAD:main"},
	} {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", c, out)
	}
	return repo
}

// daemon runs a Run verb in the background until the test ends.
func daemon(t *testing.T, vars map[string]string, args ...string) *lockedBuffer {
	t.Helper()
	logs, stop := stoppable(t, vars, args...)
	t.Cleanup(stop)
	return logs
}

// stoppable runs a Run verb in the background; stop ends it and checks it
// stopped cleanly (safe to call twice).
func stoppable(t *testing.T, vars map[string]string, args ...string) (*lockedBuffer, func()) {
	t.Helper()
	env, _, logs := envOf(vars)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, env) }()
	var once sync.Once
	return logs, func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "%s stops cleanly", args[0])
			case <-time.After(60 * time.Second):
				t.Errorf("%s did not stop", args[0])
			}
		})
	}
}

// adminCLI runs an admin verb against the coordinator at url until it
// succeeds (the coordinator may still be starting) and returns its output.
func adminCLI(t *testing.T, vars map[string]string, url string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		var out string
		require.Eventually(t, func() bool {
			o, _, err := run(t, vars, append(args, "--server", url, "--timeout", "5s")...)
			out = o
			return err == nil
		}, 20*time.Second, 50*time.Millisecond, "gastown %v", args)
		return out
	}
}

// slingOrHooked slings a bead. The container may not be connected yet:
// then sling exits 15 with the bead hooked, to be dispatched as soon as the
// container connects.
func slingOrHooked(t *testing.T, vars map[string]string, args ...string) {
	t.Helper()
	_, _, err := run(t, vars, append(append([]string{"sling"}, args...), "--timeout", "5s")...)
	if err != nil {
		require.Equal(t, 15, exitCode(err), "%v", printed(err))
		require.Contains(t, printed(err), "dispatched as soon as the town's container connects")
	}
}

var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}`)

// TestEndToEndSimFlow runs the whole flow with real processes: the
// coordinator, a container whose agents are `gastown agent sim`, a convoy
// of three beads slung, worked, merged by the refinery, and landed. All of
// it at debug level: no token and no secret appears in any log or reply.
func TestEndToEndSimFlow(t *testing.T) {
	bin := binary(t)
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{
		"GASTOWN_JWT_SECRET":     testSecret,
		"GASTOWN_ADMIN_PASSWORD": "admin-pw-e2e",
		"GASTOWN_OPS_PASSWORD":   "ops-pw-e2e",
	}
	coordLogs := daemon(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(), "--log-level", "debug",
		"--heartbeat-interval", "500ms")
	var replies strings.Builder
	call := adminCLI(t, vars, url)
	admin := func(args ...string) string {
		out := call(args...)
		replies.WriteString(out)
		return out
	}
	repo := bareRepo(t)
	admin("town", "create", "--town", "e2e", "--owner", "alice")
	admin("rig", "add", "--town", "e2e", "--rig", "app", "--git", repo, "--branch", "main")
	token, _, err := run(t, vars, "token", "mint", "--town", "e2e", "--user", "alice")
	require.NoError(t, err)
	token = strings.TrimSpace(token)

	work := t.TempDir()
	sim := bin + " agent sim --work 200ms --log-level debug"
	containerVars := map[string]string{"GASTOWN_CONTAINER_TOKEN": token}
	contLogs := daemon(t, containerVars, "container", "--server", url, "--workdir", work, "--heartbeat", "200ms",
		"--log-level", "debug", "--polecat-cmd", sim, "--refinery-cmd", sim, "--triage-cmd", sim, "--mayor-cmd", sim)

	for _, b := range []string{"one", "two", "three"} {
		admin("bead", "create", "--town", "e2e", "--rig", "app", "--id", b, "--title", "Add "+b)
	}
	var convoy coordinator.Bead
	require.NoError(t, json.Unmarshal([]byte(admin("convoy", "create", "--town", "e2e", "--title", "Three", "--beads", "one,two,three")), &convoy))
	for _, b := range []string{"one", "two", "three"} {
		slingOrHooked(t, vars, "--town", "e2e", "--bead", b, "--server", url)
	}
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		if json.Unmarshal([]byte(admin("status", "--town", "e2e", "--json")), &st) != nil {
			return false
		}
		for _, b := range st.Beads {
			if b.BeadID == convoy.BeadID {
				return b.Landed
			}
		}
		return false
	}, 90*time.Second, 200*time.Millisecond, "the convoy lands\ncontainer log:\n%s", contLogs.String())

	// The merges are on main.
	out, err := exec.Command("git", "--git-dir", repo, "log", "--oneline", "main").CombinedOutput()
	require.NoError(t, err)
	for _, b := range []string{"one", "two", "three"} {
		require.Contains(t, string(out), "Merge polecat/")
		require.Contains(t, string(out), "sim: Add "+b)
	}

	// gastown tool, as an agent inside the container calls it: the token
	// from the container's token file, the identity from the environment,
	// an exit status per error code.
	toolVars := func(agent, rig string) map[string]string {
		return map[string]string{"GASTOWN_TOKEN_FILE": filepath.Join(work, "token"), "GASTOWN_NATS_URL": url,
			"GASTOWN_AGENT_ID": agent, "GASTOWN_RIG_ID": rig}
	}
	o, _, err := run(t, toolVars("mayor", "town"), "tool", "beads.list", "type=issue")
	require.NoError(t, err)
	var listed []coordinator.Bead
	require.NoError(t, json.Unmarshal([]byte(o), &listed))
	ids := map[string]bool{}
	for _, b := range listed {
		ids[b.BeadID] = true
	}
	for _, b := range []string{"one", "two", "three"} {
		require.True(t, ids[b], "beads.list lists %s", b)
	}
	replies.WriteString(o)
	for _, tc := range []struct {
		agent, rig string
		args       []string
		code       int
	}{
		{"toast", "app", []string{"tool", "rigs.list"}, 11},
		{"mayor", "town", []string{"tool", "bead.get", "beadId=nope"}, 13},
		{"mayor", "town", []string{"tool", "bead.get", "beadId=a.b"}, 12},
		{"ghost", "app", []string{"tool", "prime"}, 11},
		{"mayor", "town", []string{"tool", "prime", "--json", "not json"}, 2},
	} {
		o, e, err := run(t, toolVars(tc.agent, tc.rig), tc.args...)
		require.Equal(t, tc.code, exitCode(err), "%v: %v", tc.args, err)
		replies.WriteString(o + e + printed(err))
	}

	// No token and no secret anywhere: coordinator and container logs,
	// every agent's log, every reply.
	texts := map[string]string{"coordinator log": coordLogs.String(), "container log": contLogs.String(), "replies": replies.String()}
	agentLogs, _ := filepath.Glob(filepath.Join(work, "logs", "*.log"))
	require.NotEmpty(t, agentLogs)
	for _, p := range agentLogs {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		texts[filepath.Base(p)] = string(b)
	}
	require.Contains(t, coordLogs.String(), "level=DEBUG", "the logs are at debug level")
	for name, text := range texts {
		require.NotContains(t, text, token, name)
		require.Empty(t, jwtPattern.FindString(text), "%s holds something shaped like a token", name)
		for _, secret := range []string{testSecret, "admin-pw-e2e", "ops-pw-e2e"} {
			require.NotContains(t, text, secret, name)
		}
	}
}

// TestKilledContainerWorkRedispatched kills a container process (and its
// agent) with SIGKILL: within 3 heartbeat intervals the coordinator marks
// the agent dead and dispatches its work again, with a new run id, to a new
// container; a late heartbeat from the old run changes nothing.
func TestKilledContainerWorkRedispatched(t *testing.T) {
	bin := binary(t)
	script, err := filepath.Abs("../../agentclient/testdata/agent.sh")
	require.NoError(t, err)
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw"}
	coordLogs := daemon(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(),
		"--heartbeat-interval", "500ms", "--dispatch-cooldown", "100ms")
	admin := adminCLI(t, vars, url)
	admin("town", "create", "--town", "k")
	admin("rig", "add", "--town", "k", "--rig", "r", "--git", bareRepo(t))
	admin("bead", "create", "--town", "k", "--rig", "r", "--id", "b", "--title", "work")
	token, _, err := run(t, vars, "token", "mint", "--town", "k")
	require.NoError(t, err)
	out := t.TempDir()
	container := func() *exec.Cmd {
		cmd := exec.Command(bin, "container", "--server", url, "--workdir", t.TempDir(), "--heartbeat", "100ms",
			"--polecat-cmd", script, "--mayor-cmd", script, "--pass-env", "AGENT_OUT") // agents get only what is passed
		cmd.Env = append(os.Environ(), "GASTOWN_CONTAINER_TOKEN="+strings.TrimSpace(token), "AGENT_OUT="+out)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			for _, child := range children(cmd.Process.Pid) { // its agents, in their own groups
				_ = syscall.Kill(-child, syscall.SIGKILL)
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		return cmd
	}
	agentRun := func(agent string) (run string, status coordinator.AgentStatus) {
		var st coordinator.TownStatus
		require.NoError(t, json.Unmarshal([]byte(admin("status", "--town", "k", "--json")), &st))
		for _, a := range st.Agents {
			if a.AgentID == agent {
				return a.RunID, a.Status
			}
		}
		return "", ""
	}
	started := func(agent, run string) bool {
		_, err := os.Stat(filepath.Join(out, agent+"-"+run+".ready"))
		return run != "" && err == nil
	}

	c1 := container()
	require.Eventually(t, func() bool {
		var res schemas.RotateResult
		return json.Unmarshal([]byte(admin("token", "rotate", "--town", "k")), &res) == nil && res.Acknowledged
	}, 20*time.Second, 100*time.Millisecond, "the container connects")
	var sling schemas.SlingResult
	require.NoError(t, json.Unmarshal([]byte(admin("sling", "--town", "k", "--bead", "b")), &sling))
	require.True(t, sling.Dispatched, sling.Error)
	p := sling.AgentID
	run1, _ := agentRun(p)
	require.Eventually(t, func() bool { return started(p, run1) }, 20*time.Second, 20*time.Millisecond)

	// Kill the container and its agent, as a machine dying would.
	pid, err := os.ReadFile(filepath.Join(out, p+"-"+run1+".pid"))
	require.NoError(t, err)
	agentPid, err := strconv.Atoi(strings.TrimSpace(string(pid)))
	require.NoError(t, err)
	require.Greater(t, agentPid, 1)
	require.NoError(t, c1.Process.Kill())
	require.NoError(t, syscall.Kill(-agentPid, syscall.SIGKILL)) // its process group
	killedAt := time.Now()
	container()

	var run2 string
	require.Eventually(t, func() bool {
		r, status := agentRun(p)
		run2 = r
		return r != run1 && status == coordinator.AgentWorking && started(p, r)
	}, 90*time.Second, 50*time.Millisecond, "the work runs again in the new container\n%s", coordLogs.String())
	t.Logf("work re-dispatched %s after the kill (3 heartbeat intervals = 1.5s)", time.Since(killedAt).Round(time.Millisecond))
	require.Contains(t, coordLogs.String(), "agent dead: missed heartbeats")
	require.Contains(t, coordLogs.String(), "run="+run1)

	// A late heartbeat from the dead run changes nothing.
	nc, err := natsConnect(url, strings.TrimSpace(token), "k")
	require.NoError(t, err)
	defer nc.Close()
	late := fmt.Sprintf(`{"type":"gastown.v1.heartbeat","townId":"k","containerId":"old","sentAt":%q,"agents":[{"agentId":%q,"runId":%q,"status":"running","lastActivityAt":%q}],"exits":[{"agentId":%q,"runId":%q,"exitCode":1,"endedAt":%q}]}`,
		time.Now().UTC().Format(time.RFC3339), p, run1, time.Now().UTC().Format(time.RFC3339), p, run1, time.Now().UTC().Format(time.RFC3339))
	require.NoError(t, nc.Publish("gastown.town.k.heartbeat", []byte(late)))
	require.NoError(t, nc.Flush())
	require.Eventually(t, func() bool { return strings.Contains(coordLogs.String(), "stale exit dropped") }, 10*time.Second, 20*time.Millisecond)
	r, status := agentRun(p)
	require.Equal(t, run2, r)
	require.Equal(t, coordinator.AgentWorking, status)
}

// TestWorkSurvivesCoordinatorRestart: the coordinator restarts while
// polecats work; nothing is lost, nothing is dispatched twice, and the
// convoy still lands.
func TestWorkSurvivesCoordinatorRestart(t *testing.T) {
	bin := binary(t)
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw"}
	dataDir := t.TempDir()
	coordArgs := []string{"coordinator", "--listen", addr, "--data-dir", dataDir, "--heartbeat-interval", "300ms"}
	_, stop := stoppable(t, vars, coordArgs...)
	admin := adminCLI(t, vars, url)
	repo := bareRepo(t)
	admin("town", "create", "--town", "rs")
	admin("rig", "add", "--town", "rs", "--rig", "app", "--git", repo)
	token, _, err := run(t, vars, "token", "mint", "--town", "rs")
	require.NoError(t, err)
	work := t.TempDir()
	sim := bin + " agent sim --work 3s"
	contLogs := daemon(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": strings.TrimSpace(token)}, "container", "--server", url,
		"--workdir", work, "--heartbeat", "150ms", "--polecat-cmd", sim, "--refinery-cmd", bin+" agent sim --work 100ms")
	require.Eventually(t, func() bool {
		var res schemas.RotateResult
		return json.Unmarshal([]byte(admin("token", "rotate", "--town", "rs")), &res) == nil && res.Acknowledged
	}, 20*time.Second, 100*time.Millisecond, "the container connects")
	for _, b := range []string{"x", "y"} {
		admin("bead", "create", "--town", "rs", "--rig", "app", "--id", b, "--title", "Do "+b)
	}
	var convoy coordinator.Bead
	require.NoError(t, json.Unmarshal([]byte(admin("convoy", "create", "--town", "rs", "--title", "two", "--beads", "x,y")), &convoy))
	for _, b := range []string{"x", "y"} {
		var res schemas.SlingResult
		require.NoError(t, json.Unmarshal([]byte(admin("sling", "--town", "rs", "--bead", b)), &res))
		require.True(t, res.Dispatched, res.Error)
	}

	// Restart the coordinator while the polecats work.
	stop()
	coordLogs, stop2 := stoppable(t, vars, coordArgs...)
	t.Cleanup(stop2)

	landed := assert.Eventually(t, func() bool {
		var st coordinator.TownStatus
		if json.Unmarshal([]byte(admin("status", "--town", "rs", "--json")), &st) != nil {
			return false
		}
		for _, b := range st.Beads {
			if b.BeadID == convoy.BeadID {
				return b.Landed
			}
		}
		return false
	}, 90*time.Second, 200*time.Millisecond, "the convoy lands after the restart")
	if !landed {
		t.Fatalf("container log:\n%s\ncoordinator log:\n%s", contLogs.String(), coordLogs.String())
	}
	// Each polecat ran once: one log file per bead's polecat run.
	logs, _ := filepath.Glob(filepath.Join(work, "logs", "*.log"))
	polecatRuns, texts := 0, ""
	for _, l := range logs {
		if !strings.Contains(filepath.Base(l), "refinery") {
			polecatRuns++
			b, _ := os.ReadFile(l)
			texts += filepath.Base(l) + ":\n" + string(b) + "\n"
		}
	}
	require.Equal(t, 2, polecatRuns, "nothing was dispatched twice:\n%s", texts)
}
