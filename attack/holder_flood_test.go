package attack_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestRedTeamHolderFloodStarvesNoOtherTown: alpha floods ping at
// ~10,000/s, half on its holder subject and half on the queue group's, as
// if each were a budget of its own. It is not: both are charged to alpha's
// one RPC rate (what got through is within one burst and rate), alpha is
// told resource_exhausted with a retry hint, and beta's checkpoints, on
// its holder subject and the queue group's in turn, all succeed.
// Checked to fail when admitRPC skips the town's rate for holder subjects.
func TestRedTeamHolderFloodStarvesNoOtherTown(t *testing.T) {
	const rpcRate = 500
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{RPCRate: rpcRate}})
	adm := adminConn(t, h)
	makeTowns(t, adm, "alpha", "beta")
	alpha, alphaTok := townConn(t, h, "alpha")
	beta, betaTok := townConn(t, h, "beta")

	// Both towns' leases are held: their holder subjects answer.
	for _, c := range []struct {
		nc        *nats.Conn
		town, tok string
	}{{alpha, "alpha", alphaTok}, {beta, "beta", betaTok}} {
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			return bus.Call(ctx, c.nc, toHolder(t, toolMsg(t, c.town, c.tok, schemas.ToolPing, nil)), nil) == nil
		}, wait, 50*time.Millisecond, "%s's holder subject answers", c.town)
	}

	r := &replies{byCode: map[string]int{}}
	var n atomic.Int64
	var sent int64
	start := time.Now()
	lat, errs := during(func() {
		sent = flood(t, alpha, "_INBOX.gastown.alpha.flood", r, func() *nats.Msg {
			m := toolMsg(t, "alpha", alphaTok, schemas.ToolPing, nil)
			if n.Add(1)%2 == 0 {
				m = toHolder(t, m)
			}
			return m
		})
	}, 50*time.Millisecond, 1, func(i int) error {
		m := toolMsg(t, "beta", betaTok, schemas.ToolCheckpoint, schemas.Checkpoint{Note: fmt.Sprintf("beta %d", i)})
		if i%2 == 0 {
			m = toHolder(t, m)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := bus.Call(ctx, beta, m, nil); err != nil {
			return fmt.Errorf("call %d at %s: %w", i, time.Since(start).Round(time.Millisecond), err)
		}
		return nil
	})
	require.Eventually(t, func() bool { return r.answered.Load() == sent }, time.Minute, 10*time.Millisecond,
		"every flood request is answered (%d of %d so far)", r.answered.Load(), sent)
	elapsed := time.Since(start) // alpha's calls were all admitted or refused by now
	t.Logf("beta: %d calls, %d failed, p99 %s; alpha: %v", len(lat)+len(errs), len(errs), p99(lat), r.byCode)
	require.Empty(t, errs, "beta's calls failed during alpha's flood")
	require.Positive(t, r.get(schemas.CodeResourceExhausted), "alpha is told it is over its limits")
	require.Zero(t, r.noHint, "every resource_exhausted carries a retry hint")
	ok := r.get("")
	maxOK := rpcRate*2 + rpcRate*elapsed.Seconds()
	require.LessOrEqual(t, float64(ok), maxOK, "alpha's calls on both subjects together are within one burst and rate")
	require.Positive(t, ok, "alpha is not shut out: its share gets through")
	last := len(lat) + len(errs) - 1
	require.Equal(t, fmt.Sprintf("beta %d", last), agentCheckpoint(t, adm, "beta"), "beta's last write is stored")
}
