package agentclient_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestCallWaitsTheRetryHint: a town over its rate is told when to try
// again; the client waits that long and its calls succeed.
func TestCallWaitsTheRetryHint(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{RPCRate: 4, RPCBurst: 1}})
	src := startContainer(t, h, "R", 8*time.Hour)
	client := agentclient.NewClient(src, "", "")
	for range 3 {
		require.NoError(t, ping(t, client))
	}
	require.Positive(t, h.Daemon.Load().RPCRate, "the town went over its rate, and the client waited it out")
}

// TestCallRetryIsBoundedByTheContext: a hint longer than the call's
// deadline ends the call with the refusal.
func TestCallRetryIsBoundedByTheContext(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{RPCRate: 0.05, RPCBurst: 1}})
	src := startContainer(t, h, "R", 8*time.Hour)
	client := agentclient.NewClient(src, "", "")
	require.NoError(t, ping(t, client))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := client.Call(ctx, schemas.ToolPing, nil, nil)
	require.ErrorIs(t, err, schemas.ErrResourceExhausted)
	require.Greater(t, schemas.RetryAfterOf(err), time.Second, "the hint is when the next call may come")
}

// TestCallAtACapIsNotRetried: a town at a storage cap gets
// resource_exhausted without a hint, and the client does not send again.
func TestCallAtACapIsNotRetried(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{Limits: coordinator.Limits{MaxBeadBytes: 10}})
	adminCall(t, h, schemas.AdminTownCreate, "R", nil)
	src := startContainer(t, h, "R", 8*time.Hour)
	client := agentclient.NewClient(src, coordinator.MayorID, coordinator.MayorRig)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := client.Call(ctx, schemas.ToolCheckpoint, schemas.Checkpoint{Note: strings.Repeat("x", 100)}, nil)
	require.ErrorIs(t, err, schemas.ErrResourceExhausted)
	require.Zero(t, schemas.RetryAfterOf(err))
	require.Equal(t, int64(1), h.Daemon.Load().Caps, "sent once")
	require.NoError(t, client.Call(ctx, schemas.ToolCheckpoint, schemas.Checkpoint{Note: "short"}, nil))
}

// busSession is a Session on a plain connection: the client's transport,
// without a token source.
type busSession struct {
	town schemas.Town
	nc   *nats.Conn
}

func (s busSession) Town() schemas.Town            { return s.town }
func (s busSession) Token() string                 { return "token" }
func (s busSession) Refresh(context.Context) error { return nil }
func (s busSession) Do(ctx context.Context, f func(context.Context, *nats.Conn) error) error {
	return f(ctx, s.nc)
}

// TestCallRetriesABoundedNumberOfTimes: a responder that always says
// resource_exhausted, retry in 1 ms, is asked 1 + ExhaustedRetries times;
// then the refusal comes back.
func TestCallRetriesABoundedNumberOfTimes(t *testing.T) {
	srv := bustest.Start(t, bus.Config{})
	nc := bustest.Connect(t, srv)
	town, err := schemas.ForTown("R")
	require.NoError(t, err)
	subject, err := town.RPC(schemas.ToolPing)
	require.NoError(t, err)
	var asked atomic.Int64
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		asked.Add(1)
		_ = bus.RespondError(m, schemas.Exhausted(time.Millisecond, "over the rate"))
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	client := agentclient.NewClient(busSession{town: town, nc: nc}, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = client.Call(ctx, schemas.ToolPing, nil, nil)
	require.ErrorIs(t, err, schemas.ErrResourceExhausted)
	require.Equal(t, time.Millisecond, schemas.RetryAfterOf(err))
	require.Equal(t, int64(1+agentclient.ExhaustedRetries), asked.Load())
}

// TestTokenGetBacksOffByTheHint: a container refused a token over its
// town's token.get rate asks again when the hint says, not sooner: one
// refusal, then a token. The coordinator's clock and the container's are
// moved by hand, together, a tenth of a second at a time, each step once
// the container's loop waits again.
func TestTokenGetBacksOffByTheHint(t *testing.T) {
	coordClock, contClock := clock.NewManual(time.Now()), clock.NewManual(time.Now())
	h := coordinatortest.Start(t, coordinator.Config{
		TokenTTL: 10 * time.Second, RefreshInterval: 2 * time.Second, RefreshJitter: 100 * time.Millisecond,
		Limits: coordinator.Limits{TokenGetRate: 0.5, TokenGetBurst: 1}, Clock: coordClock,
	})
	src := startContainer(t, h, "R", 8*time.Hour, func(c *agentclient.Config) { c.Clock = contClock })
	// The container's loop waits on its clock: its one timer.
	waiting := func() bool { return contClock.Waiters() == 1 }
	// Watch the container's inbox: every answer to its token.get.
	var mu sync.Mutex
	var answers []string
	sub, err := h.Conn().Subscribe(src.Town().Inbox()+".>", func(m *nats.Msg) {
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(m.Data, &head) != nil || head.Type != schemas.TypeTokenRotation && head.Type != schemas.TypeAck {
			return
		}
		mu.Lock()
		answers = append(answers, head.Type+" "+m.Header.Get(schemas.ErrorHeader))
		mu.Unlock()
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, h.Conn().Flush())
	// A permissions violation makes the container ask for a fresh token at
	// once: within the second of its first, over the rate.
	require.NoError(t, src.Conn().Publish("gastown.town.other.rpc.ping", nil))
	got := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answers) > 0 && answers[len(answers)-1] == schemas.TypeTokenRotation+" "
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answers) > 0
	}, 10*time.Second, time.Millisecond, "the container asks for a fresh token at once")
	for step := 0; !got(); step++ {
		require.Less(t, step, 300, "the container gets its token in the end")
		require.Eventually(t, waiting, 10*time.Second, time.Millisecond)
		coordClock.Advance(100 * time.Millisecond)
		contClock.Advance(100 * time.Millisecond)
		require.Eventually(t, func() bool { return waiting() || got() }, 10*time.Second, time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{schemas.TypeAck + " " + string(schemas.CodeResourceExhausted), schemas.TypeTokenRotation + " "}, answers,
		"refused once, then asked again when told: not every backoff interval")
	require.Equal(t, int64(1), h.Daemon.Load().TokenGet)
}
