package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator"
	"github.com/stretchr/testify/require"
)

// clusterLeaseTTL is the lease of the fault test's coordinators: short,
// so a killed coordinator's towns move within moments.
const clusterLeaseTTL = 3 * time.Second

// TestClusterFaultsLoseNothing runs real nats-server processes (3 nodes)
// and two real `gastown coordinator` processes on them, a loaded town (16
// callers, a rotation every 300 ms) and a working town (a real container
// whose sim agents work a convoy), and then, under that load: SIGKILLs a
// node and starts it again; SIGKILLs a coordinator and starts it again;
// restarts all three nodes one at a time. Every call succeeds (retried
// while it meets no coordinator or a dropped connection), none fails
// with unauthenticated, the killed coordinator's towns keep rotating on
// the other, no bead is lost or left half-done, and the convoys land.
func TestClusterFaultsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("real-process cluster faults: not with -short")
	}
	c := clustertest.Start(t, clustertest.Options{})
	url := c.URL()
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw"}
	coordArgs := []string{"coordinator", "--nats-url", url, "--cluster-creds", c.CredsDir(), "--replicas", "3",
		"--token-ttl", "30s", "--refresh-interval", "300ms", "--lease-ttl", clusterLeaseTTL.String(),
		"--heartbeat-interval", "300ms", "--dispatch-cooldown", "500ms", "--max-attempts", "50", "--log-level", "debug",
		"--town-rpc-rate", "1000000"}
	coords := []*process{startProcess(t, vars, coordArgs...), startProcess(t, vars, coordArgs...)}
	defer func() {
		if t.Failed() {
			for i, p := range coords {
				t.Logf("coordinator %d log:\n%s", i+1, tail(p.logs.String(), 200))
				if dir := os.Getenv("GASTOWN_FAULT_LOGS"); dir != "" {
					_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("coordinator-%d.log", i+1)), []byte(p.logs.String()), 0o600)
				}
			}
		}
	}()
	admin := func(args ...string) string {
		t.Helper()
		var out, last string
		require.Eventually(t, func() bool {
			o, e, err := run(t, vars, append(args, "--server", url, "--timeout", "10s")...)
			out, last = o, e
			if err != nil {
				msg := fmt.Sprintf("exit %d: %s %s", exitCode(err), printed(err), e)
				if msg != last && !strings.Contains(msg, "no responders") {
					t.Logf("gastown %v: %s", args, msg) // each new failure once
				}
				last = msg
			}
			return err == nil
		}, time.Minute, 100*time.Millisecond, "gastown %v: %s", args, last)
		return out
	}
	status := func(town string) coordinator.TownStatus {
		var st coordinator.TownStatus
		require.NoError(t, json.Unmarshal([]byte(admin("status", "--town", town, "--json")), &st))
		return st
	}

	load := startLoadedTown(t, vars, url, admin, time.Minute)
	startWorkingTown(t, vars, url, admin)
	work := newConvoyWork(t, admin, slinger(t, vars, url, status))
	rotating := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		target := load.rotations() + 3
		require.Eventually(t, func() bool { return load.rotations() >= target }, 2*time.Minute, 10*time.Millisecond,
			"the loaded container keeps getting tokens %s", what)
		return time.Since(start)
	}
	settled := func(what string) {
		t.Helper()
		untilNoProblem(t, 2*time.Minute, what, func() string { return work.w.check(status("work")) })
	}
	work.batch(3)
	rotating("at first")

	// A node dies.
	c.Kill(0)
	rotating("with a node killed")
	settled("with a node killed")
	c.Restart(0)
	c.WaitReady()
	work.batch(2)

	// The coordinator running the loaded town's loops dies; the other
	// takes the town over once the lease lapses.
	victim := holderOf(coords, "load")
	coords[victim].kill()
	took := rotating("with its coordinator killed")
	t.Logf("after the kill of the coordinator holding the town, rotation resumed within %s (lease TTL %s)", took.Round(10*time.Millisecond), clusterLeaseTTL)
	settled("with a coordinator killed")
	coords[victim].start()

	// A rolling restart of every node.
	for i := range c.URLs() {
		c.Stop(i)
		rotating(fmt.Sprintf("with node %d stopped", i+1))
		c.Restart(i)
		c.WaitReady()
	}
	work.batch(2)

	work.requireLanded(status)
	load.stop()
	t.Logf("the loaded container held %d tokens; %d calls ok (%d attempts retried), %d failed, %d unauthenticated; %d beads",
		load.rotations(), load.ok.Load(), load.retried.Load(), load.failed.Load(), load.unauth.Load(), len(work.w.beads))
	require.Zero(t, load.unauth.Load(), "calls failed with unauthenticated: %v", load.firstUnauth.Load())
	require.Zero(t, load.failed.Load(), "calls never succeeded: %v", load.firstFailed.Load())
	require.Positive(t, load.ok.Load())
}

// holderOf is the index of the coordinator process that holds town's
// lease, by their debug logs: the one whose last word on the lease is
// that it took it.
func holderOf(coords []*process, town string) int {
	for i, p := range coords {
		logs := p.logs.String()
		taken := strings.LastIndex(logs, `msg="lease taken" lease=town.`+town)
		if taken >= 0 && taken > strings.LastIndex(logs, `msg="lease given up" lease=town.`+town) &&
			taken > strings.LastIndex(logs, `msg="lease lost" lease=town.`+town) {
			return i
		}
	}
	return 0
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
