package agentclient_test

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestHeartbeatKeepsUnsentExits: an exit drained for a heartbeat that could
// not be sent goes out with the next one, and only once.
func TestHeartbeatKeepsUnsentExits(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: 20 * time.Millisecond}) // the interval containers use
	const town = "K"
	tok, _, err := h.Issuer.MintContainer(town, "", time.Hour)
	require.NoError(t, err)
	source := func() *agentclient.TokenSource {
		src, err := agentclient.Start(context.Background(), agentclient.Config{URL: h.URL(), Token: tok,
			ContainerID: "c-k", TokenFile: t.TempDir() + "/token", Logger: bustest.Logger(t)})
		require.NoError(t, err)
		t.Cleanup(src.Close)
		return src
	}

	// The runner's clock tells when the exit has been recorded: it is read
	// once at the start and once, under the runner's lock, for the exit.
	clock := make(chan struct{}, 8)
	r, err := agentclient.NewRunner(town, agentclient.RunnerConfig{WorkDir: t.TempDir(),
		Commands: map[string][]string{schemas.RoleMayor: {"sh", "-c", "exit 4"}},
		Now:      func() time.Time { clock <- struct{}{}; return time.Now() }})
	require.NoError(t, err)
	defer r.Close()
	res := r.Start(context.Background(), schemas.StartAgent{TownID: town, RigID: "r", AgentID: "m", RunID: "r1",
		Role: schemas.RoleMayor, Workspace: schemas.Workspace{Kind: schemas.WorkspaceEmpty}})
	require.True(t, res.OK, res.Error)
	<-clock // started
	<-clock // exited

	// A heartbeat on a closed source fails: its exit is kept.
	closed := source()
	closed.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	agentclient.RunHeartbeats(ctx, closed, r, "c-k", time.Hour, nil)

	got := make(chan *nats.Msg, 64)
	sub, err := h.Conn().ChanSubscribe("gastown.town."+town+".heartbeat", got)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	ctx, cancel = context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		agentclient.RunHeartbeats(ctx, source(), r, "c-k", 20*time.Millisecond, nil)
	}()
	defer func() { cancel(); <-stopped }()

	var exits []schemas.AgentExit
	for beats := 0; beats < 3; {
		select {
		case m := <-got:
			require.NotContains(t, string(m.Data), tok, "a heartbeat never holds the token")
			var hb schemas.Heartbeat
			require.NoError(t, schemas.Decode(m.Data, &hb))
			require.Equal(t, town, hb.TownID)
			require.Equal(t, "c-k", hb.ContainerID)
			// An exited run is listed once, then forgotten; its exit report
			// is what must not be lost.
			require.Empty(t, hb.Agents)
			exits = append(exits, hb.Exits...)
			beats++
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
	require.Len(t, exits, 1, "the exit is sent once, after the failed heartbeat")
	require.Equal(t, "r1", exits[0].RunID)
	require.Equal(t, 4, exits[0].ExitCode)
}
