package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestLeasesOneCoordinatorPerTown: two coordinators on one bus; each town's
// loops run on exactly one of them, and the other takes over when it stops.
func TestLeasesOneCoordinatorPerTown(t *testing.T) {
	srv := bustest.Start(t, bus.Config{})
	key, err := NewKey([]byte("lease-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	issuer := NewIssuer(NewKeyRing(key), nil)
	cfg := Config{LeaseTTL: 300 * time.Millisecond, Logger: bustest.Logger(t)}
	a, err := New(context.Background(), bustest.Connect(t, srv), issuer, cfg, WithStateConn(bustest.ConnectState(t, srv)))
	require.NoError(t, err)
	defer a.Close()
	b, err := New(context.Background(), bustest.Connect(t, srv), issuer, cfg, WithStateConn(bustest.ConnectState(t, srv)))
	require.NoError(t, err)
	defer b.Close()

	ctx := context.Background()
	for _, town := range []string{"T1", "T2", "T3"} {
		_, err := a.createTown(ctx, schemas.TownCreate{TownID: town})
		require.NoError(t, err)
	}
	exactlyOne := func(town string) bool { return a.leases.holds(town) != b.leases.holds(town) }
	for _, town := range []string{"T1", "T2", "T3"} {
		require.Eventually(t, func() bool { return exactlyOne(town) }, 5*time.Second, 5*time.Millisecond, "town %s", town)
	}
	// Stop whichever holds T1: the other takes over.
	holder, other := a, b
	if b.leases.holds("T1") {
		holder, other = b, a
	}
	holder.Close()
	require.Eventually(t, func() bool { return other.leases.holds("T1") }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		return other.leases.holds("T2") && other.leases.holds("T3")
	}, 5*time.Second, 5*time.Millisecond)
}
