package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/stretchr/testify/require"
)

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
	env, _, logs := envOf(vars)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, env) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "%s stops cleanly", args[0])
		case <-time.After(60 * time.Second):
			t.Errorf("%s did not stop", args[0])
		}
	})
	return logs
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
	admin := func(args ...string) string {
		t.Helper()
		var out string
		require.Eventually(t, func() bool {
			o, _, err := run(t, vars, append(args, "--server", url, "--timeout", "5s")...)
			out = o
			return err == nil
		}, 20*time.Second, 50*time.Millisecond, "gastown %v", args)
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
		admin("sling", "--town", "e2e", "--bead", b)
	}
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		if json.Unmarshal([]byte(admin("status", "--town", "e2e")), &st) != nil {
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
