package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func startSource(t testing.TB, h *coordinatortest.Harness, town string) *agentclient.TokenSource {
	t.Helper()
	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: h.URL(), Token: h.ContainerToken(town), ContainerID: "c-" + town, Logger: bustest.Logger(t),
	})
	require.NoError(t, err)
	t.Cleanup(src.Close)
	return src
}

type tokenState struct {
	TownID        string    `json:"townId"`
	NextRefreshAt time.Time `json:"nextRefreshAt"`
	LastIssuedAt  time.Time `json:"lastIssuedAt"`
}

func readState(t *testing.T, h *coordinatortest.Harness, town string) tokenState {
	t.Helper()
	kv := stateKV(t, h, schemas.BucketTokens)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The schedule is saved just after the token is answered.
	var e jetstream.KeyValueEntry
	var err error
	require.Eventually(t, func() bool { e, err = kv.Get(ctx, town); return err == nil }, 5*time.Second, 5*time.Millisecond, "no token state for %s", town)
	var s tokenState
	require.NoError(t, json.Unmarshal(e.Value(), &s))
	require.NotContains(t, string(e.Value()), "eyJ", "no token is ever stored")
	return s
}

// TestRestartDoesNotRefreshTownsNotDue: the schedule is stored, so a
// restarted coordinator refreshes only the towns that are due.
func TestRestartDoesNotRefreshTownsNotDue(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{
		TokenTTL: 4 * time.Hour, RefreshInterval: time.Hour, RefreshJitter: time.Minute,
	})
	a := startSource(t, h, "A")
	b := startSource(t, h, "B")
	stA := readState(t, h, "A")
	require.True(t, stA.NextRefreshAt.After(time.Now().Add(59*time.Minute)), "connecting sets a full interval: %v", stA.NextRefreshAt)
	tokA, tokB := a.Token(), b.Token()

	h.Restart(nil)
	for _, src := range []*agentclient.TokenSource{a, b} {
		require.Eventually(t, func() bool { return src.Conn().FlushTimeout(time.Second) == nil }, 15*time.Second, 10*time.Millisecond,
			"containers reconnect to the restarted coordinator")
	}
	// Make B due (as if its hour had passed) and watch the loop refresh it:
	// proof the restarted loop ran while A, not due, was left alone.
	js, err := jetstream.New(h.StateConn())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, schemas.BucketTokens)
	require.NoError(t, err)
	e, err := kv.Get(ctx, "B")
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(e.Value(), &raw))
	raw["nextRefreshAt"] = time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	v, _ := json.Marshal(raw)
	_, err = kv.Update(ctx, "B", v, e.Revision())
	require.NoError(t, err)

	require.Eventually(t, func() bool { return b.Token() != tokB }, 15*time.Second, 10*time.Millisecond, "B is due and refreshed")
	require.Equal(t, tokA, a.Token(), "A is not due and not refreshed")
	require.Equal(t, stA.LastIssuedAt, readState(t, h, "A").LastIssuedAt)
}

// TestIdleTownNotRefreshed: a town whose container is gone is not woken.
func TestIdleTownNotRefreshed(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	admin := h.AdminConn()
	b, _ := json.Marshal(schemas.TownCreate{TownID: "idle"})
	_, err := admin.Request("gastown.admin.town.create", b, 5*time.Second)
	require.NoError(t, err)
	base := h.Daemon.Server().NumClients()
	src := startSource(t, h, "idle")
	src.Close()
	// Wait until the server has seen the container go (only the
	// coordinator's and the test's own connections are left).
	require.Eventually(t, func() bool { return h.Daemon.Server().NumClients() == base }, 5*time.Second, 5*time.Millisecond)
	var res schemas.RotateResult
	b, _ = json.Marshal(schemas.TownRequest{TownID: "idle"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, bus.Call(ctx, admin, &nats.Msg{Subject: "gastown.admin.token.rotate", Data: b}, &res))
	require.True(t, res.Idle)
	require.False(t, res.Acknowledged)
	require.Empty(t, res.Error)
}

// TestTokenGetRefusesOtherTown: a body naming another town is refused, and
// the refusal carries its code (an Ack with code and Gastown-Error).
func TestTokenGetRefusesOtherTown(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rot schemas.TokenRotation
	err := bus.Request(ctx, h.TownConn("A"), "gastown.town.A.token.get", &schemas.TokenRequest{TownID: "B", ContainerID: "x"}, &rot)
	require.ErrorIs(t, err, schemas.ErrPermissionDenied, "the reply is a refusal with its code, not a token")
	require.NoError(t, bus.Request(ctx, h.TownConn("A"), "gastown.town.A.token.get", &schemas.TokenRequest{TownID: "A", ContainerID: "x"}, &rot))
	require.Equal(t, "A", rot.TownID)
	claims, err := h.Issuer.VerifyContainer(rot.Token)
	require.NoError(t, err)
	require.Equal(t, "A", claims.TownID)
}

// BenchmarkRotationFanout: time for a forced rotation to reach N connected
// containers and be acknowledged by all of them.
func BenchmarkRotationFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			h := coordinatortest.Start(b, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
			towns := make([]string, n)
			for i := range towns {
				towns[i] = fmt.Sprintf("t%d", i)
				// token.rotate answers only for a town that exists
				body, _ := json.Marshal(schemas.TownCreate{TownID: towns[i]})
				require.NoError(b, bus.Call(context.Background(), h.AdminConn(), &nats.Msg{Subject: "gastown.admin.town.create", Data: body}, nil))
				startSource(b, h, towns[i])
			}
			b.ResetTimer()
			cpu := processCPU()
			for b.Loop() {
				var wg sync.WaitGroup
				for _, town := range towns {
					wg.Go(func() {
						var res schemas.RotateResult
						body, _ := json.Marshal(schemas.TownRequest{TownID: town})
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						if err := bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: "gastown.admin.token.rotate", Data: body}, &res); err != nil || !res.Acknowledged {
							b.Errorf("rotation of %s: %v %+v", town, err, res)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/rotation-of-all")
			b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N*n), "cpu-µs/town")
		})
	}
}
