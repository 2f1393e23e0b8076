package bus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// refused dials with opts and requires the connection to be refused.
func (f *fixture) refused(t *testing.T, opts ...nats.Option) {
	t.Helper()
	c, err := f.dial(opts...)
	if err == nil {
		c.nc.Close()
	}
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// After DefaultPasswordFailures wrong passwords from one source, that
// source is locked out, the right password too, for both identities;
// its tokens still connect, and the in-process connection is never
// throttled. Once the lockout is over the right password works and
// forgets the failures.
func TestPasswordLockout(t *testing.T) {
	clk := clock.NewManual(time.Now())
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{OpsPassword: opsPassword, AdminPassword: adminPassword,
		Limits: bus.Limits{Now: clk.Now}})
	f.embeddedOnly(t)
	for range bus.DefaultPasswordFailures {
		f.refused(t, nats.UserInfo(bus.OpsUser, "guess"))
	}
	f.refused(t, nats.UserInfo(bus.OpsUser, opsPassword))
	f.refused(t, nats.UserInfo(bus.AdminUser, adminPassword))
	require.Equal(t, uint64(bus.DefaultPasswordFailures), f.srv.Refused()[bus.RefusedWrongPassword])
	require.Equal(t, uint64(2), f.srv.Refused()[bus.RefusedLockedOut], "refused for the lockout, not the password")

	t.Run("tokens from a locked-out source still connect", func(t *testing.T) {
		// Tokens are never throttled (see bus/throttle.go): not after
		// a password lockout, not after a flood of bad tokens.
		for range 3 * bus.DefaultPasswordFailures {
			f.refused(t, nats.Token("not-a-token"))
		}
		c := f.connectTown(t, "A", f.mint(t, "A", time.Hour))
		require.NoError(t, c.nc.Flush())
		require.Equal(t, uint64(3*bus.DefaultPasswordFailures), f.srv.Refused()[bus.RefusedBadToken])
	})
	t.Run("the in-process connection is never throttled", func(t *testing.T) {
		require.NoError(t, bustest.Connect(t, f.srv).Flush())
	})
	t.Run("still locked out just before the lockout ends", func(t *testing.T) {
		clk.Advance(bus.DefaultLockoutBase - time.Millisecond)
		f.refused(t, nats.UserInfo(bus.OpsUser, opsPassword))
	})
	t.Run("the right password once the lockout is over", func(t *testing.T) {
		clk.Advance(time.Millisecond)
		c := f.connect(t, nats.UserInfo(bus.OpsUser, opsPassword))
		require.NoError(t, c.nc.Flush())
		// The success forgot the failures: as many free ones again.
		for range bus.DefaultPasswordFailures - 1 {
			f.refused(t, nats.UserInfo(bus.AdminUser, "guess"))
		}
		c = f.connect(t, nats.UserInfo(bus.AdminUser, adminPassword))
		require.NoError(t, c.nc.Flush())
	})
	t.Run("a failure after a lockout doubles the next", func(t *testing.T) {
		for range bus.DefaultPasswordFailures {
			f.refused(t, nats.UserInfo(bus.OpsUser, "guess"))
		}
		clk.Advance(bus.DefaultLockoutBase)
		f.refused(t, nats.UserInfo(bus.OpsUser, "guess")) // counted: locks out for twice as long
		clk.Advance(2*bus.DefaultLockoutBase - time.Millisecond)
		f.refused(t, nats.UserInfo(bus.OpsUser, opsPassword))
		clk.Advance(time.Millisecond)
		require.NoError(t, f.connect(t, nats.UserInfo(bus.OpsUser, opsPassword)).nc.Flush())
	})
}

// The record of a token connection goes when the connection closes, not
// at its token's expiry: connection churn with a valid token keeps
// nothing.
func TestTokenConnsForgottenOnClose(t *testing.T) {
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{Limits: bus.Limits{ConnSweep: 10 * time.Millisecond}})
	f.embeddedOnly(t)
	tok := f.mint(t, "A", time.Hour)
	for range 300 {
		c := f.connectTown(t, "A", tok)
		require.NoError(t, c.nc.Flush())
		c.nc.Close()
	}
	kept := f.connectTown(t, "B", f.mint(t, "B", time.Hour))
	require.NoError(t, kept.nc.Flush())
	require.Eventually(t, func() bool { return f.srv.TokenConns() == 1 }, waitFor, 10*time.Millisecond,
		"records of closed connections are kept: %d", f.srv.TokenConns())

	// The one still open is still known: Kick finds it.
	require.Equal(t, 1, f.srv.Kick("B", time.Now().Add(time.Hour)))
	kept.requireClosed(t, waitFor)
	require.Zero(t, f.srv.TokenConns())
}

// A town may have TownConns connections open at once; one more is
// refused while other towns connect as usual, and a closed connection
// frees its slot at once (not at the next sweep).
func TestTownConnCap(t *testing.T) {
	const limit = 3
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{Limits: bus.Limits{TownConns: limit, ConnSweep: time.Hour}})
	f.embeddedOnly(t)
	base := f.srv.NumClients() // the fixture's in-process connection
	alpha := f.mint(t, "alpha", time.Hour)
	var open []*client
	for range limit {
		c := f.connectTown(t, "alpha", alpha)
		require.NoError(t, c.nc.Flush())
		open = append(open, c)
	}
	f.refused(t, nats.Token(alpha), nats.CustomInboxPrefix(inbox("alpha")))
	require.Equal(t, uint64(1), f.srv.Refused()[bus.RefusedTownFull])
	beta := f.connectTown(t, "beta", f.mint(t, "beta", time.Hour))
	require.NoError(t, beta.nc.Flush())

	open[0].nc.Close()
	// Wait until the server has closed it (and the refused one): alpha's
	// other connections and beta's are left.
	require.Eventually(t, func() bool { return f.srv.NumClients() == base+limit-1+1 }, waitFor, 5*time.Millisecond)
	c := f.connectTown(t, "alpha", alpha)
	require.NoError(t, c.nc.Flush())
	f.refused(t, nats.Token(alpha), nats.CustomInboxPrefix(inbox("alpha")))

	t.Run("a kicked connection frees its slot", func(t *testing.T) {
		kicked := time.Now().Add(time.Millisecond)
		require.Equal(t, limit, f.srv.Kick("alpha", kicked))
		// A token issued after the kick: one issued before it is refused
		// (the kick is a revocation).
		c := f.connectTown(t, "alpha", f.mintAt(t, "alpha", kicked.Add(time.Millisecond), time.Hour))
		require.NoError(t, c.nc.Flush())
	})
}

// Refusals are counted by reason and logged at most once per reason per
// LogInterval; the next line says how many were left out.
func TestRefusalLogRateLimited(t *testing.T) {
	clk := clock.NewManual(time.Now())
	recs := bustest.NewRecords(slog.LevelInfo)
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{OpsPassword: opsPassword, Logger: recs.Logger(),
		Limits: bus.Limits{Now: clk.Now, LogInterval: time.Minute}})
	f.embeddedOnly(t)
	refusedLines := func() []bustest.Record {
		return recs.Lines(func(r bustest.Record) bool { return r.Message == "connection refused" })
	}
	recs.Reset()
	for range 50 {
		f.refused(t)
	}
	for range 10 {
		f.refused(t, nats.UserInfo("root", "root"))
	}
	got := refusedLines()
	require.Len(t, got, 2, "one line per reason")
	require.Equal(t, bus.RefusedNoCredentials, got[0].Attrs[bus.KeyReason])
	require.Equal(t, bus.RefusedUnknownUser, got[1].Attrs[bus.KeyReason])
	require.Len(t, recs.Lines(nil), 2, "and no other line (the server's own goes to debug)")

	clk.Advance(time.Minute)
	f.refused(t)
	got = refusedLines()
	require.Len(t, got, 3)
	require.EqualValues(t, 49, got[2].Attrs[bus.KeySuppressed])
	refused := f.srv.Refused()
	require.Equal(t, uint64(51), refused[bus.RefusedNoCredentials])
	require.Equal(t, uint64(10), refused[bus.RefusedUnknownUser])
	require.Contains(t, refused, bus.RefusedTownFull, "every reason is there, counted or not")
}

func TestLimitsChecked(t *testing.T) {
	for name, l := range map[string]bus.Limits{
		"negative cap":                        {TownConns: -1},
		"negative interval":                   {LogInterval: -time.Second},
		"lockout cap under the first lockout": {LockoutBase: time.Minute, LockoutMax: time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := bus.Start(context.Background(), bus.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Limits: l})
			require.True(t, errors.Is(err, bus.ErrStart), "not marked ErrStart: %+v", err)
		})
	}
}
