package bus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// calloutKeys are one coordinator's keys for a callout server.
type calloutKeys struct {
	issuer, xkey, auth, sys, control nkeys.KeyPair
}

func newCalloutKeys(t *testing.T) calloutKeys {
	t.Helper()
	must := func(kp nkeys.KeyPair, err error) nkeys.KeyPair { require.NoError(t, err); return kp }
	return calloutKeys{
		issuer: must(nkeys.CreateAccount()), xkey: must(nkeys.CreateCurveKeys()),
		auth: must(nkeys.CreateUser()), sys: must(nkeys.CreateUser()), control: must(nkeys.CreateUser()),
	}
}

func pub(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	require.NoError(t, err)
	return p
}

// calloutServer starts one server whose every client but the listed
// nkeys goes through the auth callout; issuer and xkey are what its
// configuration names (they may differ from k's, to test a mismatch).
func calloutServer(t *testing.T, k calloutKeys, issuerPub, xkeyPub string) *server.Server {
	t.Helper()
	xkeyLine := ""
	if xkeyPub != "" {
		xkeyLine = "xkey: " + xkeyPub
	}
	conf := fmt.Sprintf(`
listen: "127.0.0.1:-1"
accounts {
  GASTOWN_AUTH { users: [{nkey: %[1]s}] }
  %[4]s { users: [{nkey: %[3]s}] }
  %[5]s { }
  SYS { users: [{nkey: %[2]s}] }
}
system_account: SYS
authorization {
  timeout: 1
  auth_callout {
    issuer: %[6]s
    account: GASTOWN_AUTH
    auth_users: [%[1]s, %[2]s, %[3]s]
    %[7]s
  }
}
`, pub(t, k.auth), pub(t, k.sys), pub(t, k.control), bus.ControlAccount, bus.OpsAccount, issuerPub, xkeyLine)
	path := filepath.Join(t.TempDir(), "server.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err)
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(waitFor))
	t.Cleanup(ns.Shutdown)
	return ns
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
	keys    calloutKeys
	callout *bus.Callout
	kicker  *bus.ClusterKicker
}

func newCalloutFixture(t *testing.T) *calloutFixture {
	t.Helper()
	k := newCalloutKeys(t)
	ns := calloutServer(t, k, pub(t, k.issuer), pub(t, k.xkey))
	f := &calloutFixture{ns: ns, url: ns.ClientURL(), keys: k}
	f.fixture = newFixture(t, coordinator.Config{})
	auth, err := coordinator.NewConnAuthorizer(f.issuer, coordinator.Config{}, nil)
	require.NoError(t, err)
	c, err := bus.StartCallout(nkeyConn(t, f.url, k.auth), bus.CalloutConfig{
		Tokens: auth, AdminPassword: adminPassword, Issuer: k.issuer, XKey: k.xkey,
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	f.callout = c
	f.kicker = bus.NewClusterKicker(nkeyConn(t, f.url, k.sys), nil)
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
	co := nkeyConn(t, f.url, f.keys.control)
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
		"foreign token":  nats.Token(newFixture(t, coordinator.Config{}).mint(t, "alpha", time.Hour)),
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
	co := nkeyConn(t, f.url, f.keys.control)
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
	start := func(t *testing.T, issuerPub, xkeyPub string, k calloutKeys) error {
		ns := calloutServer(t, k, issuerPub, xkeyPub)
		c, err := bus.StartCallout(nkeyConn(t, ns.ClientURL(), k.auth), bus.CalloutConfig{Issuer: k.issuer, XKey: k.xkey})
		require.NoError(t, err)
		defer c.Close()
		return c.Probe(ctx, ns.ClientURL())
	}
	t.Run("wrong issuer", func(t *testing.T) {
		k := newCalloutKeys(t)
		other := newCalloutKeys(t)
		err := start(t, pub(t, other.issuer), pub(t, k.xkey), k)
		require.True(t, errors.Is(err, bus.ErrCalloutRefused), "%v", err)
	})
	t.Run("wrong xkey", func(t *testing.T) {
		k := newCalloutKeys(t)
		other := newCalloutKeys(t)
		err := start(t, pub(t, k.issuer), pub(t, other.xkey), k)
		require.ErrorContains(t, err, "xkey")
	})
	t.Run("no xkey in the configuration", func(t *testing.T) {
		k := newCalloutKeys(t)
		err := start(t, pub(t, k.issuer), "", k)
		require.ErrorContains(t, err, "auth_callout.xkey is missing")
	})
}

func mustTown(t *testing.T, id string) schemas.Town {
	t.Helper()
	town, err := schemas.ForTown(id)
	require.NoError(t, err)
	return town
}
