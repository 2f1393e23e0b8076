package attack_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Revocation races: a thief holds a leaked container token. Once the
// administrator revokes the town's tokens, the thief must be shut out for
// good: no token issued after the revocation may ever reach it, by push or
// by token.get, however it times its requests.

// claimsOf reads a token's claims without the secret.
func claimsOf(t *testing.T, tok string) schemas.ContainerClaims {
	t.Helper()
	c, err := schemas.PeekContainerClaims(tok)
	require.NoError(t, err)
	return c
}

func TestRevocationThiefHearsNoPush(t *testing.T) {
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	errs := make(chan error, 8)
	thief := w.container(t, "alpha", "", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	// A plain subscription would hear every push: refused.
	_, err := thief.SubscribeSync("gastown.town.alpha.token")
	require.NoError(t, err)
	require.NoError(t, thief.Flush())
	select {
	case err := <-errs:
		require.Contains(t, err.Error(), `Permissions Violation for Subscription to "gastown.town.alpha.token"`)
	case <-time.After(wait):
		t.Fatal("a plain subscription to the town's token pushes was allowed")
	}
}

// The thief asks token.get as fast as it can, in the container queue
// group for pushes too, while the administrator revokes: every token it
// gets was issued before revokedBefore (so is revoked itself), and its
// connection is closed before the revocation answers.
func TestRevocationRaceTokenGet(t *testing.T) {
	// token.get is limited per town: lift the limit, so the thief's
	// requests race the revocation as densely as they can.
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute,
		Limits: coordinator.Limits{TokenGetRate: 10_000, TokenGetBurst: 10_000}})
	thief := w.container(t, "alpha", "")
	var mu sync.Mutex
	var got []string
	_, err := thief.QueueSubscribe("gastown.town.alpha.token", schemas.ContainerQueue, func(m *nats.Msg) {
		var rot schemas.TokenRotation
		if schemas.Decode(m.Data, &rot) == nil {
			mu.Lock()
			got = append(got, rot.Token)
			mu.Unlock()
		}
		_ = bus.Respond(m, &schemas.Ack{OK: true})
	})
	require.NoError(t, err)
	require.NoError(t, thief.Flush())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				var rot schemas.TokenRotation
				err := bus.Request(ctx, thief, "gastown.town.alpha.token.get", &schemas.TokenRequest{TownID: "alpha", ContainerID: "thief"}, &rot)
				cancel()
				if err != nil && thief.IsClosed() {
					return
				}
				if err == nil && rot.Token != "" {
					mu.Lock()
					got = append(got, rot.Token)
					mu.Unlock()
				}
			}
		})
	}
	// Let the thief collect a few tokens, then revoke, and rotate at once:
	// the fresh token is pushed to whoever still listens.
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 20 }, wait, time.Millisecond)
	var res schemas.RevokeResult
	w.admin(t, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "alpha"}, &res)
	require.GreaterOrEqual(t, res.Closed, 1, "the thief's connection was not closed before the answer")
	var rot schemas.RotateResult
	w.admin(t, schemas.AdminTokenRotate, schemas.TownRequest{TownID: "alpha"}, &rot)
	require.False(t, rot.Acknowledged, "a token pushed after the revocation was acknowledged: %+v", rot)
	close(stop)
	wg.Wait()
	require.Eventually(t, func() bool { return !thief.IsConnected() }, wait, time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, got)
	for _, tok := range got {
		require.True(t, claimsOf(t, tok).Issued().Before(res.RevokedBefore),
			"the thief got a token issued %s, after the revocation at %s", claimsOf(t, tok).Issued(), res.RevokedBefore)
	}
	// None of them works any more: not at connect, not on a request.
	for _, tok := range []string{got[0], got[len(got)-1]} {
		_, err := nats.Connect(w.h.URL(), nats.Token(tok), nats.MaxReconnects(0))
		require.ErrorIs(t, err, nats.ErrAuthorization)
	}
}

// A revoked token that has also expired is not offered recovery.
func TestRevocationNoRecovery(t *testing.T) {
	w := newWorld(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	old := w.h.Issuer.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	expired, _, err := old.MintContainer("alpha", "", time.Hour)
	require.NoError(t, err)
	rec := w.container(t, "alpha", expired)
	var res schemas.RevokeResult
	w.admin(t, schemas.AdminTokenRevoke, schemas.TownRequest{TownID: "alpha"}, &res)
	require.Equal(t, 1, res.Closed, "the recovery connection is closed too")
	require.Eventually(t, func() bool { return !rec.IsConnected() }, wait, time.Millisecond)
	_, err = nats.Connect(w.h.URL(), nats.Token(expired), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)
	// beta is untouched, and a freshly minted bootstrap token works.
	require.True(t, w.revokedBefore(t, "beta").IsZero())
	fresh := w.h.ContainerToken("alpha")
	nc := w.container(t, "alpha", fresh)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, bus.Call(ctx, nc, rpcMsg(t, "alpha", schemas.ToolPing, fresh, nil), nil))
}
