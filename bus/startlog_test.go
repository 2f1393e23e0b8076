package bus_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// startWithLog starts a server whose log at level goes to the returned
// buffer, and closes it before returning the buffer's lines.
func startWithLog(t *testing.T, level slog.Level, cfg bus.Config, during func(*bus.Server)) []string {
	t.Helper()
	var out syncBuffer
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level, ReplaceAttr: bus.PlainErrors}))
	s, err := bus.Start(context.Background(), cfg)
	require.NoError(t, err)
	if during != nil {
		during(s)
	}
	s.Close()
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

func count(lines []string, part string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, part) {
			n++
		}
	}
	return n
}

// At info, the embedded server's start and stop are one line each: its
// banners and restores are at debug.
func TestStartLogQuiet(t *testing.T) {
	lines := startWithLog(t, slog.LevelInfo, bus.Config{}, nil)
	require.Equal(t, 1, count(lines, "embedded NATS server ready"), "%q", lines)
	require.Equal(t, 1, count(lines, "embedded NATS server stopped"), "%q", lines)
	require.Len(t, lines, 2, "nothing else at info: %q", lines)

	debug := startWithLog(t, slog.LevelDebug, bus.Config{}, nil)
	for _, want := range []string{"Starting nats-server", "---------------- JETSTREAM ----------------", "Server is ready", "Server Exiting"} {
		require.Equal(t, 1, count(debug, want), "%q at debug", want)
	}
}

// notReady is a token authorizer of a coordinator still starting.
type notReady struct{}

func (notReady) AuthorizeConnection(string) (bus.Grant, error) {
	return bus.Grant{}, errors.Mark(errors.New("coordinator is still starting"), bus.ErrNotReady)
}

// A container connecting while the coordinator starts is refused as
// expected: counted as RefusedStarting, logged at debug only.
func TestRefusedWhileStartingIsQuiet(t *testing.T) {
	var refused map[string]uint64
	lines := startWithLog(t, slog.LevelInfo, bus.Config{Tokens: notReady{}}, func(s *bus.Server) {
		for range 3 {
			_, err := nats.Connect(s.ClientURL(), nats.Token("x.y.z"), nats.MaxReconnects(0))
			require.Error(t, err)
		}
		refused = s.Refused()
	})
	require.Equal(t, uint64(3), refused[bus.RefusedStarting])
	require.Zero(t, refused[bus.RefusedBadToken])
	require.Zero(t, count(lines, "refused"), "%q", lines)
	require.Zero(t, count(lines, "level=ERROR"), "%q", lines)
	require.Zero(t, count(lines, "level=WARN"), "%q", lines)
}
