package bus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Refusals are answered in the callout's first stage, counted by reason
// and as refused fast; only admitted connections reach the grant lane.
func TestCalloutRefusesInTheFirstStage(t *testing.T) {
	f := newCalloutFixture(t)
	before := f.callout.Counts()
	const garbage = 20
	for i := range garbage {
		_, err := nats.Connect(f.url, nats.Token(fmt.Sprintf("garbage-%d", i)), nats.MaxReconnects(0))
		require.ErrorIs(t, err, nats.ErrAuthorization)
	}
	_, err := nats.Connect(f.url, nats.UserInfo("nobody", "guess"), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)
	nc, err := nats.Connect(f.url, nats.Token(f.mint(t, "alpha", time.Hour)), nats.CustomInboxPrefix(inbox("alpha")))
	require.NoError(t, err)
	nc.Close()
	admin, err := nats.Connect(f.url, nats.UserInfo(bus.AdminUser, adminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))
	require.NoError(t, err)
	admin.Close()

	after := f.callout.Counts()
	require.Equal(t, uint64(garbage+1), after.RefusedFast-before.RefusedFast)
	require.Equal(t, uint64(2), after.Granted-before.Granted, "the container and the admin")
	require.Zero(t, after.Dropped-before.Dropped)
	require.Equal(t, uint64(garbage+3), after.Requests-before.Requests)
	require.Equal(t, uint64(garbage), f.callout.Refused()[bus.RefusedBadToken])
	require.Equal(t, uint64(1), f.callout.Refused()[bus.RefusedUnknownUser])
}
