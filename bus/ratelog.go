package bus

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RateLogKeys bounds how many keys a RateLog tells apart; lines of further
// keys share one key, RateLogOverflow, until old keys are forgotten.
const RateLogKeys = 1024

// RateLogOverflow is the key of the lines whose own key did not fit.
const RateLogOverflow = "(other)"

// RateLog writes at most one line per key per interval to a logger, for
// lines whose number an outsider decides (refused connections, internal
// errors of requests). The lines it leaves out are counted, and the next
// line it writes for that key says how many, as KeySuppressed. It is safe
// for concurrent use and never blocks on anything but its own short lock.
type RateLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	keys    map[string]*rateKey
	pruneAt time.Time // when a full table may next be pruned
}

type rateKey struct {
	next       time.Time // when the key may write again
	suppressed int       // lines left out since it last wrote
}

// NewRateLog makes a RateLog writing to l. An interval of zero or less
// writes every line; now nil means time.Now.
func NewRateLog(l *slog.Logger, interval time.Duration, now func() time.Time) *RateLog {
	if now == nil {
		now = time.Now
	}
	return &RateLog{log: l, interval: interval, now: now, keys: map[string]*rateKey{}}
}

// Log writes a line at level with msg and args, unless a line of key was
// written less than the interval ago: then it only counts it. It reports
// whether it wrote.
func (r *RateLog) Log(ctx context.Context, level slog.Level, key, msg string, args ...any) bool {
	if !r.log.Enabled(ctx, level) {
		return false
	}
	n, ok := r.admit(key)
	if !ok {
		return false
	}
	if n > 0 {
		args = append(args[:len(args):len(args)], KeySuppressed, n)
	}
	r.log.Log(ctx, level, msg, args...)
	return true
}

// admit decides whether a line of key is written now, and returns how
// many of its lines were suppressed before it.
func (r *RateLog) admit(key string) (suppressed int, write bool) {
	if r.interval <= 0 {
		return 0, true
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[key]
	if !ok {
		if len(r.keys) >= RateLogKeys {
			r.pruneLocked(now)
		}
		if len(r.keys) >= RateLogKeys {
			key = RateLogOverflow
			k, ok = r.keys[key]
		}
		if !ok {
			k = &rateKey{}
			r.keys[key] = k
		}
	}
	if now.Before(k.next) {
		k.suppressed++
		return 0, false
	}
	suppressed, k.suppressed, k.next = k.suppressed, 0, now.Add(r.interval)
	return suppressed, true
}

// pruneLocked forgets the keys that have nothing to report and may write
// again, at most once an interval (so a full table costs one scan per
// interval, not one per line). r.mu must be held.
func (r *RateLog) pruneLocked(now time.Time) {
	if now.Before(r.pruneAt) {
		return
	}
	r.pruneAt = now.Add(r.interval)
	for key, k := range r.keys {
		if k.suppressed == 0 && !now.Before(k.next) {
			delete(r.keys, key)
		}
	}
}
