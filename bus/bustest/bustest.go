// Package bustest starts an in-process Gastown bus for tests in one call.
package bustest

import (
	"context"
	"log/slog"
	"os"
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

// Logger is a logger for tests: silent unless GASTOWN_TEST_LOG is set.
func Logger(t testing.TB) *slog.Logger {
	switch os.Getenv("GASTOWN_TEST_LOG") {
	case "debug":
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	case "":
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}
