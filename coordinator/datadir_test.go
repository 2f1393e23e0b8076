//go:build linux

package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrors "github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// mountTmpfs mounts a small tmpfs of its own: a real file system that can
// be made read-only (even for root) and filled. It skips where mounting is
// not allowed (bus tests cover read-only directories for other users).
func mountTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): it needs CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

func remount(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	require.NoError(t, syscall.Mount("", dir, "", syscall.MS_REMOUNT|flags, ""))
}

// fill writes a file until the file system is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			require.True(t, errors.Is(err, syscall.ENOSPC), "filling: %v", err)
			break
		}
	}
	// What the last whole chunk left: write it byte by byte.
	for {
		if _, err := f.Write(chunk[:1]); err != nil {
			break
		}
	}
	return path
}

// TestDataDirFaultsAtStart: a coordinator restarted on a read-only, then a
// full, file system refuses to start with an error saying what to do, and
// writes nothing; once the disk is writable again it starts with every
// town, rig, agent and bead as it was.
func TestDataDirFaultsAtStart(t *testing.T) {
	mnt := mountTmpfs(t)
	h := coordinatortest.StartIn(t, coordinator.Config{}, filepath.Join(mnt, "data"))
	slingOne(t, h)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	status := func() coordinator.TownStatus {
		var st coordinator.TownStatus
		require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st))
		return st
	}
	before := status()
	require.Len(t, before.Beads, 1)
	require.Len(t, before.Agents, 2, "the mayor and the slung polecat")
	h.Stop()

	startFails := func(want string) {
		t.Helper()
		err := h.TryStart()
		require.Error(t, err)
		if err == nil {
			h.Stop()
		}
		require.True(t, cerrors.Is(err, bus.ErrStart), "%+v", err)
		require.Contains(t, err.Error(), want)
		hints := cerrors.FlattenHints(err)
		require.Contains(t, hints, "--data-dir")
	}

	t.Run("read-only file system", func(t *testing.T) {
		remount(t, mnt, syscall.MS_RDONLY)
		startFails("read-only file system")
		remount(t, mnt, 0)
	})

	t.Run("disk full", func(t *testing.T) {
		filler := fill(t, mnt)
		startFails("no space left on device")
		require.NoError(t, os.Remove(filler))
	})

	require.NoError(t, h.TryStart(), "starts once the disk is writable and has room")
	after := status()
	require.Equal(t, before.Town, after.Town)
	require.Equal(t, before.Rigs, after.Rigs)
	require.Equal(t, before.Beads, after.Beads)
	require.Len(t, after.Agents, len(before.Agents))
	for i, a := range after.Agents {
		require.Equal(t, before.Agents[i].AgentID, a.AgentID)
		require.Equal(t, before.Agents[i].Hook, a.Hook, "agent %s keeps its hook", a.AgentID)
	}
	require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: "b2", RigID: "r", Title: "more"}, nil),
		"and takes new work")
}

// TestDiskFullWhileRunning: the disk fills up under a running coordinator.
// The embedded server stops JetStream on its own; the daemon reports it
// (what to do included) instead of leaving every write to hang, and once
// space is freed and it is started again, every write it acknowledged is
// there.
func TestDiskFullWhileRunning(t *testing.T) {
	mnt := mountTmpfs(t)
	h := coordinatortest.StartIn(t, coordinator.Config{RequestTimeout: time.Second}, filepath.Join(mnt, "data"))
	slingOne(t, h)
	filler := fill(t, mnt)

	var acked []string
	var failure error
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; failure == nil; i++ {
		require.True(t, time.Now().Before(deadline), "no failure reported after %d writes to a full disk", i)
		id := fmt.Sprintf("b%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		body, _ := json.Marshal(schemas.BeadCreate{TownID: "T", BeadID: id, RigID: "r", Title: strings.Repeat("x", 2000)})
		err := bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: "gastown.admin." + schemas.AdminBeadCreate, Data: body}, nil)
		cancel()
		if err == nil {
			acked = append(acked, id)
		}
		failure = h.Daemon.Err()
	}
	require.True(t, cerrors.Is(failure, bus.ErrJetStreamStopped), "%v", failure)
	require.Contains(t, failure.Error(), "full")
	require.Contains(t, cerrors.FlattenHints(failure), "free some disk space")
	t.Logf("%d beads acknowledged before JetStream stopped: %v", len(acked), failure)
	h.Stop()

	require.NoError(t, os.Remove(filler))
	require.NoError(t, h.TryStart(), "starts again once there is room")
	have := map[string]bool{}
	require.Eventually(t, func() bool {
		var st coordinator.TownStatus
		if admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: "T"}, &st) != nil {
			return false
		}
		for _, b := range st.Beads {
			have[b.BeadID] = true
		}
		return true
	}, 10*time.Second, 50*time.Millisecond)
	for _, id := range acked {
		require.True(t, have[id], "bead %s was acknowledged, then lost", id)
	}
	require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: "after", RigID: "r", Title: "more"}, nil),
		"and takes new work")
}

// TestStoppedWhileStarting: a coordinator stopped (Ctrl-C) while it starts
// stops cleanly: no error, and its data directory is free again.
func TestStoppedWhileStarting(t *testing.T) {
	key, err := token.NewKey([]byte("stop-while-starting-secret-of-32-bytes"))
	require.NoError(t, err)
	issuer := token.NewIssuer(token.NewKeyRing(key), nil)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dc := coordinator.DaemonConfig{Bus: bus.Config{Listen: "127.0.0.1:0", DataDir: dir}}
	require.NoError(t, coordinator.RunDaemon(ctx, issuer, dc), "a stop while starting is not a failure")
	// Nothing was left holding the store.
	d, err := coordinator.StartDaemon(context.Background(), issuer, dc)
	require.NoError(t, err)
	d.Close()
}
