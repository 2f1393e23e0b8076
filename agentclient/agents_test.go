package agentclient_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// gitRepo makes a repository with one commit on main, usable as a rig.
func gitRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "init"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
	}
	return dir
}

type containerRun struct {
	cancel context.CancelFunc
	done   chan error
	work   string
	token  string
}

// runContainer runs RunContainer for town with the test agent script for
// every role, until the test ends; mod changes its configuration.
func runContainer(t *testing.T, h *coordinatortest.Harness, town string, grace time.Duration, mod ...func(*agentclient.ContainerConfig)) *containerRun {
	t.Helper()
	tok, _, err := h.Issuer.MintContainer(town, "", time.Hour)
	require.NoError(t, err)
	script, err := filepath.Abs("testdata/agent.sh")
	require.NoError(t, err)
	cr := &containerRun{done: make(chan error, 1), work: t.TempDir(), token: tok}
	ctx, cancel := context.WithCancel(context.Background())
	cr.cancel = cancel
	cmds := map[string][]string{}
	for _, r := range []string{schemas.RoleMayor, schemas.RolePolecat, schemas.RoleRefinery, schemas.RoleTriage} {
		cmds[r] = []string{script}
	}
	cfg := agentclient.ContainerConfig{
		Source:            agentclient.Config{URL: h.URL(), Token: tok, ContainerID: "c-" + town, Logger: bustest.Logger(t)},
		Runner:            agentclient.RunnerConfig{WorkDir: cr.work, Commands: cmds, StopGrace: grace},
		HeartbeatInterval: 50 * time.Millisecond,
	}
	for _, m := range mod {
		m(&cfg)
	}
	go func() { cr.done <- agentclient.RunContainer(ctx, cfg) }()
	t.Cleanup(func() { cr.stop(t) })
	// Ready when its dispatch subscription answers.
	require.Eventually(t, func() bool {
		_, err := h.Conn().Request("gastown.town."+town+".dispatch", []byte("{}"), time.Second)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	return cr
}

func (cr *containerRun) stop(t *testing.T) {
	cr.cancel()
	select {
	case err := <-cr.done:
		require.NoError(t, err)
		cr.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("the container did not stop")
	}
}

func dispatch(t *testing.T, h *coordinatortest.Harness, req schemas.StartAgent) (schemas.StartAgentResult, []byte) {
	t.Helper()
	body, err := schemas.Encode(&req)
	require.NoError(t, err)
	m, err := h.Conn().Request("gastown.town."+req.TownID+".dispatch", body, 30*time.Second)
	require.NoError(t, err)
	var res schemas.StartAgentResult
	require.NoError(t, schemas.Decode(m.Data, &res))
	return res, m.Data
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// TestDispatchStartsAgentInWorkspace: a dispatched agent runs in its own
// workspace (a clone on its branch, or an empty directory), sees its
// environment, never the token, and logs to its run's log file.
func TestDispatchStartsAgentInWorkspace(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 50 * time.Millisecond}) // the interval containers use
	repo := gitRepo(t)
	out := t.TempDir()
	t.Setenv(agentclient.EnvContainerToken, "must-never-reach-an-agent")
	cr := runContainer(t, h, "W", 5*time.Second)

	for _, tc := range []struct {
		name, role, branch string
		ws                 schemas.Workspace
	}{
		{"polecat on a new branch", schemas.RolePolecat, "polecat/p1/b1", schemas.Workspace{Kind: schemas.WorkspaceGit, GitURL: repo, Branch: "polecat/p1/b1", DefaultBranch: "main"}},
		{"refinery on the default branch", schemas.RoleRefinery, "main", schemas.Workspace{Kind: schemas.WorkspaceGit, GitURL: repo, Branch: "main", DefaultBranch: "main"}},
		{"mayor in an empty directory", schemas.RoleMayor, "", schemas.Workspace{Kind: schemas.WorkspaceEmpty}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent := strings.ReplaceAll(tc.role, "/", "")
			req := schemas.StartAgent{TownID: "W", RigID: "r", AgentID: agent, RunID: "run1", Role: tc.role, BeadID: "b1",
				Prompt: "do it", Workspace: tc.ws, Env: map[string]string{"AGENT_OUT": out}}
			res, raw := dispatch(t, h, req)
			require.True(t, res.OK, res.Error)
			require.NotContains(t, string(raw), cr.token, "the reply never holds the token")
			base := filepath.Join(out, agent+"-run1")
			require.Eventually(t, func() bool { _, err := os.Stat(base + ".ready"); return err == nil }, 20*time.Second, 10*time.Millisecond)
			env := readEnv(t, base+".env")
			for k, v := range map[string]string{
				"GASTOWN_TOWN_ID": "W", "GASTOWN_RIG_ID": "r", "GASTOWN_AGENT_ID": agent, "GASTOWN_AGENT_ROLE": tc.role,
				"GASTOWN_RUN_ID": "run1", "GASTOWN_NATS_URL": h.URL(), "GASTOWN_TOKEN_FILE": filepath.Join(cr.work, "token"),
			} {
				require.Equal(t, v, env[k], k)
			}
			envText, _ := os.ReadFile(base + ".env")
			require.NotContains(t, string(envText), cr.token, "the token is never in an agent's environment")
			require.NotContains(t, string(envText), "must-never-reach-an-agent")
			require.NotContains(t, string(envText), agentclient.EnvContainerToken)
			pwd, _ := os.ReadFile(base + ".pwd")
			require.Contains(t, string(pwd), filepath.Join(cr.work, "workspaces", agent, "run1"))
			branch, _ := os.ReadFile(base + ".branch")
			require.Equal(t, tc.branch, strings.TrimSpace(string(branch)))
			require.Eventually(t, func() bool {
				b, _ := os.ReadFile(filepath.Join(cr.work, "logs", agent+"-run1.log"))
				return strings.Contains(string(b), "run run1 started")
			}, 10*time.Second, 10*time.Millisecond, "output goes to the run's log file")
		})
	}
	// A request carrying a token-like env variable is refused.
	res, _ := dispatch(t, h, schemas.StartAgent{TownID: "W", RigID: "r", AgentID: "x", RunID: "r1", Role: schemas.RoleMayor,
		Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}, Env: map[string]string{"MY_TOKEN": "x"}})
	require.False(t, res.OK)
	require.Contains(t, res.Error, "MY_TOKEN")
}

// TestRunnerRunsAndStops: dispatch is idempotent by run id, a new run
// replaces the old, a stale stop is refused, SIGKILL follows an ignored
// SIGTERM, and an exit is reported once with its code. The grace period
// is on a manual clock: the test ends it once SIGTERM was ignored.
func TestRunnerRunsAndStops(t *testing.T) {
	out := t.TempDir()
	script, _ := filepath.Abs("testdata/agent.sh")
	const grace = 2 * time.Second
	clk := clock.NewManual(time.Now())
	r, err := agentclient.NewRunner("T", agentclient.RunnerConfig{WorkDir: t.TempDir(),
		Commands: map[string][]string{schemas.RoleMayor: {script}}, StopGrace: grace, Clock: clk})
	require.NoError(t, err)
	defer r.Close()
	ctx := context.Background()
	start := func(agent, run string, env map[string]string) schemas.StartAgentResult {
		env["AGENT_OUT"] = out
		return r.Start(ctx, schemas.StartAgent{TownID: "T", RigID: "r", AgentID: agent, RunID: run, Role: schemas.RoleMayor,
			Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}, Env: env})
	}
	pids := func(agent, run string) bool {
		_, err := os.Stat(filepath.Join(out, agent+"-"+run+".ready"))
		return err == nil
	}

	require.True(t, start("a", "r1", map[string]string{}).OK)
	require.True(t, start("a", "r1", map[string]string{}).OK, "the same run again: ok, not a second process")
	require.Eventually(t, func() bool { return pids("a", "r1") }, 10*time.Second, 10*time.Millisecond)
	require.ErrorContains(t, r.Stop(ctx, "a", "old", "late"), "conflict", "a stale stop never kills its successor")
	agents, _ := r.Beat()
	require.Len(t, agents, 1)
	require.Equal(t, schemas.RunRunning, agents[0].Status)

	require.True(t, start("a", "r2", map[string]string{}).OK, "a new run replaces the old one")
	var exits []schemas.AgentExit
	require.Eventually(t, func() bool { _, e := r.Beat(); exits = append(exits, e...); return len(exits) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "r1", exits[0].RunID)
	require.Equal(t, 128+15, exits[0].ExitCode, "ended by SIGTERM: 128 + 15")

	// SIGTERM ignored: SIGKILL after the grace period.
	require.True(t, start("b", "r1", map[string]string{"AGENT_IGNORE_TERM": "1"}).OK)
	require.Eventually(t, func() bool { return pids("b", "r1") }, 10*time.Second, 10*time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop(ctx, "b", "r1", "test") }()
	// SIGTERM noted, and the grace period running: let it pass.
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(out, "b-r1.term"))
		return err == nil && clk.Waiters() == 1
	}, 10*time.Second, 5*time.Millisecond, "SIGTERM came first, and was ignored")
	select {
	case err := <-stopped:
		t.Fatalf("the stop ended before its grace period: %v", err)
	default:
	}
	clk.Advance(grace)
	require.NoError(t, <-stopped)
	_, err = os.Stat(filepath.Join(out, "b-r1.term"))
	require.NoError(t, err, "SIGTERM came first, and was ignored")
	pid, err := os.ReadFile(filepath.Join(out, "b-r1.pid"))
	require.NoError(t, err)
	require.Error(t, exec.Command("kill", "-0", strings.TrimSpace(string(pid))).Run(), "then SIGKILL ended it")
	require.Eventually(t, func() bool {
		_, e := r.Beat()
		for _, x := range e {
			if x.AgentID == "b" {
				require.Equal(t, 128+9, x.ExitCode, "ended by SIGKILL: 128 + 9")
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)

	// An exit code is reported once.
	require.True(t, start("c", "r1", map[string]string{"AGENT_EXIT": "3"}).OK)
	exits = nil
	require.Eventually(t, func() bool {
		_, e := r.Beat()
		for _, x := range e {
			if x.AgentID == "c" {
				exits = append(exits, x)
			}
		}
		return len(exits) == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 3, exits[0].ExitCode)
	_, again := r.Beat()
	require.Empty(t, again, "reported once")
	// Its exit reported, the run is forgotten; stopping it is still fine
	// (a heartbeat may go out between two stops at any time).
	require.NoError(t, r.Stop(ctx, "c", "r1", "again"))
	require.ErrorContains(t, r.Stop(ctx, "nobody", "r1", "test"), "no run here")
}

// TestHeartbeatsListAgents: a container's heartbeats reach the bus, list
// its agents and never hold a token.
func TestHeartbeatsListAgents(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 50 * time.Millisecond}) // the interval containers use
	got := make(chan schemas.Heartbeat, 16)
	raw := make(chan []byte, 16)
	sub, err := h.Conn().Subscribe("gastown.town.H.heartbeat", func(m *nats.Msg) {
		var hb schemas.Heartbeat
		if schemas.Decode(m.Data, &hb) == nil {
			select {
			case got <- hb:
				raw <- m.Data
			default:
			}
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	cr := runContainer(t, h, "H", time.Second)
	res, _ := dispatch(t, h, schemas.StartAgent{TownID: "H", RigID: "r", AgentID: "m", RunID: "r1", Role: schemas.RoleMayor,
		Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}, Env: map[string]string{"AGENT_OUT": t.TempDir()}})
	require.True(t, res.OK, res.Error)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case hb := <-got:
			b := <-raw
			require.NotContains(t, string(b), cr.token)
			require.Equal(t, "c-H", hb.ContainerID)
			if len(hb.Agents) == 1 && hb.Agents[0].AgentID == "m" && hb.Agents[0].RunID == "r1" {
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat listed the agent")
		}
	}
}

// TestRunnerConcurrentStartsAndClose: two runs of one agent dispatched at
// once leave one process, and Close (even during starts) ends every agent.
func TestRunnerConcurrentStartsAndClose(t *testing.T) {
	out := t.TempDir()
	script, _ := filepath.Abs("testdata/agent.sh")
	r, err := agentclient.NewRunner("T", agentclient.RunnerConfig{WorkDir: t.TempDir(),
		Commands: map[string][]string{schemas.RoleMayor: {script}}, StopGrace: time.Second})
	require.NoError(t, err)
	start := func(run string) schemas.StartAgentResult {
		return r.Start(context.Background(), schemas.StartAgent{TownID: "T", RigID: "r", AgentID: "a", RunID: run, Role: schemas.RoleMayor,
			Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}, Env: map[string]string{"AGENT_OUT": out}})
	}
	results := make(chan schemas.StartAgentResult, 8)
	for _, run := range []string{"r1", "r2", "r1", "r2"} {
		go func() { results <- start(run) }()
	}
	for range 4 {
		require.True(t, (<-results).OK)
	}
	agents, _ := r.Beat()
	require.Len(t, agents, 1, "one run of the agent")
	// Starts racing with Close: none outlives it.
	for _, run := range []string{"r3", "r4"} {
		go func() { results <- start(run) }()
	}
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(60 * time.Second):
		t.Fatal("Close hung")
	}
	for range 2 {
		<-results
	}
	pids, _ := filepath.Glob(filepath.Join(out, "*.pid"))
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		require.Error(t, exec.Command("kill", "-0", strings.TrimSpace(string(b))).Run(), "%s still runs after Close", filepath.Base(p))
	}
}

// TestSlowCloneIsNotDead: a polecat whose rig takes longer to clone than
// the coordinator waits for a heartbeat (3 intervals) is not declared dead
// while it clones: the container's heartbeats list its run as starting
// from the dispatch on. Once cloned, the polecat works on that same run.
// (The dispatches are handled one at a time: the mayor's, waiting behind
// the clone, is not listed and may be declared dead meanwhile.)
func TestSlowCloneIsNotDead(t *testing.T) {
	const interval = 50 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour})
	repo := gitRepo(t)
	// Every clone's checkout holds until the test releases it: a git
	// template whose post-checkout hook waits for a file.
	tmpl, marks := t.TempDir(), t.TempDir()
	cloning, release := filepath.Join(marks, "cloning"), filepath.Join(marks, "release")
	require.NoError(t, os.MkdirAll(filepath.Join(tmpl, "hooks"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tmpl, "hooks", "post-checkout"),
		[]byte("#!/bin/sh\ntouch '"+cloning+"'\nwhile [ ! -e '"+release+"' ]; do sleep 0.02; done\n"), 0o755))
	t.Setenv("GIT_TEMPLATE_DIR", tmpl)
	t.Setenv("AGENT_OUT", t.TempDir())
	runContainer(t, h, "S", time.Second, func(c *agentclient.ContainerConfig) {
		c.Runner.PassEnv = []string{"AGENT_OUT"}
		c.HeartbeatInterval = interval
	})
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) }) // before the container stops, on a failure too
	beats := make(chan schemas.Heartbeat, 256)
	hbSub, err := h.Conn().Subscribe("gastown.town.S.heartbeat", func(m *nats.Msg) {
		var hb schemas.Heartbeat
		if schemas.Decode(m.Data, &hb) == nil {
			beats <- hb
		}
	})
	require.NoError(t, err)
	defer hbSub.Unsubscribe()
	dead := make(chan string, 4)
	evSub, err := h.Conn().Subscribe("gastown.town.S.events", func(m *nats.Msg) {
		var ev schemas.TownEvent
		if schemas.Decode(m.Data, &ev) == nil && ev.Kind == schemas.EventAgentDead {
			dead <- ev.Subject
		}
	})
	require.NoError(t, err)
	defer evSub.Unsubscribe()

	adminBody(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "S"}, nil)
	adminBody(t, h, schemas.AdminRigAdd, schemas.RigAdd{TownID: "S", RigID: "r", GitURL: repo}, nil)
	adminBody(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "S", BeadID: "b", RigID: "r", Title: "work"}, nil)
	slung := make(chan schemas.SlingResult, 1)
	go func() {
		var res schemas.SlingResult
		adminBody(t, h, schemas.AdminSling, schemas.Sling{TownID: "S", BeadID: "b"}, &res)
		slung <- res
	}()
	require.Eventually(t, func() bool { _, err := os.Stat(cloning); return err == nil }, 30*time.Second, 5*time.Millisecond, "the clone starts")
	for len(beats) > 0 { // from the clone on
		<-beats
	}
	// Six heartbeats while the clone holds: five intervals, well over the
	// coordinator's dead-after (three).
	var agent, run string
	for i := range 6 {
		hb := <-beats
		var line *schemas.AgentBeat
		for j := range hb.Agents {
			if hb.Agents[j].Status == schemas.RunStarting {
				line = &hb.Agents[j]
			}
		}
		require.NotNil(t, line, "heartbeat %d during the clone lists its run as starting: %+v", i, hb.Agents)
		if agent == "" {
			agent, run = line.AgentID, line.RunID
		}
		require.Equal(t, []string{agent, run}, []string{line.AgentID, line.RunID})
	}
	for len(dead) > 0 { // the mayor's dispatch waits behind the clone, unlisted: it may be
		if a := <-dead; a == agent {
			t.Fatalf("%s was declared dead while its rig was cloning", a)
		}
	}
	require.NoError(t, os.WriteFile(release, nil, 0o600))
	res := <-slung
	require.True(t, res.Dispatched, res.Error)
	require.Equal(t, agent, res.AgentID)
	var st coordinator.TownStatus
	adminBody(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "S"}, &st)
	for _, a := range st.Agents {
		if a.AgentID == agent {
			require.Equal(t, coordinator.AgentWorking, a.Status)
			require.Equal(t, run, a.RunID, "the run dispatched is the one that works")
		}
	}
	for len(dead) > 0 { // the mayor's dispatch waits behind the clone, unlisted: it may be
		if a := <-dead; a == agent {
			t.Fatalf("%s was declared dead while its rig was cloning", a)
		}
	}
}
