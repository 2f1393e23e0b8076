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
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// The load the fault tests (kill_test.go, cluster_fault_test.go) put on
// the coordinators while they break things: a loaded town whose container
// rotates tokens under 16 callers, and a working town whose container's
// sim agents work convoys.

// loadedTown is the town "load": a container in this process whose 16
// callers ping as fast as they can.
type loadedTown struct {
	src *agentclient.TokenSource
	// ok counts calls that succeeded; unauth attempts refused with
	// unauthenticated; retried attempts that failed otherwise and were
	// tried again; failed calls that never succeeded.
	ok, unauth, retried, failed atomic.Int64
	firstUnauth, firstFailed    atomic.Value
	stop                        func()
}

// startLoadedTown creates the town through admin, mints its token, and
// starts its container and callers against url; they stop at the end of
// the test, or at lt.stop. retryFor is how long one call is tried again
// before it counts as failed: zero counts every failed attempt (a
// coordinator that is down, say) as a failed call.
func startLoadedTown(t *testing.T, vars map[string]string, url string, admin func(...string) string, retryFor time.Duration) *loadedTown {
	t.Helper()
	admin("town", "create", "--town", "load")
	loadToken, _, err := run(t, vars, "token", "mint", "--town", "load")
	require.NoError(t, err)
	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: url, Token: strings.TrimSpace(loadToken), ContainerID: "load", RequestTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	client := agentclient.NewClient(src, "", "")
	lt := &loadedTown{src: src}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				lt.call(ctx, client, retryFor)
			}
		})
	}
	var once sync.Once
	lt.stop = func() { once.Do(func() { cancel(); wg.Wait(); src.Close() }) }
	t.Cleanup(lt.stop)
	return lt
}

// call makes one call, tried again for up to retryFor.
func (lt *loadedTown) call(ctx context.Context, client *agentclient.Client, retryFor time.Duration) {
	callCtx, cancel := context.WithTimeout(ctx, max(retryFor, 5*time.Second))
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(callCtx, 5*time.Second)
		err := client.Call(rctx, schemas.ToolPing, nil, nil)
		rcancel()
		if err == nil {
			lt.ok.Add(1)
			return
		}
		unauth := errors.Is(err, schemas.ErrUnauthenticated)
		if unauth {
			lt.unauth.Add(1)
			lt.firstUnauth.CompareAndSwap(nil, err.Error())
		}
		if retryFor == 0 || callCtx.Err() != nil {
			if ctx.Err() == nil && (retryFor > 0 || !unauth) {
				lt.failed.Add(1)
				lt.firstFailed.CompareAndSwap(nil, err.Error())
			}
			if !unauth {
				time.Sleep(20 * time.Millisecond) // the coordinator is down: unavailable, timeouts
			}
			return
		}
		lt.retried.Add(1)
		time.Sleep(20 * time.Millisecond)
	}
}

// rotations is how many tokens the loaded container has taken.
func (lt *loadedTown) rotations() int64 { return lt.src.Adopted() }

// startWorkingTown creates the town "work" with the rig "app" (a bare
// repository) through admin, mints its token, and starts a container
// process on url running sim agents; its log is shown when the test fails
// (and written to $GASTOWN_FAULT_LOGS/container.log when that is set).
func startWorkingTown(t *testing.T, vars map[string]string, url string, admin func(...string) string) *process {
	t.Helper()
	bin := binary(t)
	repo := bareRepo(t)
	admin("town", "create", "--town", "work")
	admin("rig", "add", "--town", "work", "--rig", "app", "--git", repo)
	workToken, _, err := run(t, vars, "token", "mint", "--town", "work")
	require.NoError(t, err)
	cont := startProcess(t, map[string]string{"GASTOWN_CONTAINER_TOKEN": strings.TrimSpace(workToken)}, "container", "--server", url,
		"--workdir", t.TempDir(), "--heartbeat", "150ms",
		"--polecat-cmd", bin+" agent sim --work 1500ms", "--refinery-cmd", bin+" agent sim --work 100ms",
		"--triage-cmd", bin+" agent sim --work 100ms") // a polecat killed three times is a crash loop
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container log:\n%s", tail(cont.logs.String(), 200))
			if dir := os.Getenv("GASTOWN_FAULT_LOGS"); dir != "" {
				_ = os.WriteFile(filepath.Join(dir, "container.log"), []byte(cont.logs.String()), 0o600)
			}
		}
	})
	return cont
}

// slinger slings a bead of the working town until it is hooked. A sling
// whose answer was lost (a node or the coordinator killed under it) may
// have hooked the bead, and one answered "hooked, not dispatched" (exit
// 15: the container is not connected yet, or gone) has: then it is not
// slung again, and the coordinator dispatches it when it can.
func slinger(t *testing.T, vars map[string]string, url string, status func(town string) coordinator.TownStatus) func(id string) {
	return func(id string) {
		t.Helper()
		require.Eventually(t, func() bool {
			_, _, err := run(t, vars, "sling", "--town", "work", "--bead", id, "--server", url, "--timeout", "10s")
			if err == nil || exitCode(err) == 15 {
				return true
			}
			t.Logf("sling %s: exit %d: %s", id, exitCode(err), printed(err))
			for _, b := range status("work").Beads {
				if b.BeadID == id && b.Status != coordinator.BeadOpen {
					return true
				}
			}
			return false
		}, time.Minute, 100*time.Millisecond, "sling %s", id)
	}
}

// convoyWork is the work given to the working town: batches of beads of
// the rig "app", each batch in a convoy and every bead slung.
type convoyWork struct {
	t       *testing.T
	admin   func(...string) string
	sling   func(id string)
	w       *workState
	convoys []string
}

func newConvoyWork(t *testing.T, admin func(...string) string, sling func(id string)) *convoyWork {
	return &convoyWork{t: t, admin: admin, sling: sling, w: &workState{beads: map[string]bool{}, closed: map[string]bool{}}}
}

// batch creates n beads and a convoy of them, and slings each.
func (cw *convoyWork) batch(n int) {
	cw.t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("b%d", len(cw.w.beads)+i)
		cw.admin("bead", "create", "--town", "work", "--rig", "app", "--id", id, "--title", "Do "+id)
		ids = append(ids, id)
	}
	var convoy coordinator.Bead
	require.NoError(cw.t, json.Unmarshal([]byte(cw.admin("convoy", "create", "--town", "work", "--title", "batch", "--beads", strings.Join(ids, ","))), &convoy))
	cw.convoys = append(cw.convoys, convoy.BeadID)
	for _, id := range ids {
		cw.w.beads[id] = true
		cw.sling(id)
	}
	cw.w.beads[convoy.BeadID] = true
}

// unlanded is a convoy of the work that has not landed, or "".
func (cw *convoyWork) unlanded(st coordinator.TownStatus) string {
	for _, b := range st.Beads {
		if slices.Contains(cw.convoys, b.BeadID) && !b.Landed {
			return b.BeadID
		}
	}
	return ""
}

// requireLanded waits until every convoy has landed with nothing lost,
// then requires every issue bead closed.
func (cw *convoyWork) requireLanded(status func(town string) coordinator.TownStatus) {
	cw.t.Helper()
	untilNoProblem(cw.t, 3*time.Minute, "every convoy lands, nothing lost", func() string {
		st := status("work")
		if p := cw.w.check(st); p != "" {
			return p
		}
		if id := cw.unlanded(st); id != "" {
			return "convoy " + id + " has not landed"
		}
		return ""
	})
	for _, b := range status("work").Beads {
		if cw.w.beads[b.BeadID] && b.Type == coordinator.BeadIssue {
			require.Equal(cw.t, coordinator.BeadClosed, b.Status, "bead %s", b.BeadID)
		}
	}
}
