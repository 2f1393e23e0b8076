// Package bustest starts an in-process Gastown bus for tests in one call.
package bustest

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/gastown/gastown/bus"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Start runs an embedded server on a free loopback port with its store in a
// temporary directory, and closes it when the test ends. cfg's Listen and
// DataDir are filled in when empty. Set GASTOWN_TEST_LOG=debug to see the
// server's log.
func Start(t testing.TB, cfg bus.Config) *bus.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(t)
	}
	s, err := bus.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// Connect opens an in-process connection with full permissions, closed when
// the test ends.
func Connect(t testing.TB, s *bus.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(t.Name(), opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// ConnectState opens an in-process connection to the state account (the
// coordinator's state connection), closed when the test ends.
func ConnectState(t testing.TB, s *bus.Server) *nats.Conn {
	t.Helper()
	nc, err := s.ConnectState(t.Name())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// Logger is a logger for tests: warnings and errors go to the test's log
// (shown when it fails, or with -v); GASTOWN_TEST_LOG=debug (or info)
// prints everything from that level to stderr instead.
func Logger(t testing.TB) *slog.Logger {
	switch os.Getenv("GASTOWN_TEST_LOG") {
	case "debug":
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: bus.PlainErrors}))
	case "":
		w := &testWriter{t: t}
		t.Cleanup(w.close)
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: bus.PlainErrors}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{ReplaceAttr: bus.PlainErrors}))
}

// testWriter writes to t.Log until the test's cleanup, then drops lines,
// since goroutines may outlive the test by a moment.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
