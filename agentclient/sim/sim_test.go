package sim_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/agentclient/sim"
	"github.com/stretchr/testify/require"
)

// clone makes a workspace on branch from the bare repository origin.
func clone(t *testing.T, origin, branch string) string {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ws")
	_, err := agentclient.Git(ctx, "", "clone", "-q", origin, dir)
	require.NoError(t, err)
	_, err = agentclient.Git(ctx, dir, "checkout", "-q", "-b", branch)
	require.NoError(t, err)
	return dir
}

// TestCommitAgainSucceeds: a polecat run again on the same bead (the last
// run's done was lost) commits and pushes again without failing, in the
// same workspace (nothing new to commit) or in a fresh one (its branch on
// the remote holds the earlier run's commit).
func TestCommitAgainSucceeds(t *testing.T) {
	ctx := context.Background()
	origin := filepath.Join(t.TempDir(), "origin.git")
	_, err := agentclient.Git(ctx, "", "init", "-q", "--bare", "-b", "main", origin)
	require.NoError(t, err)
	seed := filepath.Join(t.TempDir(), "seed")
	_, err = agentclient.Git(ctx, "", "clone", "-q", origin, seed)
	require.NoError(t, err)
	for _, args := range [][]string{
		{"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "start"},
		{"push", "-q", "origin", "HEAD:refs/heads/main"},
	} {
		_, err = agentclient.Git(ctx, seed, args...)
		require.NoError(t, err)
	}

	ws := clone(t, origin, "polecat/b1")
	branch, err := sim.Commit(ctx, ws, "b1", "Do b1", "")
	require.NoError(t, err)
	require.Equal(t, "polecat/b1", branch)
	_, err = sim.Commit(ctx, ws, "b1", "Do b1", "")
	require.NoError(t, err, "the same run again, nothing new to commit")

	fresh := clone(t, origin, "polecat/b1")
	_, err = sim.Commit(ctx, fresh, "b1", "Do b1", "")
	require.NoError(t, err, "a run again in a fresh workspace")
	out, err := agentclient.Git(ctx, fresh, "ls-remote", "origin", "refs/heads/polecat/b1")
	require.NoError(t, err)
	head, err := agentclient.Git(ctx, fresh, "rev-parse", "HEAD")
	require.NoError(t, err)
	require.Contains(t, out, head, "the branch holds the last run's work")
}
