package kvstore_test

import (
	"context"
	"testing"

	"github.com/cockroachdb/errors"
	"time"

	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// A coordinator started while a node is down, or just behind the nodes
// (make cluster), is told "no suitable peers for placement" for a new R3
// bucket until the node is seen: OpenKV waits for it instead of failing
// the start (a clean-clone CI run here failed a cluster test on it).
func TestOpenKVWaitsForPlacementPeers(t *testing.T) {
	// Node 3 has not started: the meta leader has never heard from it,
	// so an R3 bucket cannot be placed.
	c := clustertest.Start(t, clustertest.Options{Later: []int{2}})
	js, err := jetstream.New(c.Connect(c.Creds().State))
	require.NoError(t, err)
	cfg := jetstream.KeyValueConfig{Bucket: "placement_test", Replicas: 3}
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	_, err = js.CreateKeyValue(pctx, jetstream.KeyValueConfig{Bucket: "probe", Replicas: 3})
	var api *jetstream.APIError
	require.True(t, errors.As(err, &api) && api.ErrorCode == 10005, "an R3 bucket with a node never started: %v", err)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opened := make(chan error, 1)
	go func() {
		_, err := kvstore.OpenKV(ctx, js, cfg)
		opened <- err
	}()
	c.Restart(2)
	require.NoError(t, <-opened, "OpenKV gave up while the node came back")
}
