package coordinator_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// beatingContainer is a container on the bus that accepts dispatches and
// sends heartbeats for the runs it was given, until it is killed. It runs
// no processes: the coordinator's side of liveness is under test here.
// Started with no interval, it beats only when told (beatStored), for a
// test that moves the coordinator's clock by hand.
type beatingContainer struct {
	src    *agentclient.TokenSource
	mu     sync.Mutex
	runs   map[string]string // agent → run
	starts map[string]int    // agent → dispatches received
	// workspaces is the workspace kind of each agent's last dispatch.
	workspaces map[string]string
	stop       context.CancelFunc
	done       chan struct{}
}

func startBeating(t *testing.T, h *coordinatortest.Harness, town string, interval time.Duration) *beatingContainer {
	t.Helper()
	bc := &beatingContainer{runs: map[string]string{}, starts: map[string]int{}, workspaces: map[string]string{}, done: make(chan struct{})}
	tw, _ := schemas.ForTown(town)
	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: h.URL(), Token: h.ContainerToken(town), ContainerID: "c", Logger: bustest.Logger(t),
	}, agentclient.Handler{Subject: tw.Dispatch(), Queue: schemas.ContainerQueue, Handle: func(m *nats.Msg) {
		var req schemas.StartAgent
		if err := schemas.Decode(m.Data, &req); err != nil {
			return
		}
		bc.mu.Lock()
		bc.runs[req.AgentID] = req.RunID
		bc.starts[req.AgentID]++
		bc.workspaces[req.AgentID] = req.Workspace.Kind
		bc.mu.Unlock()
		_ = bus.Respond(m, &schemas.StartAgentResult{OK: true, AgentID: req.AgentID, RunID: req.RunID})
	}})
	require.NoError(t, err)
	bc.src = src
	ctx, cancel := context.WithCancel(context.Background())
	bc.stop = cancel
	go func() {
		defer close(bc.done)
		if interval <= 0 {
			return
		}
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				bc.beat(t, tw, nil)
			}
		}
	}()
	t.Cleanup(bc.kill)
	return bc
}

// beat sends one heartbeat of the runs held, or of the given lines.
func (bc *beatingContainer) beat(t *testing.T, tw schemas.Town, lines []schemas.AgentBeat) {
	if lines == nil {
		bc.mu.Lock()
		for a, r := range bc.runs {
			lines = append(lines, schemas.AgentBeat{AgentID: a, RunID: r, Status: schemas.RunRunning, LastActivityAt: time.Now()})
		}
		bc.mu.Unlock()
	}
	data, err := schemas.Encode(&schemas.Heartbeat{TownID: tw.ID(), ContainerID: "c", SentAt: time.Now(), Agents: lines})
	if err != nil {
		t.Error(err)
		return
	}
	_ = bc.src.Do(context.Background(), func(_ context.Context, nc *nats.Conn) error { return nc.Publish(tw.Heartbeat(), data) })
}

// beatStored sends one heartbeat of the runs held and waits until the
// coordinator has stored it (received at or after at, by its clock), so
// that the next advance of a manual clock judges liveness on it.
func (bc *beatingContainer) beatStored(t *testing.T, h *coordinatortest.Harness, at time.Time) {
	t.Helper()
	tw, _ := schemas.ForTown("T")
	bc.beat(t, tw, nil)
	kv := stateKV(t, h, schemas.BucketHeartbeats)
	require.Eventually(t, func() bool {
		rec, ok := lastHeartbeat(t, kv)
		return ok && !rec.ReceivedAt.Before(at)
	}, 10*time.Second, 2*time.Millisecond, "the heartbeat is stored")
}

// storedHeartbeat is a town's last heartbeat as the coordinator stores it.
type storedHeartbeat struct {
	ReceivedAt time.Time           `json:"receivedAt"`
	Agents     []schemas.AgentBeat `json:"agents"`
}

// stateKV is one of the daemon's state buckets, read on its own
// connection to JetStream.
func stateKV(t *testing.T, h *coordinatortest.Harness, bucket string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(h.StateConn())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	return kv
}

// lastHeartbeat is town T's stored heartbeat, if there is one.
func lastHeartbeat(t *testing.T, kv jetstream.KeyValue) (storedHeartbeat, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rec storedHeartbeat
	e, err := kv.Get(ctx, "T")
	if err != nil || json.Unmarshal(e.Value(), &rec) != nil {
		return rec, false
	}
	return rec, true
}

func (bc *beatingContainer) run(agent string) string {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.runs[agent]
}

// kill stops its heartbeats and closes its connections: the container died.
func (bc *beatingContainer) kill() {
	bc.stop()
	<-bc.done
	bc.src.Close()
}

func agentState(t *testing.T, h *coordinatortest.Harness, town, agent string) coordinator.Agent {
	t.Helper()
	var st coordinator.TownStatus
	require.NoError(t, admin(t, h, schemas.AdminStatus, schemas.TownRequest{TownID: town}, &st))
	for _, a := range st.Agents {
		if a.AgentID == agent {
			return a
		}
	}
	t.Fatalf("no agent %s", agent)
	return coordinator.Agent{}
}

func slingOne(t *testing.T, h *coordinatortest.Harness) {
	t.Helper()
	require.NoError(t, admin(t, h, schemas.AdminTownCreate, schemas.TownCreate{TownID: "T"}, nil))
	require.NoError(t, admin(t, h, schemas.AdminRigAdd, schemas.RigAdd{TownID: "T", RigID: "r", GitURL: "/repo"}, nil))
	require.NoError(t, admin(t, h, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "T", BeadID: "b", RigID: "r", Title: "work"}, nil))
}

// TestDeadContainerWorkRedispatched: a killed container's agent is dead
// within 3 heartbeat intervals, its work goes to a new container with a
// new run id, and a late heartbeat from the old run changes nothing.
func TestDeadContainerWorkRedispatched(t *testing.T) {
	const interval = 100 * time.Millisecond
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: interval})
	slingOne(t, h)
	c1 := startBeating(t, h, "T", interval/2)
	dead := make(chan schemas.TownEvent, 4)
	sub, err := h.Conn().Subscribe("gastown.town.T.events", func(m *nats.Msg) {
		var ev schemas.TownEvent
		if schemas.Decode(m.Data, &ev) == nil && ev.Kind == schemas.EventAgentDead {
			dead <- ev
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.True(t, res.Dispatched, res.Error)
	run1 := c1.run(res.AgentID)
	require.NotEmpty(t, run1)
	require.Equal(t, coordinator.AgentWorking, agentState(t, h, "T", res.AgentID).Status)

	killedAt := time.Now()
	c1.kill()
	c2 := startBeating(t, h, "T", interval/2)
	var ev schemas.TownEvent
	// The polecat's death; the mayor, when patrol had started it in the
	// killed container too, dies alongside.
	for ev.Subject != res.AgentID {
		select {
		case ev = <-dead:
		case <-time.After(30 * interval):
			t.Fatal("the agent of the killed container was never declared dead")
		}
	}
	require.Equal(t, res.AgentID, ev.Subject)
	require.Equal(t, run1, ev.Detail["runId"])
	t.Logf("declared dead %s after the kill (3 intervals = %s)", time.Since(killedAt).Round(time.Millisecond), 3*interval)

	require.Eventually(t, func() bool { return c2.run(res.AgentID) != "" }, 10*time.Second, 10*time.Millisecond,
		"the work is dispatched again, to the new container")
	run2 := c2.run(res.AgentID)
	require.NotEqual(t, run1, run2)
	a := agentState(t, h, "T", res.AgentID)
	require.Equal(t, run2, a.RunID)
	require.Equal(t, "b", a.Hook)

	// A late heartbeat from the dead run is refused: nothing changes, and
	// the new run is not touched.
	tw, _ := schemas.ForTown("T")
	c2.beat(t, tw, []schemas.AgentBeat{{AgentID: res.AgentID, RunID: run1, Status: schemas.RunRunning, LastActivityAt: time.Now()}})
	c2.beat(t, tw, []schemas.AgentBeat{{AgentID: res.AgentID, RunID: run1, Status: schemas.RunExited}})
	require.NoError(t, h.Conn().Flush())
	after := agentState(t, h, "T", res.AgentID)
	require.Equal(t, run2, after.RunID)
	require.Equal(t, coordinator.AgentWorking, after.Status)
}

// TestRestartKeepsLiveness: restarting the coordinator while agents run
// declares nothing dead and dispatches nothing twice. The coordinator's
// clock is moved by hand, the container beating every half interval of it.
func TestRestartKeepsLiveness(t *testing.T) {
	const interval = 200 * time.Millisecond
	clk := clock.NewManual(time.Now())
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: interval, Clock: clk})
	slingOne(t, h)
	c1 := startBeating(t, h, "T", 0)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.True(t, res.Dispatched, res.Error)
	run := c1.run(res.AgentID)
	c1.beatStored(t, h, clk.Now())

	// Down for longer than the dead-after time.
	h.Stop()
	clk.Advance(5 * interval)
	h.Restart(nil)

	dead := atomic.Int64{}
	sub, err := h.Conn().Subscribe("gastown.town.T.events", func(m *nats.Msg) {
		var ev schemas.TownEvent
		if schemas.Decode(m.Data, &ev) == nil && ev.Kind == schemas.EventAgentDead {
			dead.Add(1)
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, h.Conn().Flush())
	// Watch 10 intervals of heartbeats arrive after the restart: each
	// advance runs patrol before that step's heartbeat is sent.
	for range 20 {
		clk.Advance(interval / 2)
		c1.beatStored(t, h, clk.Now())
	}
	require.NoError(t, h.Conn().Flush())
	a := agentState(t, h, "T", res.AgentID)
	require.Equal(t, coordinator.AgentWorking, a.Status)
	require.Equal(t, run, a.RunID, "the same run carries on")
	require.Zero(t, dead.Load(), "nothing is declared dead because the coordinator was down")
	c1.mu.Lock()
	defer c1.mu.Unlock()
	require.Equal(t, 1, c1.starts[res.AgentID], "nothing is dispatched twice")
}

// TestDispatchRetriesThenFails: with no container to take it, a dispatch
// is tried again after each cooldown, and after 5 tries the bead fails and
// the polecat is unhooked.
func TestDispatchRetriesThenFails(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{DispatchCooldown: 30 * time.Millisecond, MaxAttempts: 5})
	slingOne(t, h)
	// A container that refuses every start (a dispatch that finds no
	// container at all is not an attempt: awaitcontainer_test.go).
	sub, err := h.TownConn("T").QueueSubscribe("gastown.town.T.dispatch", schemas.ContainerQueue, func(m *nats.Msg) {
		var req schemas.StartAgent
		if schemas.Decode(m.Data, &req) == nil {
			_ = bus.Respond(m, &schemas.StartAgentResult{AgentID: req.AgentID, RunID: req.RunID, Error: "no such command"})
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, h.TownConn("T").Flush())
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.False(t, res.Dispatched)
	require.Contains(t, res.Error, "container refused")
	a := agentState(t, h, "T", res.AgentID)
	require.Equal(t, 1, a.Attempts)
	require.True(t, a.NextAttemptAt.After(a.UpdatedAt), "it waits the cooldown")
	require.Eventually(t, func() bool { return bead(t, h, "b").Status == coordinator.BeadFailed }, 10*time.Second, 10*time.Millisecond)
	a = agentState(t, h, "T", res.AgentID)
	require.Empty(t, a.Hook, "unhooked")
	require.Equal(t, coordinator.AgentIdle, a.Status)
	require.Empty(t, bead(t, h, "b").Assignee)
}

// TestDeathAcrossRestart: an agent whose container died just before the
// coordinator restarted is declared dead with its real last heartbeat as
// lastSeenAt (not the restart plus a grace), and within the usual
// intervals of the restart rather than twice that. The coordinator's clock
// is moved by hand.
func TestDeathAcrossRestart(t *testing.T) {
	const interval = 200 * time.Millisecond
	clk := clock.NewManual(time.Now())
	h := coordinatortest.Start(t, coordinator.Config{HeartbeatInterval: interval, DispatchCooldown: time.Hour, Clock: clk})
	slingOne(t, h)
	c := startBeating(t, h, "T", 0)
	var res schemas.SlingResult
	require.NoError(t, admin(t, h, schemas.AdminSling, schemas.Sling{TownID: "T", BeadID: "b"}, &res))
	require.True(t, res.Dispatched, res.Error)
	require.Eventually(t, func() bool { return c.run(res.AgentID) != "" }, 10*time.Second, 5*time.Millisecond)

	// A heartbeat naming the run is stored; then the container is killed,
	// and the last heartbeat stored before the restart is read.
	clk.Advance(interval / 2)
	c.beatStored(t, h, clk.Now())
	c.kill()
	last, ok := lastHeartbeat(t, stateKV(t, h, schemas.BucketHeartbeats))
	require.True(t, ok)
	require.True(t, slices.ContainsFunc(last.Agents, func(a schemas.AgentBeat) bool { return a.AgentID == res.AgentID }))

	h.Restart(nil)
	restarted := clk.Now()
	dead := make(chan schemas.TownEvent, 8)
	sub, err := h.Conn().Subscribe("gastown.town.T.events", func(m *nats.Msg) {
		var ev schemas.TownEvent
		if schemas.Decode(m.Data, &ev) == nil && ev.Kind == schemas.EventAgentDead && ev.Subject == res.AgentID {
			dead <- ev
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, h.Conn().Flush())
	// Past the grace after a restart (twice the dead-after time) by half an
	// interval of the clock at a time: the patrol that takes the last tick
	// reads a clock past it.
	for range 2 * (2*coordinator.DefaultDeadAfter + 1) {
		clk.Advance(interval / 2)
	}
	var ev schemas.TownEvent
	select {
	case ev = <-dead:
	case <-time.After(100 * interval):
		t.Fatal("the agent of the dead container was never declared dead after the restart")
	}
	seen, err := time.Parse(time.RFC3339Nano, ev.Detail["lastSeenAt"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, last.ReceivedAt, seen, time.Millisecond,
		"lastSeenAt is the last heartbeat, not the restart plus a grace")
	t.Logf("declared dead %s of the clock after the restart", clk.Now().Sub(restarted))
}
