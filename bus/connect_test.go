package bus_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// signWith signs claims with method, key and kid ("" for none), bypassing
// the issuer, to forge tokens the server must refuse.
func signWith(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

// Every connection that is not a valid container token, a right password
// or the in-process connection is refused at connect.
func TestConnectRefused(t *testing.T) {
	f := newFixture(t, coordinator.Config{})
	// A bus with no password identities at all.
	bare := newFixtureWith(t, coordinator.Config{}, bus.Config{})

	now := time.Now()
	claims := schemas.NewContainerClaims("A", "", now, time.Hour)
	kid := f.ring.CurrentID()

	otherKey, err := coordinator.NewKey(randomSecret(t))
	require.NoError(t, err)
	otherSecret, _, err := coordinator.NewIssuer(coordinator.NewKeyRing(otherKey), nil).MintContainer("A", "", time.Hour)
	require.NoError(t, err)
	legacy, _, err := f.issuer.MintAgent("A", "r", "a", "", time.Hour)
	require.NoError(t, err)
	badTown := claims
	badTown.TownID = "A.B"

	tests := []struct {
		name string
		bus  *fixture
		opts []nats.Option
	}{
		{"token signed with another secret", f, []nats.Option{nats.Token(otherSecret)}},
		{"alg none", f, []nats.Option{nats.Token(signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims))}},
		{"HS384", f, []nats.Option{nats.Token(signWith(t, jwt.SigningMethodHS384, f.secret, kid, claims))}},
		{"HS512", f, []nats.Option{nats.Token(signWith(t, jwt.SigningMethodHS512, f.secret, kid, claims))}},
		{"unknown kid", f, []nats.Option{nats.Token(signWith(t, jwt.SigningMethodHS256, f.secret, "0123456789abcdef", claims))}},
		{"no kid", f, []nats.Option{nats.Token(signWith(t, jwt.SigningMethodHS256, f.secret, "", claims))}},
		{"bad town id in a well-signed token", f, []nats.Option{nats.Token(signWith(t, jwt.SigningMethodHS256, f.secret, kid, badTown))}},
		{"expired beyond the recovery window", f, []nats.Option{nats.Token(f.mintAt(t, "A", now.Add(-coordinator.DefaultRecoveryWindow-coordinator.DefaultTokenTTL-time.Hour), coordinator.DefaultTokenTTL))}},
		{"legacy agent token", f, []nats.Option{nats.Token(legacy)}},
		{"garbage", f, []nats.Option{nats.Token("not-a-token")}},
		{"three dotted parts of garbage", f, []nats.Option{nats.Token("a.b.c")}},
		{"empty token", f, []nats.Option{nats.Token("")}},
		{"no credentials", f, nil},
		{"token as user name", f, []nats.Option{nats.UserInfo(f.mint(t, "A", time.Hour), "")}},
		{"wrong ops password", f, []nats.Option{nats.UserInfo(bus.OpsUser, "wrong")}},
		{"empty ops password", f, []nats.Option{nats.UserInfo(bus.OpsUser, "")}},
		{"wrong admin password", f, []nats.Option{nats.UserInfo(bus.AdminUser, "wrong")}},
		{"admin with the ops password", f, []nats.Option{nats.UserInfo(bus.AdminUser, opsPassword)}},
		{"ops when no ops password is set", bare, []nats.Option{nats.UserInfo(bus.OpsUser, "")}},
		{"ops with a password when none is set", bare, []nats.Option{nats.UserInfo(bus.OpsUser, opsPassword)}},
		{"admin when no admin password is set", bare, []nats.Option{nats.UserInfo(bus.AdminUser, "")}},
		{"admin with a password when none is set", bare, []nats.Option{nats.UserInfo(bus.AdminUser, adminPassword)}},
		{"internal user over TCP", f, []nats.Option{nats.UserInfo("gastown-internal", "guess")}},
		{"internal user over TCP, empty password", f, []nats.Option{nats.UserInfo("gastown-internal", "")}},
		{"unknown user", f, []nats.Option{nats.UserInfo("root", "root")}},
	}
	// Only the fixtures' own in-process connections stay (on the embedded
	// server, where they are counted).
	base := map[*fixture]int{}
	for _, x := range []*fixture{f, bare} {
		if x.srv != nil {
			base[x] = x.srv.NumClients()
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.bus.dial(tc.opts...)
			if err == nil {
				c.nc.Close()
			}
			require.ErrorIs(t, err, nats.ErrAuthorization)
			if tc.bus.srv != nil {
				require.Eventually(t, func() bool { return tc.bus.srv.NumClients() == base[tc.bus] },
					waitFor, 10*time.Millisecond, "a refused connection stayed open")
			}
		})
	}

	t.Run("the right passwords connect", func(t *testing.T) {
		for _, user := range []struct{ name, pw string }{{bus.OpsUser, opsPassword}, {bus.AdminUser, adminPassword}} {
			c := f.connect(t, nats.UserInfo(user.name, user.pw))
			require.NoError(t, c.nc.Flush())
		}
	})
}

// The server closes a container's connection when its token's exp passes.
func TestConnectionClosedAtExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, coordinator.Config{})
	const ttl = 1500 * time.Millisecond
	_, claims, err := f.issuer.MintContainer("A", "", ttl)
	require.NoError(t, err)
	tok := f.mint(t, "A", ttl)
	long := f.connectTown(t, "A", f.mint(t, "A", time.Hour))

	c := f.connectTown(t, "A", tok)
	require.NoError(t, c.nc.Flush())
	require.True(t, c.nc.IsConnected())

	c.requireClosed(t, ttl+waitFor)
	require.False(t, time.Now().Before(claims.Expires().Add(-50*time.Millisecond)),
		"closed before the token expired")
	select {
	case err := <-c.errs:
		require.ErrorIs(t, err, nats.ErrAuthExpired, "the server says why")
	default:
		t.Fatal("no async error: the server closed the connection without saying why")
	}

	// A connection with a longer-lived token is not touched.
	require.NoError(t, long.nc.Flush())
	require.True(t, long.nc.IsConnected())
}

// A container token that expired within the recovery window connects, but
// may only ask for a fresh token and hear the answer.
func TestRecoveryConnection(t *testing.T) {
	f := newFixture(t, coordinator.Config{RecoveryWindow: time.Hour})
	now := time.Now()
	ttl := coordinator.DefaultTokenTTL
	expiredRecently := f.mintAt(t, "A", now.Add(-ttl-30*time.Minute), ttl)
	expiredLongAgo := f.mintAt(t, "A", now.Add(-ttl-2*time.Hour), ttl)

	_, err := f.dial(nats.Token(expiredLongAgo))
	require.ErrorIs(t, err, nats.ErrAuthorization, "expired before the recovery window")

	resp, err := f.nc.Subscribe("gastown.town.A.token.get", func(m *nats.Msg) { _ = m.Respond([]byte("fresh token")) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Unsubscribe() })
	require.NoError(t, f.nc.Flush())

	t.Run("may ask for a fresh token", func(t *testing.T) {
		c := f.connectTown(t, "A", expiredRecently)
		m, err := c.nc.Request("gastown.town.A.token.get", []byte("please"), waitFor)
		require.NoError(t, err)
		require.Equal(t, "fresh token", string(m.Data))
		c.requireNoErrors(t)
	})

	t.Run("denied", func(t *testing.T) {
		for _, tc := range []struct{ op, subject string }{
			{"Subscription", "gastown.town.A.token"},
			{"Subscription", "gastown.town.A.dispatch"},
			{"Subscription", "gastown.town.A.control.>"},
			{"Subscription", "_INBOX.gastown.B.>"},
			{"Publish", "gastown.town.A.heartbeat"},
			{"Publish", "gastown.town.A.rpc.bead.get"},
			{"Publish", "gastown.town.B.token.get"},
		} {
			t.Run(tc.op+" "+tc.subject, func(t *testing.T) {
				c := f.connectTown(t, "A", expiredRecently)
				if tc.op == "Publish" {
					require.NoError(t, c.nc.Publish(tc.subject, nil))
				} else {
					_, err := c.nc.SubscribeSync(tc.subject)
					require.NoError(t, err)
				}
				require.NoError(t, c.nc.Flush())
				c.requireViolation(t, tc.op, tc.subject)
			})
		}
	})

	t.Run("may not reply to a token push", func(t *testing.T) {
		// Recovery has no response permission: it cannot answer anything,
		// even a request that names a reply subject it heard.
		c := f.connectTown(t, "A", expiredRecently)
		sub, err := c.nc.SubscribeSync("_INBOX.gastown.A.>")
		require.NoError(t, err)
		require.NoError(t, c.nc.Flush())
		require.NoError(t, f.nc.PublishRequest("_INBOX.gastown.A.x", "_INBOX.gastown_coordinator.reply", []byte("q")))
		m := requireMsg(t, sub, "q")
		require.NoError(t, m.Respond([]byte("a")))
		require.NoError(t, c.nc.Flush())
		c.requireViolation(t, "Publish", "_INBOX.gastown_coordinator.reply")
	})
}

// Recovery works from the moment of exp on: a token a second past its exp,
// inside the verifier's leeway, connects with recovery permissions and
// stays connected, instead of being accepted and closed at once.
func TestRecoveryFromExp(t *testing.T) {
	f := newFixture(t, coordinator.Config{RecoveryWindow: time.Hour})
	resp, err := f.nc.Subscribe("gastown.town.A.token.get", func(m *nats.Msg) { _ = m.Respond([]byte("fresh token")) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Unsubscribe() })
	require.NoError(t, f.nc.Flush())
	for _, past := range []time.Duration{0, time.Second, 3 * time.Second} {
		t.Run(past.String(), func(t *testing.T) {
			ttl := time.Hour
			tok := f.mintAt(t, "A", time.Now().Add(-ttl-past), ttl)
			c := f.connectTown(t, "A", tok)
			m, err := c.nc.Request("gastown.town.A.token.get", []byte("please"), waitFor)
			require.NoError(t, err, "a token just past its exp must recover")
			require.Equal(t, "fresh token", string(m.Data))
			require.True(t, c.nc.IsConnected())
			// Recovery permissions, not the container's.
			_, err = c.nc.SubscribeSync("_INBOX.gastown.A.x")
			require.NoError(t, err)
			require.NoError(t, c.nc.Publish("gastown.town.A.heartbeat", nil))
			require.NoError(t, c.nc.Flush())
			c.requireViolation(t, "Publish", "gastown.town.A.heartbeat")
		})
	}
}

// A recovery connection is closed after RecoveryConnTTL.
func TestRecoveryConnectionIsShort(t *testing.T) {
	t.Parallel()
	const connTTL = time.Second
	f := newFixture(t, coordinator.Config{RecoveryWindow: time.Hour, RecoveryConnTTL: connTTL})
	ttl := coordinator.DefaultTokenTTL
	c := f.connectTown(t, "A", f.mintAt(t, "A", time.Now().Add(-ttl-time.Minute), ttl))
	require.NoError(t, c.nc.Flush())
	c.requireClosed(t, connTTL+waitFor)
}

// Kick closes the connections of one town whose token was issued before a
// time, and no other.
func TestKick(t *testing.T) {
	f := newFixture(t, coordinator.Config{})
	f.embeddedOnly(t)
	now := time.Now()
	cut := now.Add(-30 * time.Minute)

	oldA1 := f.connectTown(t, "A", f.mintAt(t, "A", now.Add(-time.Hour), 2*time.Hour))
	oldA2 := f.connectTown(t, "A", f.mintAt(t, "A", now.Add(-45*time.Minute), 2*time.Hour))
	newA := f.connectTown(t, "A", f.mint(t, "A", time.Hour))
	oldB := f.connectTown(t, "B", f.mintAt(t, "B", now.Add(-time.Hour), 2*time.Hour))
	ops := f.connect(t, nats.UserInfo(bus.OpsUser, opsPassword))
	all := []*client{oldA1, oldA2, newA, oldB, ops}
	for _, c := range all {
		require.NoError(t, c.nc.Flush())
	}

	require.Equal(t, 2, f.srv.Kick("A", cut))
	oldA1.requireClosed(t, waitFor)
	oldA2.requireClosed(t, waitFor)
	for _, c := range []*client{newA, oldB, ops} {
		require.NoError(t, c.nc.Flush())
		require.True(t, c.nc.IsConnected())
	}
	require.NoError(t, f.nc.Flush(), "the in-process connection survives")

	t.Run("nothing left to kick", func(t *testing.T) {
		require.Zero(t, f.srv.Kick("A", cut))
		require.Zero(t, f.srv.Kick("C", now.Add(time.Hour)))
	})
	t.Run("a closed connection is not counted", func(t *testing.T) {
		oldB.nc.Close()
		require.Eventually(t, func() bool { return f.srv.NumClients() == 3 }, waitFor, 10*time.Millisecond)
		require.Zero(t, f.srv.Kick("B", now.Add(time.Hour)))
	})
	t.Run("the issue time is exclusive", func(t *testing.T) {
		at := now.Add(-10 * time.Minute).Truncate(time.Millisecond)
		c := f.connectTown(t, "A", f.mintAt(t, "A", at, time.Hour))
		require.NoError(t, c.nc.Flush())
		require.Zero(t, f.srv.Kick("A", at))
		require.Equal(t, 1, f.srv.Kick("A", at.Add(time.Millisecond)))
		c.requireClosed(t, waitFor)
		require.NoError(t, newA.nc.Flush())
	})
}
