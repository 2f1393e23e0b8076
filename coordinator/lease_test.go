package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

// TestLeasesOneCoordinatorPerTown: two coordinators on one bus; each town's
// loops run on exactly one of them, and the other takes over when it stops.
func TestLeasesOneCoordinatorPerTown(t *testing.T) {
	srv := bustest.Start(t, bus.Config{})
	key, err := token.NewKey([]byte("lease-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	issuer := token.NewIssuer(token.NewKeyRing(key), nil)
	cfg := Config{LeaseTTL: 2 * time.Second, Logger: bustest.Logger(t)}
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

// leaseBus is a bus and an issuer for coordinators with 2 s leases;
// start starts one more, closed when the test ends, and returns it with
// a function that cuts its state connection (it can then neither renew
// nor give up its leases).
func leaseBus(t *testing.T) (*bus.Server, *token.Issuer, func() (*Coordinator, func())) {
	srv := bustest.Start(t, bus.Config{})
	key, err := token.NewKey([]byte("lease-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	issuer := token.NewIssuer(token.NewKeyRing(key), nil)
	cfg := Config{LeaseTTL: 2 * time.Second, Logger: bustest.Logger(t)}
	return srv, issuer, func() (*Coordinator, func()) {
		sc := bustest.ConnectState(t, srv)
		c, err := New(context.Background(), bustest.Connect(t, srv), issuer, cfg, WithStateConn(sc))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return c, sc.Close
	}
}

// TestLeasesSpreadAndLapse: the towns are spread over the coordinators
// (none holds more than ceil(towns/coordinators)+1, and they even out),
// re-spread when one joins, and a coordinator that vanishes without
// giving its leases up loses them when the bucket's TTL expires them.
func TestLeasesSpreadAndLapse(t *testing.T) {
	_, _, start := leaseBus(t)
	a, _ := start()
	towns := []string{"T1", "T2", "T3", "T4", "T5", "T6"}
	for _, town := range towns {
		_, err := a.createTown(context.Background(), schemas.TownCreate{TownID: town})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return a.leases.heldCount() == 6 }, 5*time.Second, 10*time.Millisecond)

	b, cutB := start()
	evenly := func(cs ...*Coordinator) func() bool {
		return func() bool {
			for _, c := range cs {
				if c.leases.heldCount() != len(towns)/len(cs) {
					return false
				}
			}
			for _, town := range towns {
				n := 0
				for _, c := range cs {
					if c.leases.holds(town) {
						n++
					}
				}
				if n != 1 {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, evenly(a, b), 10*time.Second, 10*time.Millisecond, "two coordinators hold three towns each")
	c, _ := start()
	require.Eventually(t, evenly(a, b, c), 10*time.Second, 10*time.Millisecond, "three coordinators hold two towns each")

	// b vanishes: its state connection is cut, so it neither renews nor
	// gives up. It stops acting on its leases on its own clock, and the
	// others take its towns once the store expires them.
	mine := []string{}
	for _, town := range towns {
		if b.leases.holds(town) {
			mine = append(mine, town)
		}
	}
	require.Len(t, mine, 2)
	cutB()
	require.Eventually(t, func() bool {
		for _, town := range mine {
			if b.leases.holds(town) || a.leases.holds(town) == c.leases.holds(town) {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the vanished coordinator's towns moved to the others")
	for _, x := range []*Coordinator{a, c} {
		require.LessOrEqual(t, x.leases.heldCount(), 3+1, "ceil(6/2)+1")
	}
}
