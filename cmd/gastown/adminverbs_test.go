package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// tableRow finds the row of a table whose first column is first and
// returns its columns (split on runs of spaces).
func tableRow(t *testing.T, out, first string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == first {
			return f
		}
	}
	t.Fatalf("no row %q in:\n%s", first, out)
	return nil
}

// What a new user types, typos included: unknown towns fail with
// not_found, a sling that did not dispatch exits non-zero, the verbs that
// pair with create exist, and status is a table.
func TestAdminVerbsCLI(t *testing.T) {
	addr := freeAddr(t)
	url := "nats://" + addr
	vars := map[string]string{"GASTOWN_JWT_SECRET": testSecret, "GASTOWN_ADMIN_PASSWORD": "admin-pw"}
	coordinatorReady(t, daemon(t, vars, "coordinator", "--listen", addr, "--data-dir", t.TempDir(), "--log-level", "info"))
	adminCLI(t, vars, url)("town", "list") // until it answers
	cli := func(args ...string) (string, error) {
		stdout, _, err := run(t, vars, append(args, "--server", url)...)
		return stdout, err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		require.NoError(t, err, "gastown %v: %s", args, printed(err))
		return out
	}

	t.Run("unknown town", func(t *testing.T) {
		for _, args := range [][]string{
			{"token", "revoke", "--town", "nosuchtown"},
			{"token", "rotate", "--town", "nosuchtown"},
			{"status", "--town", "nosuchtown"},
			{"town", "show", "--town", "nosuchtown"},
			{"town", "delete", "--town", "nosuchtown"},
			{"bead", "list", "--town", "nosuchtown"},
		} {
			out, err := cli(args...)
			require.Error(t, err, "%v", args)
			require.Equal(t, 13, exitCode(err), "%v: not_found: %s", args, printed(err))
			require.Contains(t, err.Error(), "nosuchtown")
			require.Empty(t, out)
		}
		require.Contains(t, must("town", "list"), "no towns yet", "nothing was created")
	})

	t.Run("subcommands", func(t *testing.T) {
		_, stderr, err := run(t, vars, "town")
		require.Equal(t, 2, exitCode(err))
		require.Contains(t, err.Error(), "create, list, show or delete")
		require.Contains(t, stderr, "Usage: gastown town <create|list|show|delete>")
		_, _, err = run(t, vars, "rig", "lsit")
		require.Equal(t, 2, exitCode(err))
		require.Contains(t, err.Error(), "add, list or remove")
	})

	must("town", "create", "--town", "demo", "--owner", "alice")
	must("rig", "add", "--town", "demo", "--rig", "app", "--git", "/nowhere/app.git")
	must("bead", "create", "--town", "demo", "--rig", "app", "--id", "login", "--title", "Add login")
	must("bead", "create", "--town", "demo", "--rig", "app", "--id", "logout", "--title", "Add logout")
	var convoy coordinator.Bead
	require.NoError(t, json.Unmarshal([]byte(must("convoy", "create", "--town", "demo", "--title", "Accounts", "--beads", "login,logout")), &convoy))

	t.Run("sling without a container", func(t *testing.T) {
		out, err := cli("sling", "--town", "demo", "--bead", "login")
		require.Error(t, err)
		require.Equal(t, 15, exitCode(err), "unavailable")
		p := printed(err)
		require.Contains(t, p, "bead login is hooked to polecat toast but was not dispatched")
		require.Contains(t, p, "no container of the town is connected")
		require.Contains(t, p, "the bead stays hooked: it is dispatched as soon as the town's container connects")
		var res schemas.SlingResult
		require.NoError(t, json.Unmarshal([]byte(out), &res), "the result is still printed")
		require.False(t, res.Dispatched)
		require.Equal(t, "toast", res.AgentID)
	})

	t.Run("status table", func(t *testing.T) {
		out := must("status", "--town", "demo")
		require.Equal(t, []string{"TOWN", "OWNER", "CONTAINER", "LAST", "HEARTBEAT", "RIGS", "CREATED"}, tableRow(t, out, "TOWN"))
		town := tableRow(t, out, "demo")
		require.Equal(t, []string{"demo", "alice", "not", "connected", "-", "1"}, town[:6])
		require.Equal(t, []string{"AGENT", "ROLE", "RIG", "STATUS", "HOOK", "RUN", "LAST", "ERROR"}, tableRow(t, out, "AGENT"))
		require.Equal(t, []string{"mayor", "mayor", "town"}, tableRow(t, out, "mayor")[:3])
		toast := tableRow(t, out, "toast")
		require.Equal(t, []string{"toast", "polecat", "app", "idle", "login", "-"}, toast[:6], "the polecat with its hook")
		require.Contains(t, out, "BEADS (2: open 2)")
		require.Equal(t, []string{"BEAD", "TYPE", "STATUS", "RIG", "ASSIGNEE", "CONVOY", "TITLE"}, tableRow(t, out, "BEAD"))
		require.Equal(t, []string{"login", "issue", "open", "app", "toast", convoy.BeadID, "Add", "login"}, tableRow(t, out, "login"))
		require.Equal(t, []string{"logout", "issue", "open", "app", "-", convoy.BeadID, "Add", "logout"}, tableRow(t, out, "logout"))
		require.Contains(t, out, "CONVOYS (1)")
		require.Equal(t, []string{"CONVOY", "TITLE", "PROGRESS", "LANDED", "OPEN"}, tableRow(t, out, "CONVOY"))
		require.Equal(t, []string{convoy.BeadID, "Accounts", "0/2", "no", "login,logout"}, tableRow(t, out, convoy.BeadID))
		require.NotContains(t, out, "{", "a table, not JSON")

		var st coordinator.TownStatus
		require.NoError(t, json.Unmarshal([]byte(must("status", "--town", "demo", "--json")), &st))
		require.Len(t, st.Agents, 2)
		require.Len(t, st.Convoys, 1)

		towns := must("status")
		require.Equal(t, []string{"TOWN", "OWNER", "CONTAINER", "RIGS", "AGENTS", "WORKING", "BEADS", "CREATED"}, tableRow(t, towns, "TOWN"))
		demo := tableRow(t, towns, "demo")
		require.Equal(t, []string{"demo", "alice", "not", "connected", "1", "2"}, demo[:6])
		require.Equal(t, []string{"open", "3"}, demo[7:9], "the beads by status")
	})

	t.Run("status --watch redraws until stopped", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := &frames{stopAt: 3, stop: cancel}
		env, _, _ := envOf(vars)
		env.Stdout = w
		require.NoError(t, Run(ctx, []string{"status", "--town", "demo", "--watch", "10ms", "--server", url}, env))
		require.Equal(t, 3, strings.Count(w.String(), clearScreen))
		require.Equal(t, 3, strings.Count(w.String(), "\nAGENTS (2, "))
		_, _, err := run(t, vars, "status", "--watch", "soon")
		require.Equal(t, 2, exitCode(err))
	})

	t.Run("lists and shows", func(t *testing.T) {
		require.Equal(t, []string{"app", "/nowhere/app.git", "main"}, tableRow(t, must("rig", "list", "--town", "demo"), "app")[:3])
		beads := must("bead", "list", "--town", "demo", "--type", "issue")
		tableRow(t, beads, "login")
		require.NotContains(t, beads, "Accounts")
		_, err := cli("bead", "list", "--town", "demo", "--status", "done")
		require.Equal(t, 2, exitCode(err), "an unknown status is a usage error")
		var b coordinator.Bead
		require.NoError(t, json.Unmarshal([]byte(must("bead", "show", "--town", "demo", "--bead", "login")), &b))
		require.Equal(t, "toast", b.Assignee)
		require.Equal(t, []string{convoy.BeadID, "Accounts", "0/2"}, tableRow(t, must("convoy", "list", "--town", "demo"), convoy.BeadID)[:3])
		var cs schemas.ConvoyStatus
		require.NoError(t, json.Unmarshal([]byte(must("convoy", "show", "--town", "demo", "--convoy", convoy.BeadID)), &cs))
		require.Equal(t, 2, cs.Tracked)
		var show coordinator.TownShow
		require.NoError(t, json.Unmarshal([]byte(must("town", "show", "--town", "demo")), &show))
		require.Equal(t, "alice", show.Town.UserID)
	})

	t.Run("remove and delete", func(t *testing.T) {
		_, err := cli("rig", "remove", "--town", "demo", "--rig", "app")
		require.Equal(t, 14, exitCode(err), "conflict: the rig has open beads")
		require.Contains(t, err.Error(), "login, logout")
		out := must("town", "delete", "--town", "demo")
		var del schemas.TownDeleteResult
		require.NoError(t, json.Unmarshal([]byte(out), &del))
		require.Equal(t, 3, del.Deleted[schemas.BucketBeads], "two beads and the convoy")
		require.Contains(t, must("town", "list"), "no towns yet")
		_, err = cli("status", "--town", "demo")
		require.Equal(t, 13, exitCode(err))
	})
}

// frames is a stdout that ends the watch after stopAt frames.
type frames struct {
	mu     sync.Mutex
	b      strings.Builder
	n      int
	stopAt int
	stop   func()
}

func (f *frames) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n += strings.Count(string(p), clearScreen)
	if f.n >= f.stopAt {
		f.stop()
	}
	return f.b.Write(p)
}

func (f *frames) String() string { f.mu.Lock(); defer f.mu.Unlock(); return f.b.String() }
