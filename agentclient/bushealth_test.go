package agentclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func adminBody(t *testing.T, h *coordinatortest.Harness, method string, body, out any) {
	t.Helper()
	subject, err := schemas.Admin(method)
	require.NoError(t, err)
	b, err := json.Marshal(body)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: subject, Data: b}, out))
}

// ensureTown creates town unless it exists.
func ensureTown(t *testing.T, h *coordinatortest.Harness, town string) {
	t.Helper()
	b, err := json.Marshal(schemas.TownCreate{TownID: town})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: "gastown.admin." + schemas.AdminTownCreate, Data: b}, nil)
	if !errors.Is(err, schemas.ErrConflict) {
		require.NoError(t, err)
	}
}

// refusals is how many connections the server refused so far, any reason.
func refusals(h *coordinatortest.Harness) uint64 {
	var n uint64
	for _, c := range h.Daemon.Server().Refused() {
		n += c
	}
	return n
}

// linesWith counts the log lines whose message contains part.
func linesWith(recs *bustest.Records, part string) int {
	return len(recs.Lines(func(r bustest.Record) bool { return strings.Contains(r.Message, part) }))
}

// A container whose town's tokens were revoked says so once (not once per
// retry), backs off (the server sees few attempts), and gives up after
// RefusedExitAfter with ErrTokenRefused: no retry can help, a supervisor
// restarting it with a fresh bootstrap token can.
func TestRevokedContainerBacksOffAndGivesUp(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	adminBody(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "R"}, nil)
	recs := bustest.NewRecords(slog.LevelInfo)
	tok := h.ContainerToken("R")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	const giveUp = 2 * time.Second
	go func() {
		done <- agentclient.RunContainer(ctx, agentclient.ContainerConfig{
			Source: agentclient.Config{URL: h.URL(), Token: tok, ContainerID: "c-r", Logger: recs.Logger(),
				ReconnectMin: 50 * time.Millisecond, RefusedExitAfter: giveUp}, // ReconnectMax: the default, 30 s
			Runner:            agentclient.RunnerConfig{WorkDir: t.TempDir(), Commands: map[string][]string{schemas.RoleMayor: {"sleep", "600"}}},
			HeartbeatInterval: time.Hour,
		})
	}()
	require.Eventually(t, func() bool { return linesWith(recs, "container running") == 1 }, 20*time.Second, 5*time.Millisecond)

	before := refusals(h)
	var rev schemas.RevokeResult
	adminBody(t, h, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "R"}, &rev)
	require.GreaterOrEqual(t, rev.Closed, 1)
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the container never gave up")
	}
	require.ErrorIs(t, err, agentclient.ErrTokenRefused)
	require.Contains(t, strings.Join(errors.GetAllHints(err), " "), "gastown token mint --town R")

	// Before the backoff (100 ms plus up to 1 s of jitter) a revoked
	// container was refused some 20 times in 3 s; waiting 50 ms doubling
	// (±25%), it gives up after 2 s at its 6th attempt or so, at about 3 s.
	attempts := refusals(h) - before
	t.Logf("%d attempts in %s", attempts, giveUp)
	require.GreaterOrEqual(t, attempts, uint64(3), "it did retry")
	require.LessOrEqual(t, attempts, uint64(10), "it backs off")
	require.Equal(t, 1, linesWith(recs, "refused the container token, which has not expired"), "said once, not once per retry")
	line := recs.Lines(func(r bustest.Record) bool { return strings.Contains(r.Message, "which has not expired") })[0]
	require.Contains(t, line.Message, "revoked")
	require.Contains(t, line.Attrs["hint"], "if the town's tokens were revoked, restart this container with a fresh bootstrap token: gastown token mint --town R")
	require.Equal(t, 1, linesWith(recs, "giving up"))
	require.LessOrEqual(t, linesWith(recs, "connection to the bus lost"), 1)
	for _, r := range recs.Lines(nil) {
		for _, v := range r.Attrs {
			require.NotContains(t, fmt.Sprint(v), "eyJ", "no token in the log")
		}
	}

	// Started again with the revoked token, it fails at once, saying why.
	_, err = agentclient.Start(context.Background(), agentclient.Config{URL: h.URL(), Token: tok, ContainerID: "c-r2"})
	require.True(t, errors.Is(err, agentclient.ErrTokenRefused), "%v", err)
	require.Contains(t, err.Error(), "revoked")

	// An agent's tool call with it retries until its deadline, then says
	// why it never connected.
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, agentclient.WriteTokenFile(file, tok))
	tctx, tcancel := context.WithTimeout(context.Background(), time.Second)
	defer tcancel()
	_, err = agentclient.OpenFileSession(tctx, h.URL(), file, time.Second)
	require.True(t, errors.Is(err, agentclient.ErrTokenRefused), "%v", err)
	require.Contains(t, err.Error(), "revoked")
	require.NotContains(t, err.Error(), tok)
}

// An unreachable bus is said to be unreachable, once, and its return once.
func TestUnreachableBusSaidOnce(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	recs := bustest.NewRecords(slog.LevelInfo)
	startContainer(t, h, "U", time.Hour, func(c *agentclient.Config) {
		c.Logger = recs.Logger()
		c.ReconnectMin, c.ReconnectMax = 10*time.Millisecond, time.Second
	})
	h.Stop()
	require.Eventually(t, func() bool { return linesWith(recs, "the bus is unreachable") == 1 }, 20*time.Second, 5*time.Millisecond,
		"logs: %v", recs.Lines(nil))
	h.Restart(nil)
	require.Eventually(t, func() bool { return linesWith(recs, "connection to the bus is back") == 1 }, 20*time.Second, 5*time.Millisecond,
		"logs: %v", recs.Lines(nil))
	require.Equal(t, 1, linesWith(recs, "the bus is unreachable"), "said once while it was down")
	require.Zero(t, linesWith(recs, "which has not expired"), "a restarting coordinator is not taken for a revocation")

	// Never reachable at all: Start says so.
	_, err := agentclient.Start(context.Background(), agentclient.Config{URL: "nats://127.0.0.1:1", Token: h.ContainerToken("U")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "unreachable")
}
