package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// The generated configs run a 3-node cluster whose coordinator users land
// in their accounts, and whose nodes grant nothing to a token without the
// callout.
func TestNodeConfigsRunACluster(t *testing.T) {
	c := clustertest.StartInProcess(t, clustertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	creds := c.Creds()

	// Every node: JetStream on, in the state and ops accounts only; one
	// meta leader for all.
	leaders := 0
	for i := range 3 {
		s := c.Server(i)
		require.Equal(t, cluster.NodeName(i), s.Name())
		if s.JetStreamIsLeader() {
			leaders++
		}
		for name, js := range map[string]bool{bus.ControlAccount: false, cluster.StateAccount: true, bus.OpsAccount: true, cluster.AuthAccount: false} {
			acc, err := s.LookupAccount(name)
			require.NoError(t, err, name)
			require.Equal(t, js, acc.JetStreamEnabled(), "JetStream in %s on %s", name, s.Name())
		}
		require.Equal(t, cluster.SystemAccount, s.SystemAccount().Name)
	}
	require.Equal(t, 1, leaders)

	// The state user keeps replicated state.
	state := c.Connect(creds.State)
	sjs, err := jetstream.New(state)
	require.NoError(t, err)
	kv, err := sjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketTowns, Replicas: 3})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "demo", []byte("{}"))
	require.NoError(t, err)

	// The control user is in GASTOWN, which has no JetStream, and may
	// publish events, which the ops account imports.
	control := c.Connect(creds.Control)
	opsErrs := make(chan error, 16)
	// The break-glass ops key: no coordinator runs here.
	ops, err := c.ConnectOpsKey(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case opsErrs <- err:
		default:
		}
	}))
	require.NoError(t, err)
	events, err := ops.SubscribeSync(schemas.AllTowns.Events())
	require.NoError(t, err)
	require.NoError(t, ops.Flush())
	demo, err := schemas.ForTown("demo")
	require.NoError(t, err)
	require.NoError(t, control.Publish(demo.Events(), []byte(`{"kind":"test"}`)))
	m, err := events.NextMsgWithContext(ctx)
	require.NoError(t, err)
	require.Equal(t, demo.Events(), m.Subject)

	// The ops key sees the ops account's JetStream, not the state's: the
	// state bucket is not there.
	ojs, err := jetstream.New(ops)
	require.NoError(t, err)
	_, err = ojs.Stream(ctx, "KV_"+schemas.BucketTowns)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
	// ... and may not create a stream there.
	require.NoError(t, ops.Publish("$JS.API.STREAM.CREATE.scribble", []byte(`{"name":"scribble"}`)))
	select {
	case err := <-opsErrs:
		require.ErrorIs(t, err, nats.ErrPermissionViolation)
	case <-ctx.Done():
		t.Fatal("ops created a stream unrefused")
	}

	// The ops copier's user writes in the ops account, within its limits.
	copier := c.Connect(creds.OpsCopy)
	cjs, err := jetstream.New(copier)
	require.NoError(t, err)
	info, err := cjs.AccountInfo(ctx)
	require.NoError(t, err)
	require.Equal(t, len(schemas.StateBuckets)-1, info.Limits.MaxStreams)
	require.Equal(t, 64, info.Limits.MaxConsumers)
	_, err = cjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketTowns, Replicas: 3})
	require.NoError(t, err)

	// The system user sees every server.
	sys := c.Connect(creds.System)
	seen, err := clustertest.MetaLeaders(ctx, sys, 3)
	require.NoError(t, err)
	require.Len(t, seen, 3)

	// The callout's user connects to the auth account.
	auth := c.Connect(creds.Auth)
	require.True(t, auth.IsConnected())

	// A wrong ops key: refused.
	other, err := nkeys.CreateUser()
	require.NoError(t, err)
	otherPub, err := other.PublicKey()
	require.NoError(t, err)
	_, err = nats.Connect(c.URL(), nats.Nkey(otherPub, other.Sign), nats.NoReconnect(), nats.Timeout(10*time.Second))
	require.ErrorContains(t, err, "Authorization Violation")
}

// With no callout responder, a container token gets no connection on any
// node: the configs grant nothing without the callout.
func TestNoCalloutNoToken(t *testing.T) {
	c := clustertest.StartInProcess(t, clustertest.Options{Plan: func(p *cluster.Plan) { p.AuthTimeout = 1 }})
	// The client learns every node from the first one's INFO and tries each
	// in turn, so one refusal is every node's. It waits longer than the
	// callout's deadline. Each attempt waits out that deadline on every
	// node, so the three run at once.
	attempts := []struct {
		url  string
		auth nats.Option
	}{
		{c.URLs()[0], nats.Token("a-container-token")},
		{c.URLs()[1], nats.UserInfo("admin", "whatever")},
		// The ops password is the callout's to check: no node knows it.
		{c.URLs()[2], nats.UserInfo(cluster.OpsUser, "any-password")},
	}
	errs := make([]error, len(attempts))
	var wg sync.WaitGroup
	for i, a := range attempts {
		wg.Go(func() {
			nc, err := nats.Connect(a.url, a.auth, nats.NoReconnect(), nats.Timeout(10*time.Second))
			if err == nil {
				nc.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.ErrorContains(t, err, "Authorization Violation")
	}
	// The break-glass ops key is every node's own: it needs no callout.
	for i := range c.URLs() {
		kp := c.OpsKey()
		pub, err := kp.PublicKey()
		require.NoError(t, err)
		nc, err := nats.Connect(c.URLs()[i], nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(schemas.OpsInbox),
			nats.NoReconnect(), nats.IgnoreDiscoveredServers())
		require.NoError(t, err, "node %d", i+1)
		nc.Close()
	}
}
