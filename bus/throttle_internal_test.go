package bus

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func testThrottle(size int) *throttle {
	return newThrottle(Limits{PasswordFailures: 5, LockoutBase: time.Second, LockoutMax: 8 * time.Second, ThrottleSources: size})
}

// After the free failures a source is locked out, the right password
// too; every failure after a lockout doubles the next one, up to the cap;
// a right password once the lockout is over forgets the source.
func TestThrottleLockout(t *testing.T) {
	th := testThrottle(100)
	now := time.Unix(1_000_000, 0)
	const src = "192.0.2.1"
	for i := range 4 {
		require.Equal(t, wrong, th.attempt(src, now, false), "failure %d is free", i+1)
	}
	require.Equal(t, wrong, th.attempt(src, now, false), "the fifth failure is counted and locks out")
	require.Equal(t, lockedOut, th.attempt(src, now, true), "locked out: the right password is refused")
	require.Equal(t, lockedOut, th.attempt(src, now.Add(999*time.Millisecond), true))
	require.Equal(t, admitted, th.attempt("192.0.2.2", now, true), "another source is not locked out")

	// Each failure after a lockout doubles the next lockout, up to the cap.
	for _, lock := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		now = now.Add(lock)
		require.Equal(t, wrong, th.attempt(src, now, false), "the lockout of %s is over: one more guess", lock)
		next := min(2*lock, 8*time.Second)
		require.Equal(t, lockedOut, th.attempt(src, now.Add(next-time.Millisecond), true), "locked out for %s", next)
	}
	now = now.Add(8 * time.Second)
	require.Equal(t, admitted, th.attempt(src, now, true), "the right password once the lockout is over")
	require.Zero(t, th.len(), "a success forgets the source")
	for range 4 {
		require.Equal(t, wrong, th.attempt(src, now, false))
	}
	require.Equal(t, admitted, th.attempt(src, now, true), "after a success the free failures start again")
}

// A source that stays quiet for the longest lockout after its lockout
// ends is forgotten; one that comes back sooner is not.
func TestThrottleForgetsQuietSources(t *testing.T) {
	th := testThrottle(100)
	now := time.Unix(1_000_000, 0)
	for range 5 {
		th.attempt("a", now, false)
	}
	// a is locked out until now+1s, remembered until 1s+8s later.
	require.Equal(t, wrong, th.attempt("b", now.Add(9*time.Second-time.Millisecond), false))
	require.Equal(t, 2, th.len(), "a is still remembered")
	require.Equal(t, wrong, th.attempt("b", now.Add(9*time.Second), false))
	require.Equal(t, 1, th.len(), "a is forgotten")
	for range 4 {
		require.Equal(t, wrong, th.attempt("a", now.Add(9*time.Second), false), "a has its free failures again")
	}
}

// A source is forgotten when quiet long enough even while an older one,
// locked out for longer, is still remembered.
func TestThrottleForgetsBehindALongLockout(t *testing.T) {
	th := newThrottle(Limits{PasswordFailures: 5, LockoutBase: 10 * time.Second, LockoutMax: 20 * time.Second, ThrottleSources: 100})
	now := time.Unix(1_000_000, 0)
	for range 5 {
		th.attempt("long", now, false) // locked out until +10s: remembered until +30s
	}
	for range 4 {
		th.attempt("short", now.Add(time.Second), false) // never locked out: remembered until +21s
	}
	later := now.Add(21 * time.Second)
	for range 4 {
		require.Equal(t, wrong, th.attempt("short", later, false))
	}
	require.Equal(t, admitted, th.attempt("short", later, true), "short's old failures were forgotten, though long is older")
	require.Equal(t, wrong, th.attempt("long", later, false), "long is still remembered: this failure is its sixth")
	require.Equal(t, lockedOut, th.attempt("long", later, true))
}

// An attacker cycling through addresses does not grow the table past its
// size; the least recently failed sources go first.
func TestThrottleBounded(t *testing.T) {
	th := testThrottle(100)
	now := time.Unix(1_000_000, 0)
	for range 5 {
		th.attempt("victim-of-eviction", now, false)
	}
	for i := range 10_000 {
		th.attempt(fmt.Sprintf("10.0.%d.%d", i/256, i%256), now, false)
		require.LessOrEqual(t, th.len(), 100)
	}
	require.Equal(t, 100, th.len())
	_, kept := th.sources["10.0.39.15"] // the last one
	require.True(t, kept, "the newest source is kept")
	_, kept = th.sources["victim-of-eviction"]
	require.False(t, kept, "the oldest source was forgotten")
}

// Guesses sent in parallel get no more tries than guesses sent one by one.
func TestThrottleParallelGuesses(t *testing.T) {
	th := testThrottle(100)
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	got := map[verdict]int{}
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			v := th.attempt("203.0.113.9", now, false)
			mu.Lock()
			got[v]++
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Equal(t, map[verdict]int{wrong: 5, lockedOut: 195}, got)
}

func TestSourceKey(t *testing.T) {
	v6 := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 4222} }
	tests := []struct {
		name      string
		addr      net.Addr
		key       string
		throttled bool
	}{
		{"IPv4 without its port", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 55123}, "192.0.2.7", true},
		{"IPv4-mapped IPv6 is IPv4", v6("::ffff:192.0.2.7"), "192.0.2.7", true},
		{"IPv6 by its /64", v6("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64", true},
		{"the same /64", v6("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64", true},
		{"another /64", v6("2001:db8:1:3::1"), "2001:db8:1:3::/64", true},
		{"in-process", pipeAddr{}, "", false},
		{"gone", nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, throttled := sourceKey(tc.addr)
			require.Equal(t, tc.key, key)
			require.Equal(t, tc.throttled, throttled)
		})
	}
}

// pipeAddr is the address net.Pipe gives, as the in-process connection has.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func TestLockoutGrowth(t *testing.T) {
	th := newThrottle(Limits{PasswordFailures: 5, LockoutBase: time.Second, LockoutMax: 5 * time.Minute, ThrottleSources: 1})
	for over, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		require.Equal(t, want, th.lockout(over))
	}
	require.Equal(t, 5*time.Minute, th.lockout(9))
	require.Equal(t, 5*time.Minute, th.lockout(1_000_000), "no overflow")
}
