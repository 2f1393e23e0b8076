package clustertest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// stateKV opens (creating) an R3 bucket over a state connection to urls
// only (not the nodes it learns of).
func stateKV(ctx context.Context, t *testing.T, c *clustertest.Cluster, kp nkeys.KeyPair, urls ...string) jetstream.KeyValue {
	t.Helper()
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(schemas.CoordinatorInbox),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.IgnoreDiscoveredServers())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var kv jetstream.KeyValue
	eventually(ctx, t, func(ctx context.Context) error {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketTowns, Replicas: 3})
		return err
	})
	return kv
}

// eventually retries f, each try bounded, until it succeeds or ctx ends.
func eventually(ctx context.Context, t *testing.T, f func(ctx context.Context) error) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		try, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := f(try)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never succeeded: %v", err)
		case <-tick.C:
		}
	}
}

func requireValue(ctx context.Context, t *testing.T, kv jetstream.KeyValue, key, want string) {
	t.Helper()
	eventually(ctx, t, func(ctx context.Context) error {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return err
		}
		if string(e.Value()) != want {
			return errValue(string(e.Value()))
		}
		return nil
	})
}

type errValue string

func (e errValue) Error() string { return "value is " + string(e) }

// A real-process cluster loses no acknowledged write when a node is
// SIGKILLed, and the node rejoins when restarted.
func TestKilledNodeLosesNothing(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kv := stateKV(ctx, t, c, c.Creds().State, c.URLs()[1], c.URLs()[2])
	_, err := kv.Put(ctx, "a", []byte("1"))
	require.NoError(t, err)

	c.Kill(0)
	eventually(ctx, t, func(ctx context.Context) error { _, err := kv.Put(ctx, "a", []byte("2")); return err })
	requireValue(ctx, t, kv, "a", "2")

	c.Restart(0)
	c.WaitReady()
	// With node 2 gone, a write needs node 1 caught up: it has the latest.
	c.Kill(1)
	kv0 := stateKV(ctx, t, c, c.Creds().State, c.URLs()[0], c.URLs()[2])
	eventually(ctx, t, func(ctx context.Context) error { _, err := kv0.Put(ctx, "b", []byte("3")); return err })
	requireValue(ctx, t, kv0, "a", "2")
	c.Restart(1)
	c.WaitReady()
}

// A node cut off from the others refuses writes; the majority carries
// on; healed, the node catches up.
func TestPartitionedNode(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Partitionable: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	majority := stateKV(ctx, t, c, c.Creds().State, c.URLs()[0], c.URLs()[1])
	minority := stateKV(ctx, t, c, c.Creds().State, c.URLs()[2])
	_, err := majority.Put(ctx, "k", []byte("before"))
	require.NoError(t, err)

	c.Cut(2)
	// The minority cannot commit.
	try, stop := context.WithTimeout(ctx, 3*time.Second)
	_, err = minority.Put(try, "k", []byte("minority"))
	stop()
	require.Error(t, err)
	eventually(ctx, t, func(ctx context.Context) error { _, err := majority.Put(ctx, "k", []byte("during")); return err })

	c.Heal(2)
	c.WaitReady()
	// Cut another node: the write needs node 3, which must have caught up.
	c.Cut(0)
	eventually(ctx, t, func(ctx context.Context) error { _, err := minority.Put(ctx, "k2", []byte("after")); return err })
	requireValue(ctx, t, minority, "k", "during")
	c.Heal(0)
	c.WaitReady()
}

// An in-process node stopped and restarted from its config rejoins with
// what it stored.
func TestInProcessRestart(t *testing.T) {
	c := clustertest.StartInProcess(t, clustertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv := stateKV(ctx, t, c, c.Creds().State, c.URLs()...)
	_, err := kv.Put(ctx, "k", []byte("v1"))
	require.NoError(t, err)
	c.Stop(1)
	eventually(ctx, t, func(ctx context.Context) error { _, err := kv.Put(ctx, "k", []byte("v2")); return err })
	c.Restart(1)
	c.WaitReady()
	// Node 2 must be caught up for a write once node 1 is gone.
	c.Stop(0)
	eventually(ctx, t, func(ctx context.Context) error { _, err := kv.Put(ctx, "k2", []byte("x")); return err })
	requireValue(ctx, t, kv, "k", "v2")
}
