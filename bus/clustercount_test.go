package bus_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// townCapCluster is a 3-node cluster whose callout counts the towns' connections with a cap of
// limit, reconciling every 100 ms.
type townCapCluster struct {
	c       *clustertest.Cluster
	f       *fixture
	callout *bus.Callout
}

func newTownCapCluster(t *testing.T, limit int) *townCapCluster {
	t.Helper()
	c := clustertest.Start(t, clustertest.Options{})
	f := newFixture(t, token.AuthConfig{})
	auth, err := token.NewConnAuthorizer(f.issuer, token.AuthConfig{}, nil)
	require.NoError(t, err)
	creds := c.Creds()
	callout, err := bus.StartCallout(c.Connect(creds.Auth), bus.CalloutConfig{
		Tokens: auth, Issuer: creds.Issuer, XKey: creds.XKey, Limits: bus.Limits{TownConns: limit},
		System: c.Connect(creds.System), TownConnsReconcile: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(callout.Close)
	return &townCapCluster{c: c, f: f, callout: callout}
}

// connect connects town's container with tok to node i alone.
func (tc *townCapCluster) connect(t *testing.T, i int, town, tok string) (*nats.Conn, error) {
	t.Helper()
	nc, err := nats.Connect(tc.c.URLs()[i%len(tc.c.URLs())], nats.Token(tok), nats.CustomInboxPrefix(inbox(town)),
		nats.NoReconnect(), nats.IgnoreDiscoveredServers(), nats.Timeout(waitFor))
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

// A town may have TownConns connections open at once over the whole
// cluster, one at a time on any node; one more is refused while other
// towns connect as usual, and a closed connection frees its slot.
func TestClusterTownConnCap(t *testing.T) {
	const limit = 3
	tc := newTownCapCluster(t, limit)
	alpha := tc.f.mint(t, "alpha", time.Hour)
	var open []*nats.Conn
	for i := range limit {
		nc, err := tc.connect(t, i, "alpha", alpha)
		require.NoError(t, err, "connection %d of the town", i+1)
		open = append(open, nc)
	}
	for i := range 3 {
		_, err := tc.connect(t, i, "alpha", alpha)
		require.ErrorIs(t, err, nats.ErrAuthorization, "a connection past the cap on node %d", i+1)
	}
	require.Equal(t, uint64(3), tc.callout.Refused()[bus.RefusedTownFull])
	_, err := tc.connect(t, 0, "beta", tc.f.mint(t, "beta", time.Hour))
	require.NoError(t, err, "another town connects as usual")

	// Closing one frees its slot once its server announces the close.
	open[1].Close()
	require.Eventually(t, func() bool {
		live, pending := tc.callout.TownConns("alpha")
		return live+pending == limit-1
	}, waitFor, 10*time.Millisecond, "the close was not counted")
	nc, err := tc.connect(t, 2, "alpha", alpha)
	require.NoError(t, err, "a closed connection still holds its slot")
	open[1] = nc
	_, err = tc.connect(t, 1, "alpha", alpha)
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// A node that dies announces no closes: its connections stop counting
// once it has missed the reconciles, and the town connects elsewhere.
func TestClusterTownConnCapForgetsADeadNode(t *testing.T) {
	const limit = 2
	tc := newTownCapCluster(t, limit)
	alpha := tc.f.mint(t, "alpha", time.Hour)
	_, err := tc.connect(t, 0, "alpha", alpha)
	require.NoError(t, err)
	_, err = tc.connect(t, 2, "alpha", alpha)
	require.NoError(t, err)
	_, err = tc.connect(t, 1, "alpha", alpha)
	require.ErrorIs(t, err, nats.ErrAuthorization)

	tc.c.Stop(2)
	require.Eventually(t, func() bool {
		live, pending := tc.callout.TownConns("alpha")
		return live+pending == 1
	}, waitFor, 20*time.Millisecond, "the dead node's connection still counts")
	_, err = tc.connect(t, 1, "alpha", alpha)
	require.NoError(t, err, "the town cannot connect after a node holding its connection died")
}
