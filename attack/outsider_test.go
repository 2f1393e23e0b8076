package attack_test

// An outsider: someone who can reach the bus's port but holds no valid
// credential (or one town's token, and wants more than its share). Each
// test runs its own daemon, so one test's lockout never reaches another.

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// refused requires the connection made with opts to be refused.
func refused(t *testing.T, h *coordinatortest.Harness, opts ...nats.Option) {
	t.Helper()
	nc, err := dial(h, opts...)
	if err == nil {
		nc.Close()
	}
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// TestOutsiderPasswordGuessing: 200 wrong passwords for ops, then the
// right one, from the same source: it is refused (the source is locked
// out), for admin too, so guessing gains nothing. A valid container token
// from that source still connects, after a flood of bad ones too.
func TestOutsiderPasswordGuessing(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	for i := range 200 {
		refused(t, h, nats.UserInfo(bus.OpsUser, fmt.Sprintf("guess-%d", i)))
	}
	// The last guess either was refused for a lockout or started one of at
	// least bus.DefaultLockoutBase (1 s): the right password, sent at
	// once, falls inside it.
	nc, err := dial(h, nats.UserInfo(bus.OpsUser, opsPassword))
	if err == nil {
		nc.Close()
	}
	require.ErrorIs(t, err, nats.ErrAuthorization, "after 200 wrong guesses the right password worked at once")
	refused(t, h, nats.UserInfo(bus.AdminUser, adminPassword))

	for range 200 {
		refused(t, h, nats.Token("not-a-token"))
	}
	containerConn(t, h, "T", h.ContainerToken("T"))
}

// TestOutsiderRefusalsDoNotFloodTheLog: 2,000 refused connections of
// every kind write a handful of log lines, not one or two each; and none
// holds what was sent as a password or token.
func TestOutsiderRefusalsDoNotFloodTheLog(t *testing.T) {
	recs := bustest.NewRecords(slog.LevelInfo)
	h := coordinatortest.Start(t, coordinator.Config{Logger: recs.Logger()})
	kinds := [][]nats.Option{
		{nats.UserInfo(bus.OpsUser, "guess-secret")}, // wrong, then locked out
		{nats.UserInfo(bus.AdminUser, "guess-secret")},
		{nats.Token("not-a-token-secret")},
		{nats.UserInfo("root", "guess-secret")},
		{}, // no credentials
	}
	const reasons = 5 // wrong password, locked out, bad token, unknown user, no credentials
	const total, workers = 2000, 8
	recs.Reset()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < total; i += workers {
				nc, err := dial(h, kinds[i%len(kinds)]...)
				if err == nil {
					nc.Close()
					err = fmt.Errorf("attempt %d connected", i)
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, nats.ErrAuthorization)
	}

	lines := recs.Lines(func(r bustest.Record) bool { return r.Attrs[coordinator.KeyComponent] == "nats" })
	// One line per reason per interval, however many refusals.
	limit := reasons * (2 + int(elapsed/bus.DefaultLogInterval))
	t.Logf("%d refusals in %s wrote %d lines of the bus (at most %d allowed)", total, elapsed, len(lines), limit)
	require.LessOrEqual(t, len(lines), limit, "the log grows with every refused connection")
	for _, l := range recs.Lines(nil) {
		text := fmt.Sprint(l.Message, l.Attrs)
		require.NotContains(t, text, "secret", "a line holds what was sent as a credential: %s", text)
	}
}

// TestOutsiderTokenConnectionChurn: a valid token opening and closing
// connections over and over leaves no record of them behind once they
// are closed (they were kept until the token's expiry, hours later).
func TestOutsiderTokenConnectionChurn(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	tok := h.ContainerToken("T")
	tw, err := schemas.ForTown("T")
	require.NoError(t, err)
	for range 500 {
		nc, err := dial(h, nats.Token(tok), nats.CustomInboxPrefix(tw.Inbox()))
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		nc.Close()
	}
	srv := h.Daemon.Server()
	require.Eventually(t, func() bool { return srv.TokenConns() == 0 }, wait, 20*time.Millisecond,
		"records of closed connections are kept: %d", srv.TokenConns())
}

// TestOutsiderTownConnectionCap: a town holds at most DefaultTownConns
// connections at once; one more is refused, another town connects as
// usual, and a closed connection frees its slot at once.
func TestOutsiderTownConnectionCap(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{})
	alpha := h.ContainerToken("alpha")
	tw, err := schemas.ForTown("alpha")
	require.NoError(t, err)
	var open []*nats.Conn
	for range bus.DefaultTownConns {
		open = append(open, containerConn(t, h, "alpha", alpha))
	}
	refused(t, h, nats.Token(alpha), nats.CustomInboxPrefix(tw.Inbox()))
	containerConn(t, h, "beta", h.ContainerToken("beta"))

	open[0].Close()
	// Once the server has closed it, its slot is free again (and only it).
	require.Eventually(t, func() bool {
		nc, err := dial(h, nats.Token(alpha), nats.CustomInboxPrefix(tw.Inbox()))
		if err != nil {
			return false
		}
		t.Cleanup(nc.Close)
		return true
	}, wait, 5*time.Millisecond, "the closed connection's slot was never freed")
	refused(t, h, nats.Token(alpha), nats.CustomInboxPrefix(tw.Inbox()))
}
