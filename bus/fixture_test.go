package bus_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Passwords of the password identities on the test bus.
const (
	opsPassword   = "ops-test-password"
	adminPassword = "admin-test-password"
)

// waitFor bounds every wait for something the server does promptly.
const waitFor = 5 * time.Second

// fixture is an in-process bus whose token connections are checked by the
// coordinator's real issuer.
type fixture struct {
	srv    *bus.Server
	url    string
	secret []byte
	ring   *token.KeyRing
	issuer *token.Issuer
	// nc is a full-permission in-process connection: the coordinator's side.
	nc *nats.Conn
}

// newFixture starts a bus with the ops and admin identities enabled.
func newFixture(t *testing.T, cfg token.AuthConfig) *fixture {
	t.Helper()
	return newFixtureWith(t, cfg, bus.Config{OpsPassword: opsPassword, AdminPassword: adminPassword})
}

// newFixtureWith starts a bus with bc, whose Tokens is set to a
// ConnAuthorizer over a fresh issuer.
func newFixtureWith(t *testing.T, cfg token.AuthConfig, bc bus.Config) *fixture {
	t.Helper()
	secret := randomSecret(t)
	key, err := token.NewKey(secret)
	require.NoError(t, err)
	ring := token.NewKeyRing(key)
	issuer := token.NewIssuer(ring, nil)
	auth, err := token.NewConnAuthorizer(issuer, cfg, nil)
	require.NoError(t, err)
	if onCluster() {
		return newClusterFixture(t, bc, auth, &fixture{secret: secret, ring: ring, issuer: issuer})
	}
	bc.Tokens = auth
	srv := bustest.Start(t, bc)
	return &fixture{
		srv: srv, url: srv.ClientURL(), secret: secret, ring: ring, issuer: issuer,
		nc: bustest.Connect(t, srv),
	}
}

// testBusEnv, set to "cluster", runs the fixture's tests on a 3-node
// cluster whose connections are decided by the auth callout (this
// process answering it, as a coordinator does), instead of on the
// embedded server: the same tests hold both adapters of the one
// authorizer to the same permissions. make test runs them both ways.
const testBusEnv = "GASTOWN_TEST_BUS"

func onCluster() bool { return os.Getenv(testBusEnv) == "cluster" }

// embeddedOnly skips a test (or the rest of it) that needs the embedded
// server itself (its client count, its Kick) when running on a cluster.
func (f *fixture) embeddedOnly(t *testing.T) {
	t.Helper()
	if f.srv == nil {
		t.Skip("needs the embedded server; the cluster's counterpart is tested in callout_test.go")
	}
}

// newClusterFixture is the fixture on an in-process 3-node cluster: the
// clients and the coordinator's side (nc, with the coordinator's control
// key) connect to the third node; the callout's answerer to any.
func newClusterFixture(t *testing.T, bc bus.Config, auth bus.TokenAuthorizer, f *fixture) *fixture {
	t.Helper()
	c := clustertest.Start(t, clustertest.Options{})
	creds := c.Creds()
	callout, err := bus.StartCallout(c.Connect(creds.Auth), bus.CalloutConfig{
		Tokens: auth, AdminPassword: bc.AdminPassword, OpsPassword: bc.OpsPassword,
		Issuer: creds.Issuer, XKey: creds.XKey, Limits: bc.Limits,
	})
	require.NoError(t, err)
	t.Cleanup(callout.Close)
	f.url = c.URLs()[2]
	// The coordinator's side on the clients' node too: a subscription
	// reaches the other nodes a moment after the flush that confirms it,
	// and these tests publish at once. (The callout is answered from any.)
	pub, err := creds.Control.PublicKey()
	require.NoError(t, err)
	nc, err := nats.Connect(f.url, nats.Nkey(pub, creds.Control.Sign), nats.CustomInboxPrefix(schemas.CoordinatorInbox),
		nats.IgnoreDiscoveredServers())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	f.nc = nc
	return f
}

func randomSecret(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return []byte(hex.EncodeToString(b))
}

// mint signs a container token for town, valid for ttl from now.
func (f *fixture) mint(t *testing.T, town string, ttl time.Duration) string {
	t.Helper()
	tok, _, err := f.issuer.MintContainer(town, "", ttl)
	require.NoError(t, err)
	return tok
}

// mintAt signs a container token for town as if it were issued at at.
func (f *fixture) mintAt(t *testing.T, town string, at time.Time, ttl time.Duration) string {
	t.Helper()
	tok, _, err := token.NewIssuer(f.ring, func() time.Time { return at }).MintContainer(town, "", ttl)
	require.NoError(t, err)
	return tok
}

// client is a TCP connection to the bus and the async errors it received.
type client struct {
	nc     *nats.Conn
	errs   chan error
	closed chan struct{}
}

// connect opens a TCP connection with opts, failing the test on error. The
// connection never reconnects, so a connection the server closes stays
// closed.
func (f *fixture) connect(t *testing.T, opts ...nats.Option) *client {
	t.Helper()
	c, err := f.dial(opts...)
	require.NoError(t, err)
	t.Cleanup(c.nc.Close)
	return c
}

// dial is connect that returns the connect error.
func (f *fixture) dial(opts ...nats.Option) (*client, error) {
	c := &client{errs: make(chan error, 64), closed: make(chan struct{})}
	all := append([]nats.Option{
		nats.Name("bus-test"),
		nats.MaxReconnects(0),
		// On a cluster the servers announce each other: without these a
		// refused connect would be tried on every node, and a connection
		// the server closes would move to another.
		nats.NoReconnect(),
		nats.IgnoreDiscoveredServers(),
		nats.Timeout(waitFor),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
	}, opts...)
	nc, err := nats.Connect(f.url, all...)
	if err != nil {
		return nil, err
	}
	c.nc = nc
	return c, nil
}

// connectTown connects with tok as a container of town does.
func (f *fixture) connectTown(t *testing.T, town, tok string) *client {
	t.Helper()
	return f.connect(t, nats.Token(tok), nats.CustomInboxPrefix(inbox(town)))
}

func inbox(town string) string {
	tw, err := schemas.ForTown(town)
	if err != nil {
		panic(err)
	}
	return tw.Inbox()
}

// violation is the text the server sends for a refused operation; op is
// "Publish" or "Subscription".
func violation(op, subject string) string {
	return `Permissions Violation for ` + op + ` to "` + subject + `"`
}

// requireViolation waits for the permissions violation of op on subject.
// The server sends it before the PONG of a flush, so it is already on its
// way when this is called after Flush.
func (c *client) requireViolation(t *testing.T, op, subject string) {
	t.Helper()
	want := violation(op, subject)
	timeout := time.After(waitFor)
	for {
		select {
		case err := <-c.errs:
			require.ErrorIs(t, err, nats.ErrPermissionViolation)
			if strings.Contains(err.Error(), want) {
				return
			}
			t.Logf("other async error while waiting for %q: %v", want, err)
		case <-timeout:
			t.Fatalf("no %q within %s", want, waitFor)
		}
	}
}

// requireNoErrors checks that no async error has arrived. Call it after a
// Flush, which the server answers only after any -ERR of earlier commands.
func (c *client) requireNoErrors(t *testing.T) {
	t.Helper()
	require.NoError(t, c.nc.LastError())
	select {
	case err := <-c.errs:
		t.Fatalf("unexpected async error: %v", err)
	default:
	}
}

// requireClosed waits until the server closes the connection.
func (c *client) requireClosed(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(within):
		t.Fatalf("connection still open after %s (status %v)", within, c.nc.Status())
	}
}

// requireMsg waits for one message on sub and checks its body.
func requireMsg(t *testing.T, sub *nats.Subscription, body string) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(waitFor)
	require.NoError(t, err, "no message on %s", sub.Subject)
	require.Equal(t, body, string(m.Data))
	return m
}

// requireNoMsg checks that nothing is pending on sub. Call it after the
// publisher and then the subscriber flushed: a delivered message would
// have arrived before the subscriber's PONG.
func requireNoMsg(t *testing.T, sub *nats.Subscription) {
	t.Helper()
	n, _, err := sub.Pending()
	require.NoError(t, err)
	require.Zero(t, n, "a message reached %s", sub.Subject)
}
