package agentclient_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// routeWorld is a plain bus with a tool client of town R whose two ping
// subjects, the lease holder's and the queue group's, are answered (or
// not) by responders that count what they were asked.
type routeWorld struct {
	t             *testing.T
	nc            *nats.Conn
	client        *agentclient.Client
	holder, queue string
	atHolder      atomic.Int64
	atQueue       atomic.Int64
}

func newRouteWorld(t *testing.T) *routeWorld {
	srv := bustest.Start(t, bus.Config{})
	w := &routeWorld{t: t, nc: bustest.Connect(t, srv)}
	town, err := schemas.ForTown("R")
	require.NoError(t, err)
	w.holder, err = town.HolderRPC(schemas.ToolPing)
	require.NoError(t, err)
	w.queue, err = town.RPC(schemas.ToolPing)
	require.NoError(t, err)
	w.client = agentclient.NewClient(busSession{town: town, nc: w.nc}, "", "")
	return w
}

// answer subscribes subject with a responder that counts in n and
// answers with reply (nil: never answers).
func (w *routeWorld) answer(subject string, n *atomic.Int64, reply func(*nats.Msg)) *nats.Subscription {
	w.t.Helper()
	sub, err := w.nc.QueueSubscribe(subject, schemas.CoordinatorQueue, func(m *nats.Msg) {
		n.Add(1)
		if reply != nil {
			reply(m)
		}
	})
	require.NoError(w.t, err)
	require.NoError(w.t, w.nc.Flush())
	w.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// pong answers ping's result.
func pong(m *nats.Msg) { _ = bus.RespondResult(m, schemas.PingResult{TownID: "R"}) }

func (w *routeWorld) ping(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return w.client.Call(ctx, schemas.ToolPing, nil, nil)
}

// TestCallGoesToTheLeaseHolder: with the town's lease holder subscribed,
// every call is answered there and none reaches the queue group.
func TestCallGoesToTheLeaseHolder(t *testing.T) {
	w := newRouteWorld(t)
	w.answer(w.holder, &w.atHolder, pong)
	w.answer(w.queue, &w.atQueue, pong)
	for range 20 {
		require.NoError(t, w.ping(10*time.Second))
	}
	require.Equal(t, int64(20), w.atHolder.Load())
	require.Zero(t, w.atQueue.Load(), "no call went to the queue group while the holder answered")
}

// TestCallFallsBackToTheQueueGroup: with no one on the holder's subject
// (a lease moving, or coordinators that predate it) calls are answered
// by the queue group, at once, each exactly once; once a holder
// subscribes again the calls go back to it, and when it goes away they
// go on without an error.
func TestCallFallsBackToTheQueueGroup(t *testing.T) {
	w := newRouteWorld(t)
	w.answer(w.queue, &w.atQueue, pong)
	for range 5 {
		require.NoError(t, w.ping(10*time.Second))
	}
	require.Equal(t, int64(5), w.atQueue.Load(), "each call answered once by the queue group")

	sub := w.answer(w.holder, &w.atHolder, pong)
	require.Eventually(t, func() bool {
		require.NoError(t, w.ping(10*time.Second))
		return w.atHolder.Load() > 0
	}, 10*agentclient.HolderRecheck, 20*time.Millisecond, "calls go to the holder again once it subscribes")
	queued := w.atQueue.Load()
	for range 5 {
		require.NoError(t, w.ping(10*time.Second))
	}
	require.Equal(t, queued, w.atQueue.Load(), "and stay there")

	require.NoError(t, sub.Unsubscribe())
	require.NoError(t, w.nc.Flush())
	for range 5 {
		require.NoError(t, w.ping(10*time.Second), "the holder went away: the queue group answers")
	}
	require.Equal(t, queued+5, w.atQueue.Load())
}

// TestCallIsNotSentTwice: a call the holder received is answered there
// or fails there: an error reply, or no answer in time, is the call's.
// It is not sent to the queue group as well, where it would run a second
// time.
func TestCallIsNotSentTwice(t *testing.T) {
	w := newRouteWorld(t)
	w.answer(w.holder, &w.atHolder, func(m *nats.Msg) {
		_ = bus.RespondError(m, schemas.NewError(schemas.CodeInternal, "the holder failed"))
	})
	w.answer(w.queue, &w.atQueue, pong)
	require.ErrorIs(t, w.ping(10*time.Second), schemas.ErrInternal)
	require.Equal(t, int64(1), w.atHolder.Load())
	require.Zero(t, w.atQueue.Load(), "the request reached the holder: it is not sent again")

	silent := newRouteWorld(t)
	silent.answer(silent.holder, &silent.atHolder, nil)
	silent.answer(silent.queue, &silent.atQueue, pong)
	require.ErrorIs(t, silent.ping(300*time.Millisecond), context.DeadlineExceeded)
	require.Equal(t, int64(1), silent.atHolder.Load())
	require.Zero(t, silent.atQueue.Load(), "the request reached the holder: it is not sent again")
}
