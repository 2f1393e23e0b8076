package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/gastown/gastown/clock"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

func testLimiter(t *testing.T, lim Limits, known ...string) (*limiter, *clock.Manual) {
	t.Helper()
	lim, err := lim.withDefaults(DefaultHeartbeatInterval)
	require.NoError(t, err)
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	exists := map[string]bool{}
	for _, k := range known {
		exists[k] = true
	}
	return newLimiter(lim, clk.Now, func(id string) bool { return exists[id] }, nil), clk
}

func TestTokenBucket(t *testing.T) {
	l, clk := testLimiter(t, Limits{RPCRate: 10, RPCBurst: 3}, "A")
	for range 3 {
		_, e := l.take("A", false, loadRPC)
		require.Nil(t, e)
	}
	_, e := l.take("A", false, loadRPC)
	require.NotNil(t, e)
	require.Equal(t, schemas.CodeResourceExhausted, e.Code)
	require.Equal(t, 100*time.Millisecond, e.RetryAfter, "one token comes back every 100 ms")
	clk.Advance(50 * time.Millisecond)
	_, e = l.take("A", false, loadRPC)
	require.Equal(t, 50*time.Millisecond, e.RetryAfter)
	clk.Advance(50 * time.Millisecond)
	_, e = l.take("A", false, loadRPC)
	require.Nil(t, e, "the hint was right")
	clk.Advance(time.Hour)
	for range 3 {
		_, e := l.take("A", false, loadRPC)
		require.Nil(t, e, "refilled to the burst, no more")
	}
	_, e = l.take("A", false, loadRPC)
	require.NotNil(t, e)
	require.Equal(t, int64(3), l.stats().RPCRate)
}

func TestLimiterTakesAllOrNothing(t *testing.T) {
	l, _ := testLimiter(t, Limits{RPCRate: 100, RPCBurst: 5, WriteRate: 1, WriteBurst: 1}, "A")
	_, e := l.take("A", false, loadRPC, loadWrite)
	require.Nil(t, e)
	_, e = l.take("A", false, loadRPC, loadWrite)
	require.NotNil(t, e, "over the write rate")
	for range 4 {
		_, e := l.take("A", false, loadRPC)
		require.Nil(t, e, "the refused write took no tool-call token")
	}
}

func TestLimiterInFlight(t *testing.T) {
	l, _ := testLimiter(t, Limits{WriteInFlight: 2, WriteRate: 50}, "A", "B")
	a1, e := l.take("A", true)
	require.Nil(t, e)
	_, e = l.take("A", true)
	require.Nil(t, e)
	_, e = l.take("A", true)
	require.NotNil(t, e)
	require.Equal(t, 20*time.Millisecond, e.RetryAfter, "one write interval")
	_, e = l.take("B", true)
	require.Nil(t, e, "another town has its own")
	a1.done()
	_, e = l.take("A", true)
	require.Nil(t, e)
}

func TestLimiterStateIsBounded(t *testing.T) {
	l, clk := testLimiter(t, Limits{MaxUnknownTowns: 3, ForgetAfter: time.Minute, RPCRate: 1, RPCBurst: 1}, "A")
	for i := range 100 {
		_, _ = l.take(fmt.Sprintf("ghost%d", i), false, loadRPC)
	}
	_, _ = l.take("A", false, loadRPC)
	l.mu.RLock()
	require.Len(t, l.towns, 4, "three unknown towns of their own, and the known one")
	l.mu.RUnlock()
	_, e := l.take("ghost99", false, loadRPC)
	require.NotNil(t, e, "the unknown towns over the bound share one bucket")

	// A town with a call in flight is kept; quiet ones are forgotten once
	// their buckets are full again.
	held, e := l.take("A", true)
	require.Nil(t, e)
	clk.Advance(2 * time.Minute)
	_, _ = l.take("ghost0", false, loadRPC)
	l.mu.RLock()
	require.Len(t, l.towns, 2, "ghost0 (just heard from) and A (a call in flight)")
	l.mu.RUnlock()
	held.done()
	clk.Advance(2 * time.Minute)
	_, _ = l.take("B", false, loadRPC)
	l.mu.RLock()
	require.Len(t, l.towns, 1, "only B, just heard from")
	require.Equal(t, 1, l.unknown)
	l.mu.RUnlock()
}

func TestUsageCountsTheView(t *testing.T) {
	u := newUsage()
	lim := Limits{MaxBeads: 2, MaxStoredBytes: 10}
	u.record("A.b1", Bead{TownID: "A", BeadID: "b1", Title: "12345"})
	n, b := u.counts("A")
	require.Equal(t, 1, n)
	require.Equal(t, int64(5), b)
	u.record("A.b1", Bead{TownID: "A", BeadID: "b1", Title: "123"})
	_, b = u.counts("A")
	require.Equal(t, int64(3), b, "a rewritten bead counts its newest size once")

	release, err := u.reserve("A", 1, 7, lim)
	require.NoError(t, err)
	_, err = u.reserve("A", 1, 1, lim)
	require.ErrorIs(t, err, schemas.ErrResourceExhausted, "the reserved bead counts")
	release()
	release() // twice is harmless
	_, err = u.reserve("A", 0, 8, lim)
	require.ErrorIs(t, err, schemas.ErrResourceExhausted, "3 + 8 bytes is over 10")
	_, err = u.reserve("B", 2, 10, lim)
	require.NoError(t, err, "another town has its own")
}

// BenchmarkLimiterTake is what the limiter adds to an inline tool call.
func BenchmarkLimiterTake(b *testing.B) {
	lim, err := Limits{RPCRate: 1e12}.withDefaults(DefaultHeartbeatInterval)
	require.NoError(b, err)
	l := newLimiter(lim, time.Now, func(string) bool { return true }, nil)
	for b.Loop() {
		if _, e := l.take("A", false, loadRPC); e != nil {
			b.Fatal(e)
		}
	}
}

func TestLimitsDefaults(t *testing.T) {
	l, err := Limits{}.withDefaults(DefaultHeartbeatInterval)
	require.NoError(t, err)
	require.Equal(t, Limits{
		RPCRate: DefaultRPCRate, RPCBurst: 2 * DefaultRPCRate, WriteRate: DefaultWriteRate, WriteBurst: 2 * DefaultWriteRate,
		WriteInFlight: DefaultWriteInFlight, Handlers: DefaultHandlers, TokenGetRate: DefaultTokenGetRate, TokenGetBurst: DefaultTokenGetBurst,
		HeartbeatRate: DefaultMinHeartbeatRate, HeartbeatBurst: DefaultHeartbeatBurst,
		MaxBeads: DefaultMaxBeads, MaxStoredBytes: DefaultMaxStoredBytes, MaxBeadBytes: DefaultMaxBeadBytes,
		MaxUnknownTowns: DefaultMaxUnknownTowns, ForgetAfter: DefaultForgetAfter,
	}, l)
	again, err := l.withDefaults(DefaultHeartbeatInterval)
	require.NoError(t, err)
	require.Equal(t, l, again, "applying the defaults twice changes nothing")
	fast, err := Limits{}.withDefaults(100 * time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, 200.0, fast.HeartbeatRate, "20 per interval")
	for name, bad := range map[string]Limits{
		"negative rate":            {RPCRate: -1},
		"negative burst":           {WriteBurst: -1},
		"in flight over the pool":  {WriteInFlight: 300},
		"negative cap":             {MaxBeads: -1},
		"negative forget interval": {ForgetAfter: -time.Second},
	} {
		_, err := bad.withDefaults(DefaultHeartbeatInterval)
		require.Error(t, err, name)
	}
}
