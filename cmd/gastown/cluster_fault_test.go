package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
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

	admin("town", "create", "--town", "load")
	loadToken, _, err := run(t, vars, "token", "mint", "--town", "load")
	require.NoError(t, err)
	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: url, Token: strings.TrimSpace(loadToken), ContainerID: "load", RequestTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	defer src.Close()
	client := agentclient.NewClient(src, "", "")
	var ok, retried, failed, unauth atomic.Int64
	var firstFailure atomic.Value
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				// One call: retried until it succeeds, for up to a minute.
				callCtx, cancel := context.WithTimeout(ctx, time.Minute)
				for {
					rctx, rcancel := context.WithTimeout(callCtx, 5*time.Second)
					err := client.Call(rctx, schemas.ToolPing, nil, nil)
					rcancel()
					if err == nil {
						ok.Add(1)
						break
					}
					if errors.Is(err, schemas.ErrUnauthenticated) {
						unauth.Add(1)
						firstFailure.CompareAndSwap(nil, err.Error())
					}
					if callCtx.Err() != nil {
						if ctx.Err() == nil {
							failed.Add(1)
							firstFailure.CompareAndSwap(nil, err.Error())
						}
						break
					}
					retried.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
				cancel()
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()

	bin := binary(t)
	repo := bareRepo(t)
	admin("town", "create", "--town", "work")
	admin("rig", "add", "--town", "work", "--rig", "app", "--git", repo)
	workToken, _, err := run(t, vars, "token", "mint", "--town", "work")
	require.NoError(t, err)
	cont := startProcess(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": strings.TrimSpace(workToken)}, "container", "--server", url,
		"--workdir", t.TempDir(), "--heartbeat", "150ms",
		"--polecat-cmd", bin+" agent sim --work 1500ms", "--refinery-cmd", bin+" agent sim --work 100ms",
		"--triage-cmd", bin+" agent sim --work 100ms")
	defer func() {
		if t.Failed() {
			t.Logf("container log:\n%s", tail(cont.logs.String(), 200))
			if dir := os.Getenv("GASTOWN_FAULT_LOGS"); dir != "" {
				_ = os.WriteFile(filepath.Join(dir, "container.log"), []byte(cont.logs.String()), 0o600)
			}
		}
	}()
	// sling slings a bead; a sling whose answer was lost (a node killed
	// under it) may have hooked the bead: then it is not slung again.
	sling := func(id string) {
		t.Helper()
		require.Eventually(t, func() bool {
			if _, _, err := run(t, vars, "sling", "--town", "work", "--bead", id, "--server", url, "--timeout", "10s"); err == nil || exitCode(err) == 15 {
				return true
			} else {
				t.Logf("sling %s: exit %d: %s", id, exitCode(err), printed(err))
			}
			for _, b := range status("work").Beads {
				if b.BeadID == id && b.Status != coordinator.BeadOpen {
					return true
				}
			}
			return false
		}, time.Minute, 100*time.Millisecond, "sling %s", id)
	}
	w := &workState{beads: map[string]bool{}, closed: map[string]bool{}}
	var convoys []string
	batch := func(n int) {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("b%d", len(w.beads)+i)
			admin("bead", "create", "--town", "work", "--rig", "app", "--id", id, "--title", "Do "+id)
			ids = append(ids, id)
		}
		var convoy coordinator.Bead
		require.NoError(t, json.Unmarshal([]byte(admin("convoy", "create", "--town", "work", "--title", "batch", "--beads", strings.Join(ids, ","))), &convoy))
		convoys = append(convoys, convoy.BeadID)
		for _, id := range ids {
			w.beads[id] = true
			sling(id)
		}
		w.beads[convoy.BeadID] = true
	}
	rotating := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		target := src.Adopted() + 3
		require.Eventually(t, func() bool { return src.Adopted() >= target }, 2*time.Minute, 10*time.Millisecond,
			"the loaded container keeps getting tokens %s", what)
		return time.Since(start)
	}
	settled := func(what string) {
		t.Helper()
		untilNoProblem(t, 2*time.Minute, what, func() string { return w.check(status("work")) })
	}
	batch(3)
	rotating("at first")

	// A node dies.
	c.Kill(0)
	rotating("with a node killed")
	settled("with a node killed")
	c.Restart(0)
	c.WaitReady()
	batch(2)

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
	batch(2)

	untilNoProblem(t, 3*time.Minute, "every convoy lands, nothing lost", func() string {
		st := status("work")
		if p := w.check(st); p != "" {
			return p
		}
		for _, b := range st.Beads {
			if slices.Contains(convoys, b.BeadID) && !b.Landed {
				return "convoy " + b.BeadID + " has not landed"
			}
		}
		return ""
	})
	for _, b := range status("work").Beads {
		if w.beads[b.BeadID] && b.Type == coordinator.BeadIssue {
			require.Equal(t, coordinator.BeadClosed, b.Status, "bead %s", b.BeadID)
		}
	}
	stopLoad()
	wg.Wait()
	t.Logf("the loaded container held %d tokens; %d calls ok (%d attempts retried), %d failed, %d unauthenticated; %d beads",
		src.Adopted(), ok.Load(), retried.Load(), failed.Load(), unauth.Load(), len(w.beads))
	require.Zero(t, unauth.Load(), "calls failed with unauthenticated: %v", firstFailure.Load())
	require.Zero(t, failed.Load(), "calls never succeeded: %v", firstFailure.Load())
	require.Positive(t, ok.Load())
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
