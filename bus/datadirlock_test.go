package bus_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// treeState is every file and directory under a root: its mode, size,
// modification time and content hash.
func treeState(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		state := fmt.Sprintf("%v %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			state += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[path] = state
		return nil
	}))
	return out
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()

	// Some state in the store, written and flushed by a server that is gone.
	s0 := bustest.Start(t, bus.Config{DataDir: dir})
	js, err := jetstream.New(bustest.ConnectState(t, s0))
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "locktest"})
	require.NoError(t, err)
	_, err = kv.PutString(ctx, "k", "v")
	require.NoError(t, err)
	s0.Close()

	s1 := bustest.Start(t, bus.Config{DataDir: dir, Owner: "gastown coordinator"})
	before := treeState(t, dir)

	_, err = bus.Start(ctx, bus.Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: bustest.Logger(t)})
	require.Error(t, err)
	require.True(t, errors.Is(err, bus.ErrDataDirInUse), "%v", err)
	require.True(t, errors.Is(err, bus.ErrStart), "%v", err)
	require.Contains(t, err.Error(), fmt.Sprintf("data directory %s is in use by process %d (gastown coordinator)", dir, os.Getpid()))
	requireHint(t, err, "--data-dir")
	require.Equal(t, before, treeState(t, dir), "a refused start changes nothing under the data directory")

	// Close releases the lock: the next server takes the directory and
	// finds the state.
	s1.Close()
	s1.Close()
	s2 := bustest.Start(t, bus.Config{DataDir: dir, Owner: "the next one"})
	js, err = jetstream.New(bustest.ConnectState(t, s2))
	require.NoError(t, err)
	kv, err = js.KeyValue(ctx, "locktest")
	require.NoError(t, err)
	e, err := kv.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(e.Value()))
	b, err := os.ReadFile(filepath.Join(dir, bus.LockFile))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d\nthe next one\n", os.Getpid()), string(b))
}

// A lock file left by a process that is gone (killed: the kernel dropped
// its lock) does not stop a start.
func TestDataDirStaleLockFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, bus.LockFile), []byte("999999999\nghost\nmore lines\n"), 0o600))
	bustest.Start(t, bus.Config{DataDir: dir, Owner: "test"})
	b, err := os.ReadFile(filepath.Join(dir, bus.LockFile))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d\ntest\n", os.Getpid()), string(b))
}
