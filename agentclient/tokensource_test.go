package agentclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func ping(t *testing.T, c *agentclient.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out map[string]string
	return c.Call(ctx, "ping", nil, &out)
}

// pingWithin is ping bounded by d.
func pingWithin(c *agentclient.Client, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Call(ctx, "ping", nil, nil)
}

func adminCall(t *testing.T, h *coordinatortest.Harness, method, town string, out any) {
	t.Helper()
	if method == schemas.AdminTokenRotate || method == schemas.AdminTokenRevoke {
		ensureTown(t, h, town) // they refuse an unknown town
	}
	subject, err := schemas.Admin(method)
	require.NoError(t, err)
	b, _ := json.Marshal(schemas.TownRequest{TownID: town})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, bus.Call(ctx, h.AdminConn(), &nats.Msg{Subject: subject, Data: b}, out))
}

// TestRotationUnderLoad is the seed's outage made impossible: tokens live
// ~2 s and are refreshed every 200 ms, connections are closed by the server
// at each token's exp, and 64 concurrent callers never see unauthenticated.
// It runs for three token lifetimes; make soak (GASTOWN_SOAK=1) runs it
// for ten.
func TestRotationUnderLoad(t *testing.T) {
	duration := 6 * time.Second
	switch {
	case os.Getenv("GASTOWN_SOAK") != "":
		duration = 20 * time.Second
	case testing.Short():
		duration = 3 * time.Second
	}
	h := coordinatortest.Start(t, coordinator.Config{
		TokenTTL: 2 * time.Second, RefreshInterval: 200 * time.Millisecond, RefreshJitter: 20 * time.Millisecond,
		// 64 callers as fast as they can: rotation is measured, not the town's rate.
		RequestTimeout: 2 * time.Second, Limits: unlimitedRPC,
	})
	src := startContainer(t, h, "load", 2*time.Second)
	client := agentclient.NewClient(src, "", "")

	rotations := atomic.Int64{}
	sub, err := h.Conn().Subscribe(schemas.AllTowns.Events(), func(m *nats.Msg) {
		var ev schemas.TownEvent
		if schemas.Decode(m.Data, &ev) == nil && ev.Kind == schemas.EventTokenRotated {
			rotations.Add(1)
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	// A generous timeout: only a lost request may fail, not a slow one on
	// a starved machine.
	n := runLoad(ctx, t, client, 30*time.Second, true)
	t.Logf("rotation under load: %s, %d rotations, %d connection switches, %d requests ok, %d unauthenticated, %d other errors",
		duration, rotations.Load(), src.Switches(), n.ok, n.unauth, n.other)
	require.Zero(t, n.unauth, "requests failed with unauthenticated: %v", n.firstErr)
	require.Zero(t, n.other, "requests failed: %v", n.firstErr)
	require.Positive(t, n.ok)
	// Tokens live 2 s: without rotation every request after 2 s would fail.
	// (Rotations slow down on a loaded machine; at least one per lifetime.)
	require.GreaterOrEqual(t, rotations.Load(), int64(duration/(2*time.Second)))
	require.GreaterOrEqual(t, src.Switches(), int64(duration/(2*time.Second)))
}

// unlimitedRPC lifts the town's tool-call rate for the tests that load the
// bus with 64 callers as fast as they can.
var unlimitedRPC = coordinator.Limits{RPCRate: 1e9}

// loadCounts is what runLoad saw.
type loadCounts struct {
	ok, unauth, other int64
	firstErr          any
}

// runLoad makes 64 concurrent callers call ping until ctx is done.
func runLoad(ctx context.Context, t *testing.T, client *agentclient.Client, timeout time.Duration, logOther bool) loadCounts {
	var ok, unauth, other atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(context.Background(), timeout)
				err := client.Call(rctx, "ping", nil, nil)
				rcancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, schemas.ErrUnauthenticated):
					unauth.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				default:
					if n := other.Add(1); n <= 5 && logOther {
						t.Logf("request failed at %s: %v", time.Now().Format("15:04:05.000"), err)
					}
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	return loadCounts{ok: ok.Load(), unauth: unauth.Load(), other: other.Load(), firstErr: firstErr.Load()}
}

// TestSoakRotationWithRestarts: rotation under load while the coordinator
// and its NATS server are restarted, cleanly and by crashing (then no
// refresh comes until the dead coordinator's leases lapse, and the
// container asks for fresh tokens itself). Requests may fail while the
// bus is down, but never with unauthenticated: every token held is valid.
// GASTOWN_SOAK=1 runs it to 1,000 rotations.
func TestSoakRotationWithRestarts(t *testing.T) {
	soak := os.Getenv("GASTOWN_SOAK") != ""
	h := coordinatortest.Start(t, coordinator.Config{
		TokenTTL: 2 * time.Second, RefreshInterval: 200 * time.Millisecond, RefreshJitter: 20 * time.Millisecond,
		RequestTimeout: 2 * time.Second, LeaseTTL: 3 * time.Second, Limits: unlimitedRPC,
	})
	src := startContainer(t, h, "soak", 2*time.Second)
	client := agentclient.NewClient(src, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan loadCounts)
	go func() { done <- runLoad(ctx, t, client, 3*time.Second, false) }()

	restarts, limit, perRestart := 0, 3, int64(5)
	if soak {
		perRestart = 20 // a crash costs a lease lapse: rotate more between them
	}
	deadline := time.Now().Add(20 * time.Minute)
	for {
		// Let it rotate a few times, then kill and restart the coordinator
		// (and with it the embedded NATS server) mid-rotation.
		target := src.Adopted() + perRestart
		require.Eventually(t, func() bool { return src.Adopted() >= target }, time.Minute, 10*time.Millisecond)
		if soak && (src.Adopted() >= 1000 || time.Now().After(deadline)) || !soak && restarts >= limit {
			break
		}
		if restarts%2 == 0 {
			h.Restart(nil)
		} else {
			h.Crash() // its leases lapse only after LeaseTTL
		}
		restarts++
	}
	cancel()
	n := <-done
	t.Logf("soak: %d restarts, %d tokens held, %d connection switches, %d requests ok, %d unauthenticated, %d failed while the bus was down",
		restarts, src.Adopted(), src.Switches(), n.ok, n.unauth, n.other)
	require.Zero(t, n.unauth, "requests failed with unauthenticated: %v", n.firstErr)
	require.Positive(t, n.ok)
	require.NoError(t, client.Call(context.Background(), "ping", nil, nil), "the container works after the faults")
	if soak {
		require.GreaterOrEqual(t, src.Adopted(), int64(1000), "the soak reached 1,000 rotations before its deadline")
	}
}

// TestRefreshFailureKeepsWorking: a container that cannot store new tokens
// refuses them; the coordinator keeps retrying and the container keeps
// working with its current token.
func TestRefreshFailureKeepsWorking(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(dir+"/sub", 0o700))
	src := startContainer(t, h, "fail", time.Hour, func(c *agentclient.Config) { c.TokenFile = dir + "/sub/token" })
	client := agentclient.NewClient(src, "", "")
	held := src.Token()
	require.NoError(t, ping(t, client))

	require.NoError(t, os.RemoveAll(dir+"/sub")) // the token file can no longer be written
	var res schemas.RotateResult
	adminCall(t, h, schemas.AdminTokenRotate, "fail", &res)
	require.False(t, res.Acknowledged)
	require.False(t, res.Idle)
	require.Contains(t, res.Error, "refused")
	require.Equal(t, held, src.Token(), "an unstored token must not be used")
	require.NoError(t, ping(t, client), "the current token still works")

	require.NoError(t, os.MkdirAll(dir+"/sub", 0o700))
	adminCall(t, h, schemas.AdminTokenRotate, "fail", &res)
	require.True(t, res.Acknowledged)
	require.NotEqual(t, held, src.Token())
	b, err := os.ReadFile(dir + "/sub/token")
	require.NoError(t, err)
	require.Equal(t, src.Token(), string(b), "the bare JWT, no newline")
	require.NoError(t, ping(t, client))
}

// TestRevocation: a revocation is final. The container's connection is
// closed before the revocation answers, no fresh token is pushed to it,
// the revoked token is refused on a request and at connect (also after a
// restart), and a container restarted with a freshly minted bootstrap
// token works.
func TestRevocation(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	src := startContainer(t, h, "rev", time.Hour)
	client := agentclient.NewClient(src, "", "")
	require.NoError(t, ping(t, client))
	old, nc := src.Token(), src.Conn()

	var res schemas.RevokeResult
	adminCall(t, h, schemas.AdminTokenRevoke, "rev", &res)
	require.Equal(t, 1, res.Closed, "the container's connection is closed before the answer: %+v", res)
	require.Contains(t, res.Next, "gastown token mint --town rev")
	require.Eventually(t, func() bool { return !nc.IsConnected() }, 5*time.Second, time.Millisecond, "the revoked connection is closed")
	require.Equal(t, old, src.Token(), "no token is pushed after a revocation")

	// The old token, on a request: unauthenticated.
	m := nats.NewMsg("gastown.town.rev.rpc.ping")
	m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+old)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := bus.Call(ctx, h.TownConn("rev"), m, nil)
	require.ErrorIs(t, err, schemas.ErrUnauthenticated)
	require.NotContains(t, err.Error(), old)

	// The old token, at connect: refused.
	_, err = nats.Connect(h.URL(), nats.Token(old), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)

	// Revocation survives a restart.
	h.Restart(nil)
	_, err = nats.Connect(h.URL(), nats.Token(old), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)

	// The container, restarted with a fresh bootstrap token, works.
	src.Close()
	fresh := startContainer(t, h, "rev", time.Hour)
	require.NoError(t, ping(t, agentclient.NewClient(fresh, "", "")))
}

// TestRotationKeepsTheConnection: a pushed token is used by the very next
// request, but the connection stays until half its life: a rotation costs
// the container an acknowledgement, not a reconnection.
func TestRotationKeepsTheConnection(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	src := startContainer(t, h, "keep", time.Hour)
	client := agentclient.NewClient(src, "", "")
	require.NoError(t, ping(t, client))
	nc := src.Conn()
	for range 3 {
		before := src.Token()
		var res schemas.RotateResult
		adminCall(t, h, schemas.AdminTokenRotate, "keep", &res)
		require.True(t, res.Acknowledged, "%+v", res)
		require.NotEqual(t, before, src.Token(), "the pushed token is held")
		require.NoError(t, ping(t, client))
	}
	require.Zero(t, src.Switches(), "no reconnection for a rotation")
	require.Same(t, nc, src.Conn())
	require.True(t, nc.IsConnected())
}

// TestSameMillisecondRotationIsHeld: rotations minted within one
// millisecond (here, on a coordinator whose clock stands still) are still
// different tokens (their jti), and the container holds and writes the one
// pushed last, on the same connection: an acknowledged rotation is always
// the token held.
func TestSameMillisecondRotationIsHeld(t *testing.T) {
	frozen := time.Now()
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute,
		Now: func() time.Time { return frozen }})
	var tokenFile string
	src := startContainer(t, h, "still", time.Hour, func(c *agentclient.Config) { tokenFile = c.TokenFile })
	client := agentclient.NewClient(src, "", "")
	require.NoError(t, ping(t, client))
	for range 3 {
		before := src.Token()
		var res schemas.RotateResult
		adminCall(t, h, schemas.AdminTokenRotate, "still", &res)
		require.True(t, res.Acknowledged, "%+v", res)
		require.True(t, before != src.Token(), "the pushed token is held") // never print a token
		onDisk, err := agentclient.ReadTokenFile(tokenFile)
		require.NoError(t, err)
		require.True(t, src.Token() == onDisk, "the token file holds it too")
		require.NoError(t, ping(t, client))
	}
	require.Zero(t, src.Switches(), "a token of the same millisecond is no reason to reconnect")
}

// TestClosedContainerHasNoResponders: once Close returns, the bus has
// taken the container's subscriptions off, so a dispatch sent to it finds
// no responder at once instead of reaching a connection about to close
// and waiting out its whole timeout (as the coordinator's dispatch did,
// minutes, in TestNoContainerWarnedOnce).
func TestClosedContainerHasNoResponders(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	tok, _, err := h.Issuer.MintContainer("gone", "", time.Hour)
	require.NoError(t, err)
	tw, err := schemas.ForTown("gone")
	require.NoError(t, err)
	for range 20 {
		src, err := agentclient.Start(context.Background(), agentclient.Config{URL: h.URL(), Token: tok, ContainerID: "c-gone"},
			agentclient.Handler{Subject: tw.Dispatch(), Queue: schemas.ContainerQueue, Handle: func(*nats.Msg) {}})
		require.NoError(t, err)
		src.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = h.Conn().RequestWithContext(ctx, tw.Dispatch(), []byte("{}"))
		cancel()
		require.ErrorIs(t, err, nats.ErrNoResponders, "a closed container answers nothing, at once")
	}
}

// TestCallWithoutDeadlineEnds: a call made with no deadline while no
// coordinator answers ends with an error after the client's timeout, not
// never: an agent whose request was lost with a dying coordinator carries
// on (it fails, and its work is dispatched again).
func TestCallWithoutDeadlineEnds(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	src := startContainer(t, h, "gone", time.Hour)
	client := agentclient.NewClient(src, "", "").WithTimeout(300 * time.Millisecond)
	require.NoError(t, client.Call(context.Background(), "ping", nil, nil))
	h.Stop()
	done := make(chan error, 1)
	go func() { done <- client.Call(context.Background(), "ping", nil, nil) }()
	select {
	case err := <-done:
		require.Error(t, err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(time.Minute):
		t.Fatal("a call with no deadline never ended")
	}
}

// TestRequestInFlightWhenTheBusDrops: an agent's request waiting for its
// reply when the bus goes away fails at once with ErrConnectionLost
// (unavailable), not at its deadline: the reply will never come. Requests
// made afterwards wait for the bus to come back.
func TestRequestInFlightWhenTheBusDrops(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute})
	var tokenFile string
	startContainer(t, h, "drop", time.Hour, func(c *agentclient.Config) { tokenFile = c.TokenFile })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	sess, err := agentclient.OpenFileSession(ctx, h.URL(), tokenFile, 5*time.Second)
	cancel()
	require.NoError(t, err)
	defer sess.Close()
	client := agentclient.NewClient(sess, "", "")
	require.NoError(t, ping(t, client))
	// Nobody ever answers a request on …heartbeat: the coordinator takes
	// heartbeats, and so does the test, to know the request went out.
	out := make(chan struct{}, 1)
	seen, err := h.Conn().Subscribe(sess.Town().Heartbeat(), func(*nats.Msg) {
		select {
		case out <- struct{}{}:
		default:
		}
	})
	require.NoError(t, err)
	require.NoError(t, h.Conn().Flush())
	done := make(chan error, 1)
	go func() {
		done <- sess.Do(context.Background(), func(ctx context.Context, nc *nats.Conn) error {
			_, err := nc.RequestWithContext(ctx, sess.Town().Heartbeat(), []byte("{}"))
			return err
		})
	}()
	select {
	case <-out: // it is in flight: the bus has it
	case err := <-done:
		t.Fatalf("the request ended before the bus dropped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached the bus")
	}
	require.NoError(t, seen.Unsubscribe())
	h.Stop()
	select {
	case err := <-done:
		require.ErrorIs(t, err, agentclient.ErrConnectionLost)
		require.True(t, errors.Is(err, schemas.ErrUnavailable), "%v", err) // a cockroachdb mark
	case <-time.After(30 * time.Second):
		t.Fatal("the request in flight was not failed when the bus dropped")
	}
	require.NoError(t, h.TryStart())
	require.Eventually(t, func() bool { return ping(t, client) == nil }, 30*time.Second, 20*time.Millisecond)
}

// countingHandler counts the log records it is given, and keeps the
// times of those whose message is one of retries: the token source
// loop's failed attempts.
type countingHandler struct {
	n       *atomic.Int64
	retries []string
	mu      *sync.Mutex
	at      *[]time.Time
}

func newCountingHandler(retries ...string) countingHandler {
	return countingHandler{n: new(atomic.Int64), retries: retries, mu: new(sync.Mutex), at: new([]time.Time)}
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.n.Add(1)
	if slices.Contains(h.retries, r.Message) {
		h.mu.Lock()
		*h.at = append(*h.at, time.Now())
		h.mu.Unlock()
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// retryTimes is when each retry was logged, from the after-th on.
func (h countingHandler) retryTimes(after int) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone((*h.at)[min(after, len(*h.at)):])
}

// TestNoTightLoopWhileTheBusIsDown: a container whose connection is past
// its switch time while the bus is down backs off between attempts rather
// than dialing (or asking the restarting coordinator for tokens) in a
// tight loop; it comes back when the bus does.
func TestNoTightLoopWhileTheBusIsDown(t *testing.T) {
	h := coordinatortest.Start(t, coordinator.Config{TokenTTL: 2 * time.Second, RefreshInterval: 200 * time.Millisecond})
	// The loop's failed attempts: each is logged as one of these.
	logged := newCountingHandler("could not open a connection with the new token; will retry",
		"could not get a fresh token; carrying on with the current one")
	// Reconnect waits up to 1 s (not 30 s): it is back soon after the bus.
	// The attempts counted are the loop's, which ReconnectMax does not bound.
	src := startContainer(t, h, "down", 2*time.Second, func(c *agentclient.Config) {
		c.Logger = slog.New(logged)
		c.ReconnectMax = time.Second
	})
	client := agentclient.NewClient(src, "", "")
	require.NoError(t, ping(t, client))
	h.Stop()
	stopped, before, retriedBefore := time.Now(), logged.n.Load(), len(logged.retryTimes(0))
	// Wait for the loop to fail that many times with the bus down (past
	// the connection's switch time, half of 2 s, it fails every round):
	// each wait between two is at least the backoff's shortest, 3/4 of
	// 50 ms (a 2 s token's ceiling is 100 ms); a tight loop has none.
	const retries = 10
	require.Eventually(t, func() bool { return len(logged.retryTimes(retriedBefore)) >= retries }, time.Minute, 10*time.Millisecond,
		"the loop retries while the bus is down")
	at := logged.retryTimes(retriedBefore)
	lines := logged.n.Load() - before
	t.Logf("%d log lines in %s with the bus down, %d of them the loop's retries", lines, at[len(at)-1].Sub(stopped).Round(time.Millisecond), len(at))
	for i := 1; i < len(at); i++ {
		require.GreaterOrEqual(t, at[i].Sub(at[i-1]), 50*time.Millisecond*3/4, "retry %d came %s after the one before: retries while the bus is down must back off", i, at[i].Sub(at[i-1]))
	}
	require.Less(t, lines, int64(200), "retries while the bus is down must back off")
	require.NoError(t, h.TryStart())
	// Each try within a second: the first request after the outage goes
	// out on a connection that reconnected with the expired token, whose
	// recovery permissions refuse it, and is never answered; it must not
	// hold the test for ping's 5 s.
	require.Eventually(t, func() bool { return pingWithin(client, time.Second) == nil }, 30*time.Second, 20*time.Millisecond)
}

// TestRecovery: a container cut off past its token's exp comes back on its
// own within the recovery window, and stays out after it.
func TestRecovery(t *testing.T) {
	for _, tc := range []struct {
		name     string
		offset   time.Duration // how far the coordinator's clock jumps while it is down
		recovers bool
	}{
		{"within the window", time.Hour + time.Minute, true},
		{"past the window", time.Hour + 2*time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := coordinatortest.Start(t, coordinator.Config{
				TokenTTL: time.Hour, RefreshInterval: 10 * time.Minute, RecoveryWindow: time.Hour,
			})
			town := "rec" + fmt.Sprint(tc.recovers)
			src := startContainer(t, h, town, time.Hour)
			client := agentclient.NewClient(src, "", "")
			require.NoError(t, ping(t, client))
			before := src.Token()

			// Cut off: the coordinator goes away and comes back later than
			// the token's exp.
			h.Restart(func() time.Time { return time.Now().Add(tc.offset) })
			if tc.recovers {
				require.Eventually(t, func() bool { return src.Token() != before }, 15*time.Second, 20*time.Millisecond,
					"the container asks for and receives a fresh token")
				require.Eventually(t, func() bool { return ping(t, client) == nil }, 15*time.Second, 20*time.Millisecond)
				return
			}
			// Past the window it gets nothing: its connection attempts are
			// refused, and a call fails with unauthenticated.
			_, err := nats.Connect(h.URL(), nats.Token(before), nats.MaxReconnects(0))
			require.ErrorIs(t, err, nats.ErrAuthorization)
			require.Equal(t, before, src.Token())
		})
	}
}
