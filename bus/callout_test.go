package bus_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// calloutServer starts one in-process server from the node configuration
// 'gastown cluster init' renders (package cluster) naming keys: the first
// node of a three-node plan, alone (the callout needs no JetStream
// quorum; its routes to the others just find nobody). edit, when not
// nil, changes the rendered text first, as an operator's hand edit would
// (to test a mismatch).
func calloutServer(t *testing.T, keys cluster.PublicKeys, edit func(conf string) string) *server.Server {
	t.Helper()
	dir := t.TempDir()
	plan, err := cluster.NewPlan(filepath.Join(dir, "data"))
	require.NoError(t, err)
	base := clustertest.FreePortBlock(t)
	plan.ClientBase, plan.ClusterBase, plan.MonitorBase = base, base+16, 0
	ops, err := nkeys.CreateUser() // the break-glass ops key, as init makes one
	require.NoError(t, err)
	plan.OpsKey, err = ops.PublicKey()
	require.NoError(t, err)
	conf, err := plan.NodeConfig(0, keys)
	require.NoError(t, err)
	if edit != nil {
		conf = edit(conf)
	}
	path := filepath.Join(dir, cluster.NodeConfigFile(0))
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err)
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(waitFor))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// newCreds makes a coordinator's keys and their public halves.
func newCreds(t *testing.T) (*cluster.Creds, cluster.PublicKeys) {
	t.Helper()
	c, err := cluster.NewCreds()
	require.NoError(t, err)
	keys, err := c.Public()
	require.NoError(t, err)
	return c, keys
}

func pub(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	require.NoError(t, err)
	return p
}

func nkeyConn(t *testing.T, url string, kp nkeys.KeyPair, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Nkey(pub(t, kp), kp.Sign)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// calloutFixture is a callout server with this process answering it.
type calloutFixture struct {
	*fixture
	ns      *server.Server
	url     string
	creds   *cluster.Creds
	callout *bus.Callout
	kicker  *bus.ClusterKicker
}

func newCalloutFixture(t *testing.T) *calloutFixture {
	t.Helper()
	return newCalloutFixtureWith(t, nil)
}

// newCalloutFixtureWith answers the callout with tokens verified by
// tokens (the fixture's issuer's when nil).
func newCalloutFixtureWith(t *testing.T, tokens bus.TokenAuthorizer) *calloutFixture {
	t.Helper()
	creds, keys := newCreds(t)
	ns := calloutServer(t, keys, nil)
	f := &calloutFixture{ns: ns, url: ns.ClientURL(), creds: creds}
	f.fixture = newFixture(t, token.AuthConfig{})
	if tokens == nil {
		auth, err := token.NewConnAuthorizer(f.issuer, token.AuthConfig{}, nil)
		require.NoError(t, err)
		tokens = auth
	}
	c, err := bus.StartCallout(nkeyConn(t, f.url, creds.Auth), bus.CalloutConfig{
		Tokens: tokens, AdminPassword: adminPassword, Issuer: creds.Issuer, XKey: creds.XKey,
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	f.callout = c
	f.kicker = bus.NewClusterKicker(nkeyConn(t, f.url, creds.System), nil)
	t.Cleanup(f.kicker.Close)
	return f
}

func TestCalloutGrantsTheEmbeddedPermissions(t *testing.T) {
	f := newCalloutFixture(t)
	a, b := mustTown(t, "alpha"), mustTown(t, "bravo")
	errs := make(chan error, 8)
	nc, err := nats.Connect(f.url, nats.Token(f.mint(t, "alpha", time.Hour)),
		nats.CustomInboxPrefix(a.Inbox()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	require.NoError(t, err)
	defer nc.Close()

	// The coordinator (control key) hears the town's own heartbeat...
	co := nkeyConn(t, f.url, f.creds.Control)
	hb, err := co.SubscribeSync(schemas.AllTowns.Heartbeat())
	require.NoError(t, err)
	require.NoError(t, co.Flush())
	require.NoError(t, nc.Publish(a.Heartbeat(), []byte("{}")))
	_, err = hb.NextMsg(waitFor)
	require.NoError(t, err)

	// ...but not a publish on another town's subject: the server refuses it.
	require.NoError(t, nc.Publish(b.Heartbeat(), []byte("{}")))
	require.NoError(t, nc.Flush())
	select {
	case err := <-errs:
		require.ErrorContains(t, err, "Permissions Violation")
	case <-time.After(waitFor):
		t.Fatal("a publish on another town's heartbeat was not refused")
	}
	_, err = hb.NextMsg(200 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "another town's heartbeat got through")

	// Its token subject is queue-only, as on the embedded server.
	_, err = nc.SubscribeSync(a.Token())
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	select {
	case err := <-errs:
		require.ErrorContains(t, err, "Permissions Violation")
	case <-time.After(waitFor):
		t.Fatal("a plain subscription to the town's token pushes was allowed")
	}
}

func TestCalloutRefuses(t *testing.T) {
	f := newCalloutFixture(t)
	for name, opt := range map[string]nats.Option{
		"bad token":      nats.Token("not-a-token"),
		"expired token":  nats.Token(f.mintAt(t, "alpha", time.Now().Add(-72*time.Hour), time.Hour)),
		"no credentials": nats.Name("nobody"),
		"wrong admin":    nats.UserInfo(bus.AdminUser, "wrong"),
		"internal user":  nats.UserInfo("gastown-internal", "whatever"),
		"foreign token":  nats.Token(newFixture(t, token.AuthConfig{}).mint(t, "alpha", time.Hour)),
	} {
		_, err := nats.Connect(f.url, opt, nats.MaxReconnects(0))
		require.ErrorContains(t, err, "Authorization Violation", name)
	}
	admin, err := nats.Connect(f.url, nats.UserInfo(bus.AdminUser, adminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))
	require.NoError(t, err, "the admin connects with its password")
	admin.Close()
	require.Positive(t, f.callout.Refused()[bus.RefusedBadToken])
}

func TestCalloutRecoveryGrant(t *testing.T) {
	f := newCalloutFixture(t)
	a := mustTown(t, "alpha")
	errs := make(chan error, 8)
	nc, err := nats.Connect(f.url, nats.Token(f.mintAt(t, "alpha", time.Now().Add(-2*time.Hour), time.Hour)),
		nats.CustomInboxPrefix(a.Inbox()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	require.NoError(t, err, "a token expired within the recovery window connects")
	defer nc.Close()
	co := nkeyConn(t, f.url, f.creds.Control)
	get, err := co.SubscribeSync(schemas.AllTowns.TokenGet())
	require.NoError(t, err)
	require.NoError(t, co.Flush())
	require.NoError(t, nc.Publish(a.TokenGet(), []byte("{}")))
	_, err = get.NextMsg(waitFor)
	require.NoError(t, err, "it may ask for a fresh token")
	require.NoError(t, nc.Publish(a.Heartbeat(), []byte("{}")))
	require.NoError(t, nc.Flush())
	select {
	case err := <-errs:
		require.ErrorContains(t, err, "Permissions Violation")
	case <-time.After(waitFor):
		t.Fatal("a recovery-only connection published a heartbeat")
	}
}

func TestCalloutConnectionClosesAtExpiry(t *testing.T) {
	f := newCalloutFixture(t)
	closed := make(chan time.Time, 1)
	tok := f.mint(t, "alpha", 2*time.Second)
	c, err := f.issuer.VerifyContainer(tok)
	require.NoError(t, err)
	nc, err := nats.Connect(f.url, nats.Token(tok), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { closed <- time.Now() }))
	require.NoError(t, err)
	defer nc.Close()
	select {
	case at := <-closed:
		require.False(t, at.Before(c.Expires()), "closed before the token's exp")
	case <-time.After(c.Expires().Sub(time.Now()) + waitFor):
		t.Fatal("the connection outlived its token")
	}
}

func TestClusterKickerClosesOnlyTheRevokedTown(t *testing.T) {
	f := newCalloutFixture(t)
	connect := func(town string) (*nats.Conn, chan struct{}) {
		closed := make(chan struct{})
		nc, err := nats.Connect(f.url, nats.Token(f.mint(t, town, time.Hour)), nats.NoReconnect(),
			nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc, closed
	}
	_, alphaClosed := connect("alpha")
	_, alphaClosed2 := connect("alpha")
	// A town whose id differs only in case is another town.
	_, otherClosed := connect("Alpha")
	require.Equal(t, 2, f.kicker.Kick("alpha", time.Now().Add(time.Second)))
	for _, ch := range []chan struct{}{alphaClosed, alphaClosed2} {
		select {
		case <-ch:
		case <-time.After(waitFor):
			t.Fatal("a revoked connection stayed open")
		}
	}
	select {
	case <-otherClosed:
		t.Fatal("another town's connection was closed")
	case <-time.After(200 * time.Millisecond):
	}
	// Tokens issued after the revocation time are left alone.
	_, fresh := connect("alpha")
	require.Zero(t, f.kicker.Kick("alpha", time.Now().Add(-time.Hour)))
	select {
	case <-fresh:
		t.Fatal("a connection with a token issued after the revocation was closed")
	default:
	}
}

func TestCalloutProbe(t *testing.T) {
	ctx := context.Background()
	t.Run("right keys", func(t *testing.T) {
		f := newCalloutFixture(t)
		require.NoError(t, f.callout.Probe(ctx, f.url))
	})
	start := func(t *testing.T, keys cluster.PublicKeys, creds *cluster.Creds, edit func(string) string) error {
		ns := calloutServer(t, keys, edit)
		c, err := bus.StartCallout(nkeyConn(t, ns.ClientURL(), creds.Auth), bus.CalloutConfig{Issuer: creds.Issuer, XKey: creds.XKey})
		require.NoError(t, err)
		defer c.Close()
		return c.Probe(ctx, ns.ClientURL())
	}
	t.Run("wrong issuer", func(t *testing.T) {
		creds, keys := newCreds(t)
		_, other := newCreds(t)
		keys.Issuer = other.Issuer
		err := start(t, keys, creds, nil)
		require.True(t, errors.Is(err, bus.ErrCalloutRefused), "%v", err)
	})
	t.Run("wrong xkey", func(t *testing.T) {
		creds, keys := newCreds(t)
		_, other := newCreds(t)
		keys.XKey = other.XKey
		err := start(t, keys, creds, nil)
		require.ErrorContains(t, err, "xkey")
	})
	t.Run("no xkey in the configuration", func(t *testing.T) {
		creds, keys := newCreds(t)
		err := start(t, keys, creds, func(conf string) string {
			line := `xkey: "` + keys.XKey + `"`
			require.Contains(t, conf, line)
			return strings.Replace(conf, line, "", 1)
		})
		require.ErrorContains(t, err, "auth_callout.xkey is missing")
	})
}

func mustTown(t *testing.T, id string) schemas.Town {
	t.Helper()
	town, err := schemas.ForTown(id)
	require.NoError(t, err)
	return town
}
