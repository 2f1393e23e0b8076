package coordinator

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestHolderSubjectFollowsTheLease: the coordinator holding a town's
// lease, and only it, subscribes the town's holder subject
// (gastown.town.<T>.holder.rpc.>), where the town's tool calls are
// answered. When a second coordinator joins and takes half the towns,
// each holder subject moves with its lease; when a coordinator stops
// acting on its leases (its state connection cut, its control
// connection still up) it unsubscribes them, and the coordinator that
// takes the leases over answers there.
func TestHolderSubjectFollowsTheLease(t *testing.T) {
	srv, issuer, start := leaseBus(t)
	towns := []string{"T1", "T2"}
	// pingHolder calls ping on town's holder subject, as its container.
	callers := map[string]*nats.Conn{}
	pingHolder := func(town string) error {
		tw, err := schemas.ForTown(town)
		require.NoError(t, err)
		nc, ok := callers[town]
		if !ok {
			nc = bustest.Connect(t, srv, nats.CustomInboxPrefix(tw.Inbox()))
			callers[town] = nc
		}
		tok, _, err := issuer.MintContainer(town, "", time.Hour)
		require.NoError(t, err)
		subject, err := tw.HolderRPC(schemas.ToolPing)
		require.NoError(t, err)
		m := nats.NewMsg(subject)
		m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
		m.Data = []byte("{}")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return bus.Call(ctx, nc, m, nil)
	}
	// subscribedAsHeld: c subscribes exactly the holder subjects of the
	// towns it acts on.
	subscribedAsHeld := func(c *Coordinator) bool {
		var held []string
		for _, town := range towns {
			if c.leases.holds(town) {
				held = append(held, town)
			}
		}
		got := c.holderTowns()
		slices.Sort(got)
		return slices.Equal(got, held)
	}

	a, _ := start()
	for _, town := range towns {
		_, err := a.createTown(context.Background(), schemas.TownCreate{TownID: town})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return a.leases.heldCount() == 2 && subscribedAsHeld(a) }, 10*time.Second, 10*time.Millisecond)
	for _, town := range towns {
		require.NoError(t, pingHolder(town), "the holder answers %s's holder subject", town)
	}

	b, cutB := start()
	require.Eventually(t, func() bool {
		return a.leases.heldCount() == 1 && b.leases.heldCount() == 1 && subscribedAsHeld(a) && subscribedAsHeld(b)
	}, 10*time.Second, 10*time.Millisecond, "one town's lease, and its holder subject, moved to the newcomer")
	moved := b.holderTowns()[0]
	require.NotContains(t, a.holderTowns(), moved, "the old holder let the holder subject go with the lease")
	for _, town := range towns {
		require.NoError(t, pingHolder(town), "the holder answers %s's holder subject", town)
	}

	// b can no longer renew: it stops acting on its lease on its own
	// clock, and lets the holder subject go; a takes the lease once the
	// store expires it, and answers there.
	cutB()
	require.Eventually(t, func() bool { return len(b.holderTowns()) == 0 }, 10*time.Second, 10*time.Millisecond,
		"a coordinator that stopped acting on its lease no longer takes the town's calls")
	require.Eventually(t, func() bool { return a.leases.heldCount() == 2 && subscribedAsHeld(a) }, 20*time.Second, 10*time.Millisecond)
	for _, town := range towns {
		require.NoError(t, pingHolder(town), "the new holder answers %s's holder subject", town)
	}
}
