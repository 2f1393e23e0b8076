package cluster_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gastown/gastown/bus/cluster"
	"github.com/stretchr/testify/require"
)

func TestCredsWriteLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "coordinator")
	c, err := cluster.NewCreds()
	require.NoError(t, err)
	require.NoError(t, c.Write(dir))

	info, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	for _, f := range []string{"issuer.nk", "xkey.nk", "auth.nk", "control.nk", "state.nk", "ops-copy.nk", "system.nk"} {
		info, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), f)
	}

	loaded, err := cluster.LoadCreds(dir)
	require.NoError(t, err)
	want, err := c.Public()
	require.NoError(t, err)
	got, err := loaded.Public()
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Regexp(t, `^A`, got.Issuer)
	require.Regexp(t, `^X`, got.XKey)
	require.Regexp(t, `^U`, got.Control)

	// A second Write into the same directory changes nothing.
	other, err := cluster.NewCreds()
	require.NoError(t, err)
	err = other.Write(dir)
	require.ErrorContains(t, err, "already exists")
	again, err := cluster.LoadCreds(dir)
	require.NoError(t, err)
	gotAgain, err := again.Public()
	require.NoError(t, err)
	require.Equal(t, want, gotAgain)
}

func TestLoadCredsErrors(t *testing.T) {
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "coordinator")
		c, err := cluster.NewCreds()
		require.NoError(t, err)
		require.NoError(t, c.Write(dir))
		return dir
	}
	t.Run("missing file", func(t *testing.T) {
		dir := setup(t)
		require.NoError(t, os.Remove(filepath.Join(dir, "xkey.nk")))
		_, err := cluster.LoadCreds(dir)
		require.ErrorContains(t, err, "xkey.nk is missing")
	})
	t.Run("user seed where the issuer's account seed belongs", func(t *testing.T) {
		dir := setup(t)
		seed, err := os.ReadFile(filepath.Join(dir, "control.nk"))
		require.NoError(t, err)
		require.NoError(t, os.Remove(filepath.Join(dir, "issuer.nk")))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "issuer.nk"), seed, 0o600))
		_, err = cluster.LoadCreds(dir)
		require.ErrorContains(t, err, "issuer.nk holds a user seed where the callout issuer (account key) belongs")
	})
	t.Run("not a seed", func(t *testing.T) {
		dir := setup(t)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "state.nk"), []byte("hello\n"), 0o600))
		_, err := cluster.LoadCreds(dir)
		require.ErrorContains(t, err, "state.nk does not hold an nkey seed")
		require.NotContains(t, err.Error(), "hello")
	})
	t.Run("group-readable file", func(t *testing.T) {
		dir := setup(t)
		require.NoError(t, os.Chmod(filepath.Join(dir, "auth.nk"), 0o640))
		_, err := cluster.LoadCreds(dir)
		require.ErrorContains(t, err, "auth.nk has mode -rw-r-----: others may read the seed")
	})
}
