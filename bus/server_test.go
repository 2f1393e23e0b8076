package bus_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/stretchr/testify/require"
)

// startFails starts a server with cfg and returns its error, which must be
// marked ErrStart. The server must not be left running.
func startFails(t *testing.T, cfg bus.Config) error {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Logger = bustest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := bus.Start(ctx, cfg)
	if err == nil {
		s.Close()
		t.Fatal("Start succeeded")
	}
	// The mark is a cockroachdb/errors mark: the standard library's
	// errors.Is (and so require.ErrorIs) does not see it.
	require.True(t, errors.Is(err, bus.ErrStart), "not marked ErrStart: %+v", err)
	return err
}

// requireHint checks that one of err's hints mentions want.
func requireHint(t *testing.T, err error, want string) {
	t.Helper()
	hints := errors.GetAllHints(err)
	for _, h := range hints {
		if strings.Contains(h, want) {
			return
		}
	}
	t.Fatalf("no hint mentions %q; hints: %q; error: %v", want, hints, err)
}

func TestStartDataDir(t *testing.T) {
	t.Run("under a regular file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
		err := startFails(t, bus.Config{DataDir: filepath.Join(file, "sub")})
		requireHint(t, err, "--data-dir")
	})

	t.Run("read-only directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ro")
		require.NoError(t, os.Mkdir(dir, 0o500))
		t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
		if f, err := os.CreateTemp(dir, "probe"); err == nil {
			_ = f.Close()
			t.Skip("this user (root?) can write to a 0500 directory; the regular-file case covers it")
		}
		err := startFails(t, bus.Config{DataDir: dir})
		requireHint(t, err, "--data-dir")
	})

	t.Run("read-only parent of a missing directory", func(t *testing.T) {
		parent := filepath.Join(t.TempDir(), "ro")
		require.NoError(t, os.Mkdir(parent, 0o500))
		t.Cleanup(func() { _ = os.Chmod(parent, 0o700) })
		if err := os.Mkdir(filepath.Join(parent, "probe"), 0o700); err == nil {
			t.Skip("this user (root?) can write to a 0500 directory; the regular-file case covers it")
		}
		err := startFails(t, bus.Config{DataDir: filepath.Join(parent, "data")})
		requireHint(t, err, "--data-dir")
	})

	t.Run("JetStream cannot make its store", func(t *testing.T) {
		// The directory is writable, but the server's own store path in it
		// is a file: JetStream fails inside the server, which only logs it.
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "jetstream"), []byte("x"), 0o600))
		start := time.Now()
		err := startFails(t, bus.Config{DataDir: dir})
		requireHint(t, err, "--data-dir")
		require.Contains(t, err.Error(), "JetStream")
		require.Less(t, time.Since(start), 10*time.Second, "reported promptly")
	})

	t.Run("made when missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		s := bustest.Start(t, bus.Config{DataDir: dir})
		require.DirExists(t, dir)
		s.Close()
	})
}

func TestStartListen(t *testing.T) {
	for _, listen := range []string{
		"nohostport",
		"127.0.0.1:99999",
		"127.0.0.1:-1",
		"127.0.0.1:abc",
		"127.0.0.1",
	} {
		t.Run(listen, func(t *testing.T) {
			err := startFails(t, bus.Config{Listen: listen})
			require.Contains(t, err.Error(), "listen address")
		})
	}

	t.Run("address in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
		start := time.Now()
		err = startFails(t, bus.Config{Listen: l.Addr().String()})
		requireHint(t, err, "--listen")
		require.Contains(t, err.Error(), "address already in use")
		require.Less(t, time.Since(start), 10*time.Second, "a busy port is reported promptly")
	})

	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s, err := bus.Start(ctx, bus.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: bustest.Logger(t)})
		if err == nil {
			// Ready on the first look: nothing to cancel. Still fine.
			s.Close()
			return
		}
		require.True(t, errors.Is(err, bus.ErrStart), "not marked ErrStart: %+v", err)
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("port 0 picks a free port", func(t *testing.T) {
		s := bustest.Start(t, bus.Config{Listen: "127.0.0.1:0"})
		addr, ok := s.Addr().(*net.TCPAddr)
		require.True(t, ok)
		require.NotZero(t, addr.Port)
		require.True(t, addr.IP.IsLoopback())
		require.Contains(t, s.ClientURL(), "127.0.0.1:")
	})
}

func TestCloseTwice(t *testing.T) {
	s := bustest.Start(t, bus.Config{})
	nc := bustest.Connect(t, s)
	require.NoError(t, nc.Flush())
	addr := s.Addr().String()
	s.Close()
	s.Close()
	require.Eventually(t, func() bool { return !nc.IsConnected() }, waitFor, 10*time.Millisecond)
	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "still listening after Close")
}

// The in-process connection has full permissions and the coordinator's
// inbox prefix.
func TestInProcessConnection(t *testing.T) {
	s := bustest.Start(t, bus.Config{})
	nc := bustest.Connect(t, s)
	sub, err := nc.SubscribeSync(">")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("gastown.town.A.token", []byte("x")))
	requireMsg(t, sub, "x")
	require.True(t, strings.HasPrefix(nc.NewRespInbox(), "_INBOX.gastown_coordinator."))
	require.NoError(t, nc.LastError())
}
