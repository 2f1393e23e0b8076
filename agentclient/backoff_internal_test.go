package agentclient

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBackoffIsNeverATightLoop: every wait the backoff gives is at least
// three quarters of lo, even for an attempt that fails at once (what let a
// container dial 19,000 times in 3 s once), doubles up to hi, never more
// than a quarter past hi, and starts afresh after a success.
func TestBackoffIsNeverATightLoop(t *testing.T) {
	lo, hi := 50*time.Millisecond, time.Second
	b := backoff{lo: lo, hi: hi}
	var waits []time.Duration
	for range 20 {
		d := b.next()
		require.GreaterOrEqual(t, d, lo*3/4)
		require.LessOrEqual(t, d, hi*5/4)
		waits = append(waits, d)
	}
	require.Greater(t, waits[len(waits)-1], 10*lo, "it grows")
	var sum time.Duration
	for _, d := range waits {
		sum += d
	}
	require.Greater(t, sum, 10*time.Second, "20 failures in a row take seconds, not a tight loop")
	b.reset()
	require.LessOrEqual(t, b.next(), lo*5/4, "afresh after a success")
}

// TestLoopRetryCeiling: the token source's retry wait after a failed
// switch or refresh is at most a twentieth of its token's life left,
// bounded by retryMin and retryMax: a 2 s token is retried within 100 ms,
// an 8 h one at most every 5 s.
func TestLoopRetryCeiling(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		left, want time.Duration
	}{
		{2 * time.Second, 100 * time.Millisecond},
		{time.Millisecond, retryMin},
		{-time.Hour, retryMin}, // expired
		{8 * time.Hour, retryMax},
	} {
		s := &TokenSource{cfg: Config{Now: func() time.Time { return now }}}
		s.newest = &held{}
		s.newest.claims.ExpiresAt.Time = now.Add(tc.left)
		require.Equal(t, tc.want, s.retryCeiling(), "life left %s", tc.left)
	}
}
