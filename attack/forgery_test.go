package attack_test

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// Forgeries: tokens that are well signed but should not work. (Malformed
// and badly signed tokens are in coordinator/attack_test.go.) A token
// issued in the future would outlive a revocation made before its iat:
// refused, at connect and on a request, beyond a leeway of a few seconds.
func TestForgeryFutureIssuedToken(t *testing.T) {
	w := newWorld(t, coordinator.Config{})
	ahead := w.h.Issuer.WithClock(func() time.Time { return time.Now().Add(time.Hour) })
	future, _, err := ahead.MintContainer("alpha", "", 8*time.Hour)
	require.NoError(t, err)

	_, err = nats.Connect(w.h.URL(), nats.Token(future), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization, "a token issued an hour ahead connected")

	honest := w.h.ContainerToken("alpha")
	nc := w.container(t, "alpha", honest)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err = bus.Call(ctx, nc, rpcMsg(t, "alpha", schemas.ToolPing, future, nil), nil)
	require.ErrorIs(t, err, schemas.ErrUnauthenticated, "a token issued an hour ahead was accepted on a request")

	// Clock skew within the leeway is tolerated.
	slight := w.h.Issuer.WithClock(func() time.Time { return time.Now().Add(2 * time.Second) })
	skewed, _, err := slight.MintContainer("alpha", "", 8*time.Hour)
	require.NoError(t, err)
	nc2, err := nats.Connect(w.h.URL(), nats.Token(skewed), nats.MaxReconnects(0))
	require.NoError(t, err, "a token within the leeway (2 s ahead) connects")
	nc2.Close()
}
