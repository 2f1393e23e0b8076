package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
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
	issuer *coordinator.Issuer
	cfg    coordinator.DaemonConfig
	ds     []*coordinator.Daemon
}

func startOnCluster(t *testing.T, coordinators int) *onCluster {
	t.Helper()
	c := clustertest.StartInProcess(t, clustertest.Options{OpsPassword: clusterOpsPassword})
	key, err := coordinator.NewKey([]byte("cluster-test-secret-of-at-least-32-bytes"))
	require.NoError(t, err)
	o := &onCluster{t: t, c: c, issuer: coordinator.NewIssuer(coordinator.NewKeyRing(key), nil)}
	o.cfg = coordinator.DaemonConfig{
		Config:  coordinator.Config{Replicas: 3, LeaseTTL: 3 * time.Second, Logger: bustest.Logger(t)},
		Bus:     bus.Config{AdminPassword: clusterAdminPassword},
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
	ops, err := o.node(2, nats.UserInfo(cluster.OpsUser, clusterOpsPassword), nats.CustomInboxPrefix(schemas.OpsInbox))
	require.NoError(t, err, "ops connects to any node")
	ops.Close()
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

	// And with the right keys it starts.
	require.NoError(t, try(func(*cluster.Creds) {}, 0))
}
