package agentclient

import (
	"math/rand/v2"
	"time"
)

// backoff is the wait between attempts of one thing that keeps failing
// (a reconnect, a switch of connection, a request nobody answered): lo
// doubling with each consecutive failure up to hi, ±25% jitter so that a
// fleet of containers does not retry in step, and afresh after a success.
// Its owner serializes the calls (its own goroutine, or its lock).
type backoff struct {
	lo, hi   time.Duration
	failures int // consecutive failures since the last success
}

// next counts a failure and is the wait before the next attempt. It is
// never zero when lo is not: an attempt that fails at once cannot turn
// into a tight loop.
func (b *backoff) next() time.Duration {
	b.failures++
	return backoffDelay(b.failures, b.lo, b.hi)
}

// reset starts the backoff afresh: the thing succeeded.
func (b *backoff) reset() { b.failures = 0 }

// backoffDelay is the wait before attempt n (from 1): lo doubling to hi,
// ±25% jitter.
func backoffDelay(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return spread(min(d, hi), 0.75, 1.25)
}

// spread is d times a random factor in [lo, hi): callers told to wait the
// same time do not all come back at the same moment.
func spread(d time.Duration, lo, hi float64) time.Duration {
	return time.Duration(float64(d) * (lo + (hi-lo)*rand.Float64()))
}
