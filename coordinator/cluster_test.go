package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

const (
	clusterAdminPassword = "admin-password-of-the-cluster-test"
	clusterOpsPassword   = "ops-password-of-the-cluster-test"
)

// onCluster is a cluster with coordinators on it.
type onCluster struct {
	t      *testing.T
	c      *clustertest.Cluster
	issuer *token.Issuer
	cfg    coordinator.DaemonConfig
	ds     []*coordinator.Daemon
}

func startOnCluster(t *testing.T, coordinators int) *onCluster {
	t.Helper()
	c := clustertest.Start(t, clustertest.Options{})
	key, err := token.NewKey([]byte("cluster-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	o := &onCluster{t: t, c: c, issuer: token.NewIssuer(token.NewKeyRing(key), nil)}
	o.cfg = coordinator.DaemonConfig{
		Config:  coordinator.Config{Replicas: 3, LeaseTTL: 3 * time.Second, Logger: bustest.Logger(t)},
		Bus:     bus.Config{AdminPassword: clusterAdminPassword, OpsPassword: clusterOpsPassword},
		NatsURL: c.URL(), Cluster: c.Creds(),
	}
	for range coordinators {
		o.add()
	}
	return o
}

// add starts one more coordinator.
func (o *onCluster) add() *coordinator.Daemon {
	o.t.Helper()
	d, err := coordinator.StartDaemon(context.Background(), o.issuer, o.cfg)
	require.NoError(o.t, err)
	o.t.Cleanup(d.Close)
	o.ds = append(o.ds, d)
	return d
}

// node connects to node i alone.
func (o *onCluster) node(i int, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(o.c.URLs()[i], append([]nats.Option{nats.NoReconnect(), nats.Timeout(10 * time.Second)}, opts...)...)
	if err == nil {
		o.t.Cleanup(nc.Close)
	}
	return nc, err
}

func (o *onCluster) admin(method string, body, out any) error {
	o.t.Helper()
	nc, err := o.node(0, nats.UserInfo(bus.AdminUser, clusterAdminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))
	require.NoError(o.t, err)
	defer nc.Close()
	subject, err := schemas.Admin(method)
	require.NoError(o.t, err)
	b, err := json.Marshal(body)
	require.NoError(o.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return bus.Call(ctx, nc, &nats.Msg{Subject: subject, Data: b}, out)
}

func (o *onCluster) token(town string) string {
	o.t.Helper()
	tok, _, err := o.issuer.MintContainer(town, "", time.Hour)
	require.NoError(o.t, err)
	return tok
}

// ping calls the ping tool of town on nc with tok.
func ping(ctx context.Context, nc *nats.Conn, town, tok string) error {
	m := nats.NewMsg("gastown.town." + town + ".rpc.ping")
	m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
	m.Data = []byte("{}")
	return bus.Call(ctx, nc, m, nil)
}

// TestClusterContainersOnEveryNode: a container connects to any node with
// its token, gets its town's permissions and no other's, and its tool
// calls are answered by the coordinators, each exactly once.
func TestClusterContainersOnEveryNode(t *testing.T) {
	o := startOnCluster(t, 2)
	ctx := context.Background()
	town, err := schemas.ForTown("alpha")
	require.NoError(t, err)
	tok := o.token("alpha")
	for i := range o.c.URLs() {
		errs := make(chan error, 4)
		nc, err := o.node(i, nats.Token(tok), nats.CustomInboxPrefix(town.Inbox()),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		require.NoError(t, err, "node %d", i+1)
		for range 20 {
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			require.NoError(t, ping(callCtx, nc, "alpha", tok), "node %d", i+1)
			cancel()
		}
		// Another town's subjects are refused by the server.
		require.NoError(t, nc.Publish("gastown.town.bravo.heartbeat", []byte("{}")))
		require.NoError(t, nc.Flush())
		select {
		case err := <-errs:
			require.ErrorContains(t, err, "Permissions Violation")
		case <-time.After(10 * time.Second):
			t.Fatalf("node %d let a container publish on another town's subject", i+1)
		}
	}
	for _, bad := range []nats.Option{nats.Token("garbage"), nats.UserInfo(bus.AdminUser, "wrong"), nats.Name("no credentials")} {
		_, err := o.node(1, bad)
		require.ErrorContains(t, err, "Authorization Violation")
	}
	// The operator reads the state's copies from any node, and cannot write them.
	require.NoError(t, o.admin(schemas.AdminTownCreate, schemas.TownCreate{TownID: "alpha"}, nil))
	for i := range o.c.URLs() {
		violations := make(chan error, 4)
		ops, err := o.node(i, nats.UserInfo(cluster.OpsUser, clusterOpsPassword), nats.CustomInboxPrefix(schemas.OpsInbox),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					select {
					case violations <- err:
					default:
					}
				}
			}))
		require.NoError(t, err, "ops connects to node %d", i+1)
		js, err := jetstream.New(ops)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			kv, err := js.KeyValue(ctx, schemas.BucketTowns)
			if err != nil {
				return false
			}
			e, err := kv.Get(ctx, "alpha")
			return err == nil && len(e.Value()) > 0
		}, 30*time.Second, 100*time.Millisecond, "ops reads the towns' copy on node %d", i+1)
		kv, err := js.KeyValue(ctx, schemas.BucketTowns)
		require.NoError(t, err)
		// The server refuses the write as a permissions violation, so
		// nothing answers it: the put ends when the violation arrives
		// rather than at its timeout.
		pctx, pcancel := context.WithCancel(ctx)
		put := make(chan error, 1)
		go func() { _, err := kv.Put(pctx, "alpha", []byte("scribble")); put <- err }()
		select {
		case v := <-violations:
			require.ErrorContains(t, v, `Permissions Violation for Publish to "$KV.gastown_towns.alpha"`)
			pcancel()
			err = <-put
		case err = <-put:
		}
		pcancel()
		require.Error(t, err, "ops wrote its copy")
		ops.Close()

		// The nats CLI is the console, against any node.
		cli := func(timeout string, args ...string) (string, error) {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			all := append([]string{"--server", o.c.URLs()[i], "--timeout", timeout, "--user", cluster.OpsUser,
				"--password", clusterOpsPassword, "--inbox-prefix", schemas.OpsInbox}, args...)
			out, err := bustest.NatsCommand(cctx, t, all...).CombinedOutput()
			return string(out), err
		}
		out, err := cli("5s", "kv", "ls")
		require.NoError(t, err, out)
		require.Contains(t, out, schemas.BucketTowns)
		out, err = cli("5s", "kv", "get", schemas.BucketTowns, "alpha", "--raw")
		require.NoError(t, err, out)
		require.Contains(t, out, `"townId":"alpha"`)
		// The CLI prints the server's refusal at once, then waits its
		// timeout for an answer that never comes: a short one.
		out, err = cli("2s", "kv", "del", schemas.BucketTowns, "alpha", "--force")
		require.Error(t, err, "ops deleted a key of its copy: %s", out)
		require.Contains(t, out, `Permissions Violation for Publish to "$KV.gastown_towns.alpha"`)
	}

	// With no coordinator running, the ops password is refused (the
	// callout checks it), and the break-glass ops key still reads the
	// copies, on every node, with the nats CLI.
	for _, d := range o.ds {
		d.Close()
	}
	_, err = o.node(0, nats.UserInfo(cluster.OpsUser, clusterOpsPassword), nats.CustomInboxPrefix(schemas.OpsInbox))
	require.ErrorContains(t, err, "Authorization Violation")
	for i := range o.c.URLs() {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		out, err := bustest.NatsCommand(cctx, t, "--server", o.c.URLs()[i], "--timeout", "5s", "--nkey", o.c.OpsKeyFile(),
			"--inbox-prefix", schemas.OpsInbox, "kv", "get", schemas.BucketTowns, "alpha", "--raw").CombinedOutput()
		cancel()
		require.NoError(t, err, "node %d: %s", i+1, out)
		require.Contains(t, string(out), `"townId":"alpha"`)
	}
}

// TestClusterRevocationClosesEveryNode: a revocation closes the town's
// connections on every node, and its old token is refused after.
func TestClusterRevocationClosesEveryNode(t *testing.T) {
	o := startOnCluster(t, 2)
	require.NoError(t, o.admin(schemas.AdminTownCreate, schemas.TownCreate{TownID: "alpha"}, nil))
	tok := o.token("alpha")
	other := o.token("bravo")
	closed := make([]chan struct{}, len(o.c.URLs()))
	for i := range o.c.URLs() {
		ch := make(chan struct{})
		closed[i] = ch
		_, err := o.node(i, nats.Token(tok), nats.ClosedHandler(func(*nats.Conn) { close(ch) }))
		require.NoError(t, err)
	}
	bravoClosed := make(chan struct{})
	_, err := o.node(1, nats.Token(other), nats.ClosedHandler(func(*nats.Conn) { close(bravoClosed) }))
	require.NoError(t, err)

	time.Sleep(10 * time.Millisecond) // the tokens' iat (ms) is before the revocation
	var res schemas.RevokeResult
	require.NoError(t, o.admin(schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "alpha"}, &res))
	require.Equal(t, 3, res.Closed, "one connection on each node")
	for i, ch := range closed {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("node %d kept a connection with a revoked token", i+1)
		}
	}
	select {
	case <-bravoClosed:
		t.Fatal("another town's connection was closed")
	default:
	}
	for i := range o.c.URLs() {
		_, err := o.node(i, nats.Token(tok))
		require.ErrorContains(t, err, "Authorization Violation", "node %d admitted a revoked token", i+1)
	}
}

// TestClusterMisconfigurationIsLoud: a coordinator whose keys are not the
// cluster's says which, and does not start.
func TestClusterMisconfigurationIsLoud(t *testing.T) {
	o := startOnCluster(t, 0)
	try := func(change func(*cluster.Creds), replicas int) error {
		creds := *o.c.Creds()
		change(&creds)
		cfg := o.cfg
		cfg.Cluster = &creds
		if replicas > 0 {
			cfg.Replicas = replicas
		}
		d, err := coordinator.StartDaemon(context.Background(), o.issuer, cfg)
		if err == nil {
			d.Close()
		}
		return err
	}
	fresh, err := cluster.NewCreds()
	require.NoError(t, err)
	err = try(func(c *cluster.Creds) { c.Issuer = fresh.Issuer }, 0)
	require.True(t, errors.Is(err, bus.ErrCalloutRefused), "wrong issuer: %v", err)
	require.Contains(t, errors.FlattenHints(err), "auth_callout.issuer")

	err = try(func(c *cluster.Creds) { c.XKey = fresh.XKey }, 0)
	require.ErrorContains(t, err, "xkey")

	err = try(func(c *cluster.Creds) { c.Auth = fresh.Auth }, 0)
	require.True(t, errors.Is(err, coordinator.ErrClusterConfig), "auth key not an auth user: %v", err)
	require.ErrorContains(t, err, "auth.nk")

	err = try(func(*cluster.Creds) {}, 5)
	require.ErrorContains(t, err, "--replicas 5 needs at least 5 servers with JetStream, and the cluster has 3")

	// And with the right keys it starts, with a node down too: the
	// cluster still has the nodes for three replicas, and a quorum.
	require.NoError(t, try(func(*cluster.Creds) {}, 0))
	o.c.Stop(2)
	require.NoError(t, try(func(*cluster.Creds) {}, 0), "a coordinator starts with one node of three down")
}

// TestClusterRotationAndLeases: two coordinators share the towns' leases
// (each holds about half); a container on one node is pushed fresh tokens
// by whichever coordinator holds its town, keeps calling throughout, and
// keeps getting tokens when that coordinator stops.
func TestClusterRotationAndLeases(t *testing.T) {
	o := startOnCluster(t, 0)
	o.cfg.RefreshInterval = 300 * time.Millisecond
	o.cfg.TokenTTL = 30 * time.Second
	a, b := o.add(), o.add()
	const towns = 6
	for i := range towns {
		require.NoError(t, o.admin(schemas.AdminTownCreate, schemas.TownCreate{TownID: fmt.Sprintf("t%d", i)}, nil))
	}
	require.Eventually(t, func() bool {
		na, nb := a.LeasesHeld(), b.LeasesHeld()
		return na+nb == towns && na <= towns/2+1 && nb <= towns/2+1
	}, 30*time.Second, 50*time.Millisecond, "the towns' leases are spread over the coordinators")

	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: o.c.URLs()[2], Token: o.token("t0"), ContainerID: "c0", RequestTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	defer src.Close()
	client := agentclient.NewClient(src, "", "")
	call := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, client.Call(ctx, schemas.ToolPing, nil, nil))
	}
	rotated := func(what string) {
		t.Helper()
		target := src.Adopted() + 3
		require.Eventually(t, func() bool { call(); return src.Adopted() >= target }, time.Minute, 20*time.Millisecond,
			"the container keeps getting tokens %s", what)
	}
	rotated("from the coordinator holding its town")
	holder := a
	if b.HoldsTown("t0") {
		holder = b
	}
	holder.Close()
	rotated("once its coordinator stopped")
}

// localLastSeq is the last sequence node i's own replica of stream holds
// in the state account.
func localLastSeq(t *testing.T, c *clustertest.Cluster, i int, stream string) uint64 {
	t.Helper()
	jsz, err := c.Jsz(i, server.JSzOptions{Account: cluster.StateAccount, Streams: true})
	require.NoError(t, err)
	for _, a := range jsz.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == stream {
				return s.State.LastSeq
			}
		}
	}
	return 0
}

// TestClusterPartition: a node cut off from the other two (its routes go
// through a proxy that is cut) refuses writes; the majority carries on,
// answering containers and the administrator; healed, the node catches up.
func TestClusterPartition(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Partitionable: true})
	key, err := token.NewKey([]byte("cluster-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	o := &onCluster{t: t, c: c, issuer: token.NewIssuer(token.NewKeyRing(key), nil)}
	o.cfg = coordinator.DaemonConfig{
		Config: coordinator.Config{Replicas: 3, LeaseTTL: 3 * time.Second, Logger: bustest.Logger(t)},
		Bus:    bus.Config{AdminPassword: clusterAdminPassword},
		// The coordinator stays with the majority: nodes 1 and 2.
		NatsURL: c.URLs()[0] + "," + c.URLs()[1], Cluster: c.Creds(),
	}
	o.add()
	require.NoError(t, o.admin(schemas.AdminTownCreate, schemas.TownCreate{TownID: "before"}, nil))

	// The minority's view of the state: a state connection to node 3 only.
	statePub, err := c.Creds().State.PublicKey()
	require.NoError(t, err)
	minority, err := nats.Connect(c.URLs()[2], nats.Nkey(statePub, c.Creds().State.Sign), nats.IgnoreDiscoveredServers(),
		nats.CustomInboxPrefix(schemas.CoordinatorInbox))
	require.NoError(t, err)
	t.Cleanup(minority.Close)
	js, err := jetstream.New(minority)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), schemas.BucketTowns)
	require.NoError(t, err)

	c.Cut(2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = kv.Put(ctx, "written-by-the-minority", []byte("{}"))
	cancel()
	require.Error(t, err, "a node without a quorum took a write")

	// The majority carries on.
	var last error
	require.Eventually(t, func() bool {
		last = o.admin(schemas.AdminTownCreate, schemas.TownCreate{TownID: "during"}, nil)
		return last == nil || errors.Is(last, schemas.ErrConflict)
	}, time.Minute, 100*time.Millisecond, "the majority takes writes: %v", &last)
	tok := o.token("during")
	town, err := schemas.ForTown("during")
	require.NoError(t, err)
	nc, err := o.node(0, nats.Token(tok), nats.CustomInboxPrefix(town.Inbox()))
	require.NoError(t, err)
	callCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	require.NoError(t, ping(callCtx, nc, "during", tok), "a container on the majority is answered")
	cancel()
	want := localLastSeq(t, c, 0, "KV_"+schemas.BucketTowns)
	require.Less(t, localLastSeq(t, c, 2, "KV_"+schemas.BucketTowns), want, "the cut-off node has not seen the majority's write")

	c.Heal(2)
	require.Eventually(t, func() bool {
		return localLastSeq(t, c, 2, "KV_"+schemas.BucketTowns) >= want
	}, time.Minute, 100*time.Millisecond, "the healed node catches up")
	e, err := kv.Get(context.Background(), "during")
	require.NoError(t, err, "what the majority wrote is read through the healed node")
	require.NotEmpty(t, e.Value())
	_, err = kv.Get(context.Background(), "written-by-the-minority")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the refused write did not appear later")
}
