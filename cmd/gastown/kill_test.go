package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/stretchr/testify/require"
)

// process is a `gastown` verb run as a child process, to be killed with
// SIGKILL: no clean shutdown, no lease released, a coordinator's embedded
// NATS server and JetStream store cut off mid-write, a container's agents
// left without their container.
type process struct {
	t    *testing.T
	args []string
	env  []string
	logs lockedBuffer
	cmd  *exec.Cmd
	runs int
}

func startProcess(t *testing.T, vars map[string]string, args ...string) *process {
	p := &process{t: t, args: args, env: os.Environ()}
	for k, v := range vars {
		p.env = append(p.env, k+"="+v)
	}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *process) start() {
	p.t.Helper()
	p.runs++
	fmt.Fprintf(&p.logs, "---- %s run %d ----\n", p.args[0], p.runs)
	p.cmd = exec.Command(binary(p.t), p.args...)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	require.NoError(p.t, p.cmd.Start())
}

// kill sends SIGKILL to the process and to the process groups of its
// children (a container's agents run in their own groups): as if the
// machine died. It reaps the process; safe to call twice.
func (p *process) kill() {
	if p.cmd == nil {
		return
	}
	for _, child := range children(p.cmd.Process.Pid) {
		_ = syscall.Kill(-child, syscall.SIGKILL)
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// children lists the pids whose parent is pid, from /proc.
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		if child, err := strconv.Atoi(filepath.Base(filepath.Dir(path))); err == nil {
			out = append(out, child)
		}
	}
	return out
}

// workState is what a fault may never do to the work of a town: lose a
// bead, reopen a closed one, or leave a bead and an agent disagreeing on
// who works on what once patrol has had its turn.
type workState struct {
	beads  map[string]bool // every bead created, by id
	closed map[string]bool // beads seen closed
}

// check reads the town's status and returns what is wrong with it, or "".
func (w *workState) check(st coordinator.TownStatus) string {
	var bad []string
	have := map[string]coordinator.Bead{}
	for _, b := range st.Beads {
		have[b.BeadID] = b
	}
	agents := map[string]coordinator.Agent{}
	for _, a := range st.Agents {
		agents[a.AgentID] = a
	}
	for id := range w.beads {
		b, ok := have[id]
		switch {
		case !ok:
			bad = append(bad, "bead "+id+" was lost")
		case w.closed[id] && b.Status != coordinator.BeadClosed:
			bad = append(bad, "bead "+id+" was closed and is now "+b.Status.String())
		case b.Status == coordinator.BeadFailed:
			bad = append(bad, "bead "+id+" failed: "+b.Summary)
		}
	}
	for _, b := range st.Beads {
		if !slices.Contains([]coordinator.BeadStatus{coordinator.BeadOpen, coordinator.BeadInProgress, coordinator.BeadInReview, coordinator.BeadClosed, coordinator.BeadFailed}, b.Status) {
			bad = append(bad, fmt.Sprintf("bead %s has status %q", b.BeadID, b.Status))
		}
		if b.Type == coordinator.BeadMergeRequest && b.SourceBead == "" {
			bad = append(bad, "merge request "+b.BeadID+" has no source bead")
		}
		if b.Status == coordinator.BeadInProgress && b.Type == coordinator.BeadIssue {
			if a, ok := agents[b.Assignee]; !ok || a.Hook != b.BeadID {
				bad = append(bad, fmt.Sprintf("bead %s is in progress for %q, whose hook is %q", b.BeadID, b.Assignee, agents[b.Assignee].Hook))
			}
		}
	}
	for _, a := range st.Agents {
		if a.Hook == "" {
			continue
		}
		b, ok := have[a.Hook]
		if !ok || b.Final() || b.Assignee != a.AgentID {
			bad = append(bad, fmt.Sprintf("agent %s is hooked to %s (%s, assigned to %q)", a.AgentID, a.Hook, b.Status, b.Assignee))
		}
	}
	for _, b := range st.Beads {
		if b.Status == coordinator.BeadClosed {
			w.closed[b.BeadID] = true
		}
	}
	return strings.Join(bad, "; ")
}

// untilNoProblem polls problem until it returns "", and fails the test
// with the last problem when timeout passes first.
func untilNoProblem(t *testing.T, timeout time.Duration, what string, problem func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := problem()
		if p == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still wrong after %s: %s", what, timeout, p)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestKilledCoordinatorMidRotation kills the coordinator process (and with
// it the embedded NATS server) with SIGKILL, again and again, while one
// town's container rotates tokens under a steady load of calls and
// another town's polecats work a convoy; every third kill is of that
// container and its agents instead. After every restart: no call
// failed with unauthenticated (every token held is valid: they live far
// longer than an outage), no bead is lost or in a state it should not be
// in, and in the end the convoy lands. GASTOWN_SOAK=1 keeps killing until
// the loaded container has taken 1,000 rotations.
func TestKilledCoordinatorMidRotation(t *testing.T) {
	soak := os.Getenv("GASTOWN_SOAK") != ""
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw"}
	coord := startProcess(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(),
		"--token-ttl", "30s", "--refresh-interval", "300ms", "--lease-ttl", "2s",
		"--heartbeat-interval", "300ms", "--dispatch-cooldown", "500ms", "--max-attempts", "50", "--log-level", "debug",
		"--town-rpc-rate", "1000000") // the loaded town's 16 callers go as fast as they can
	defer func() {
		if t.Failed() {
			t.Logf("coordinator log:\n%s", coord.logs.String())
		}
	}()
	admin := adminCLI(t, vars, url)
	status := func(town string) coordinator.TownStatus {
		var st coordinator.TownStatus
		require.NoError(t, json.Unmarshal([]byte(admin("status", "--town", town, "--json")), &st))
		return st
	}

	// The loaded town: a container in this process, 16 callers; the
	// working town: a container running `gastown agent sim` agents.
	load := startLoadedTown(t, vars, url, admin, 0)
	cont := startWorkingTown(t, vars, url, admin)
	work := newConvoyWork(t, admin, slinger(t, vars, url, status))
	work.batch(4)

	kills, limit, rotationsPerKill := 0, 4, int64(3)
	if soak {
		rotationsPerKill = 20
	}
	deadline := time.Now().Add(40 * time.Minute)
	for {
		// Let it rotate and work a while, then kill it mid-rotation (a
		// rotation is always under way: one every 300 ms).
		target := load.rotations() + rotationsPerKill
		require.Eventually(t, func() bool { return load.rotations() >= target }, time.Minute, 10*time.Millisecond,
			"the loaded container keeps getting tokens")
		if soak && (load.rotations() >= 1000 || time.Now().After(deadline)) || !soak && kills >= limit {
			break
		}
		// Every third kill takes the working town's container and its
		// agents (a machine dying); a new one, on a fresh disk, takes over.
		victim := coord
		if kills%3 == 2 {
			victim = cont
			victim.args = slices.Clone(victim.args)
			victim.args[slices.Index(victim.args, "--workdir")+1] = t.TempDir()
		}
		victim.kill()
		kills++
		victim.start()
		untilNoProblem(t, time.Minute, fmt.Sprintf("after kill %d", kills), func() string { return work.w.check(status("work")) })
		if soak && work.unlanded(status("work")) == "" {
			work.batch(2)
		}
	}
	work.requireLanded(status)
	load.stop()
	t.Logf("%d kills; the loaded container held %d tokens and moved connections %d times; %d calls ok, %d unauthenticated, %d failed while the coordinator was down; %d beads",
		kills, load.rotations(), load.src.Switches(), load.ok.Load(), load.unauth.Load(), load.failed.Load(), len(work.w.beads))
	require.Zero(t, load.unauth.Load(), "calls failed with unauthenticated: %v", load.firstUnauth.Load())
	require.Positive(t, load.ok.Load())
}
