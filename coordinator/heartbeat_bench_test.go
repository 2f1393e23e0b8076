package coordinator

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHeartbeatIngestion: 10,000 working agents in 100 towns (100 per
// container); each op is one heartbeat of one container, fenced against
// the agents' runs and stored. Reports heartbeats and agent lines absorbed
// per second and the CPU spent per 1,000 heartbeats.
func BenchmarkHeartbeatIngestion(b *testing.B) {
	const towns, perTown = 100, 100
	srv := bustest.Start(b, bus.Config{})
	nc := bustest.Connect(b, srv)
	key, err := token.NewKey([]byte("benchmark-secret-of-at-least-32-bytes!!"))
	require.NoError(b, err)
	c, err := New(context.Background(), nc, token.NewIssuer(token.NewKeyRing(key), nil), Config{HeartbeatInterval: time.Hour, DispatchCooldown: time.Hour}, WithStateConn(bustest.ConnectState(b, srv)))
	require.NoError(b, err)
	b.Cleanup(c.Close)
	ctx := context.Background()
	msgs := make([]*nats.Msg, towns)
	for t := range towns {
		town := fmt.Sprintf("town%d", t)
		hb := &schemas.Heartbeat{TownID: town, ContainerID: "c", SentAt: time.Now()}
		for a := range perTown {
			ag := Agent{TownID: town, AgentID: fmt.Sprintf("a%d", a), RigID: "r", Role: schemas.RolePolecat, Status: AgentWorking, RunID: newRunID(), DispatchedAt: time.Now()}
			require.NoError(b, c.st.agents.Create(ctx, schemas.Key(town, ag.AgentID), ag))
			hb.Agents = append(hb.Agents, schemas.AgentBeat{AgentID: ag.AgentID, RunID: ag.RunID, Status: schemas.RunRunning, LastActivityAt: time.Now()})
		}
		data, err := schemas.Encode(hb)
		require.NoError(b, err)
		msgs[t] = &nats.Msg{Subject: "gastown.town." + town + ".heartbeat", Data: data}
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		c.handleHeartbeat(msgs[i%towns])
		i++
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(i)/secs, "heartbeats/s")
	b.ReportMetric(float64(i*perTown)/secs, "agent-lines/s")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(i)*1000, "cpu-ms/1000-heartbeats")
}
