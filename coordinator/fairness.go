package coordinator

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Fairness: every town has its own token buckets (tool calls, calls that
// run on their own goroutine, token.get, heartbeats) and its own count of
// calls in flight, checked on the subscription's goroutine before anything
// costly is done. A request over them is answered at once with
// resource_exhausted and a retry hint; the subscription never waits, so one
// town's backlog never holds up another's requests.

// KeyLimit is the log key naming the limit a town went over.
const KeyLimit = "limit"

// LoadStats counts what the limits refused since the coordinator started.
type LoadStats struct {
	// RPCRate and WriteRate: tool calls refused over a town's rates.
	RPCRate, WriteRate int64
	// Busy: tool calls refused because the town had WriteInFlight calls
	// running, or the handler pool was full.
	Busy int64
	// TokenGet: token.get requests refused over a town's rate or for a
	// full pool.
	TokenGet int64
	// Heartbeats: heartbeats dropped over a town's rate or for a full pool.
	Heartbeats int64
	// Caps: writes refused because the town was at a storage cap.
	Caps int64
}

// Load is what the limits refused so far.
func (c *Coordinator) Load() LoadStats { return c.limiter().stats() }

// Load is what the coordinator's limits refused so far.
func (d *Daemon) Load() LoadStats { return d.co.Load() }

// loadKind names a town's token buckets.
type loadKind int

const (
	loadRPC loadKind = iota
	loadWrite
	loadTokenGet
	loadHeartbeat
	loadKinds
)

// tokenBucket holds up to burst tokens and gains rate tokens a second. The
// zero value is full.
type tokenBucket struct {
	used   bool
	tokens float64
	at     time.Time
}

// refill brings the bucket up to now.
func (b *tokenBucket) refill(now time.Time, rate float64, burst int) {
	if !b.used {
		b.used, b.tokens, b.at = true, float64(burst), now
		return
	}
	if el := now.Sub(b.at); el > 0 { // a clock going back gains nothing
		b.tokens = min(float64(burst), b.tokens+el.Seconds()*rate)
		b.at = now
	}
}

// take takes a token, or says how long until one is there.
func (b *tokenBucket) take(now time.Time, rate float64, burst int) (time.Duration, bool) {
	b.refill(now, rate, burst)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Second)), false
}

// full reports whether the bucket is as it would be if it were new.
func (b *tokenBucket) full(now time.Time, rate float64, burst int) bool {
	b.refill(now, rate, burst)
	return b.tokens >= float64(burst)
}

// townLoad is one town's buckets and calls in flight.
type townLoad struct {
	mu       sync.Mutex
	buckets  [loadKinds]tokenBucket
	inflight int
	last     time.Time
	// gone: dropped from the limiter by a sweep; look the town up again.
	gone    bool
	unknown bool
}

// limiter holds the load of every town heard from lately.
type limiter struct {
	lim    Limits
	now    func() time.Time
	exists func(townID string) bool
	// log tells of refusals, at most once an interval per town and limit.
	log *bus.RateLog

	mu        sync.RWMutex
	towns     map[string]*townLoad
	unknown   int       // entries of towns with no town record
	shared    *townLoad // what unknown towns over MaxUnknownTowns share
	nextSweep time.Time

	rpcRate, writeRate, busy, tokenGet, heartbeats, caps atomic.Int64
}

func newLimiter(lim Limits, now func() time.Time, exists func(string) bool, log *bus.RateLog) *limiter {
	return &limiter{lim: lim, now: now, exists: exists, log: log, towns: map[string]*townLoad{}, shared: &townLoad{unknown: true}}
}

// refused logs a refusal of townID over limit (rate-limited).
func (l *limiter) refused(townID, limit string) {
	if l.log != nil {
		l.log.Log(context.Background(), slog.LevelWarn, townID+" "+limit, "town over its limit: refused", KeyTown, townID, KeyLimit, limit)
	}
}

func (l *limiter) stats() LoadStats {
	return LoadStats{
		RPCRate: l.rpcRate.Load(), WriteRate: l.writeRate.Load(), Busy: l.busy.Load(),
		TokenGet: l.tokenGet.Load(), Heartbeats: l.heartbeats.Load(), Caps: l.caps.Load(),
	}
}

// rate and burst of a bucket.
func (l *limiter) rate(k loadKind) (float64, int) {
	switch k {
	case loadRPC:
		return l.lim.RPCRate, l.lim.RPCBurst
	case loadWrite:
		return l.lim.WriteRate, l.lim.WriteBurst
	case loadTokenGet:
		return l.lim.TokenGetRate, l.lim.TokenGetBurst
	default:
		return l.lim.HeartbeatRate, l.lim.HeartbeatBurst
	}
}

// busyRetry is the hint of a call refused for calls in flight or a full
// pool: one write interval, at least 10 ms.
func (l *limiter) busyRetry() time.Duration {
	return max(10*time.Millisecond, time.Duration(float64(time.Second)/l.lim.WriteRate))
}

// town is the load of townID, made when first heard from. Towns with no
// town record get their own only while fewer than MaxUnknownTowns have
// one: state for names that do not exist stays bounded.
func (l *limiter) town(townID string, now time.Time) *townLoad {
	l.mu.RLock()
	t, sweep := l.towns[townID], !now.Before(l.nextSweep)
	l.mu.RUnlock()
	if t != nil && !sweep {
		return t
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Before(l.nextSweep) {
		l.sweep(now)
	}
	if t = l.towns[townID]; t != nil {
		return t
	}
	known := l.exists(townID)
	if !known && l.unknown >= l.lim.MaxUnknownTowns {
		return l.shared
	}
	t = &townLoad{unknown: !known}
	l.towns[townID] = t
	if !known {
		l.unknown++
	}
	return t
}

// sweep drops the towns quiet for ForgetAfter whose buckets are full again
// and that have nothing in flight: forgetting them changes nothing. l.mu
// is held.
func (l *limiter) sweep(now time.Time) {
	l.nextSweep = now.Add(l.lim.ForgetAfter)
	for id, t := range l.towns {
		t.mu.Lock()
		quiet := t.inflight == 0 && now.Sub(t.last) >= l.lim.ForgetAfter
		for k := range loadKinds {
			if quiet {
				r, b := l.rate(k)
				quiet = t.buckets[k].full(now, r, b)
			}
		}
		if quiet {
			t.gone = true
			delete(l.towns, id)
			if t.unknown {
				l.unknown--
			}
		}
		t.mu.Unlock()
	}
}

// take takes a token from each of the town's buckets kinds, all or none,
// and, when hold is set, a place among its calls in flight (give it back
// with done). It returns the refusal, with its retry hint, or nil.
func (l *limiter) take(townID string, hold bool, kinds ...loadKind) (*townLoad, *schemas.Error) {
	now := l.now()
	for {
		t := l.town(townID, now)
		t.mu.Lock()
		if t.gone {
			t.mu.Unlock()
			continue
		}
		t.last = now
		if hold && t.inflight >= l.lim.WriteInFlight {
			t.mu.Unlock()
			l.busy.Add(1)
			l.refused(townID, "calls in flight")
			return nil, schemas.Exhausted(l.busyRetry(), "town %s has %d calls running, its most; try again shortly", townID, l.lim.WriteInFlight)
		}
		// Check every bucket before taking from any: a refused call costs
		// the town nothing.
		for _, k := range kinds {
			r, b := l.rate(k)
			t.buckets[k].refill(now, r, b)
			if t.buckets[k].tokens < 1 {
				wait, _ := t.buckets[k].take(now, r, b)
				t.mu.Unlock()
				l.counter(k).Add(1)
				l.refused(townID, kindName(k))
				return nil, schemas.Exhausted(wait, "town %s is over its rate of %g %s a second; try again in %s", townID, r, kindName(k), (wait + time.Millisecond - 1).Truncate(time.Millisecond))
			}
		}
		for _, k := range kinds {
			t.buckets[k].tokens--
		}
		if hold {
			t.inflight++
		}
		t.mu.Unlock()
		return t, nil
	}
}

func (l *limiter) counter(k loadKind) *atomic.Int64 {
	switch k {
	case loadRPC:
		return &l.rpcRate
	case loadWrite:
		return &l.writeRate
	case loadTokenGet:
		return &l.tokenGet
	default:
		return &l.heartbeats
	}
}

func kindName(k loadKind) string {
	switch k {
	case loadRPC:
		return "tool calls"
	case loadWrite:
		return "writing tool calls"
	case loadTokenGet:
		return "token requests"
	default:
		return "heartbeats"
	}
}

// done gives back a place among the town's calls in flight.
func (t *townLoad) done() {
	t.mu.Lock()
	t.inflight--
	t.mu.Unlock()
}

// newTownLimiter makes the coordinator's limiter: towns exist when the
// towns bucket's view holds them.
func (c *Coordinator) newTownLimiter() *limiter {
	return newLimiter(c.cfg.Limits, c.now, func(townID string) bool {
		_, ok := c.st.towns.Get(townID)
		return ok
	}, bus.NewRateLog(c.log, c.cfg.ErrorLogInterval, c.now))
}

func (c *Coordinator) limiter() *limiter { return c.limits }

// rateRPC charges a tool call to its town's buckets: every call to the
// RPC bucket, calls that run on their own goroutine to the write bucket.
func (c *Coordinator) rateRPC(townID string, inline bool) error {
	kinds := []loadKind{loadRPC, loadWrite}
	if inline {
		kinds = kinds[:1]
	}
	if _, e := c.limiter().take(townID, false, kinds...); e != nil {
		return e
	}
	return nil
}

// spawnRPC runs a tool call that is not inline on its own goroutine, if
// the town has fewer than WriteInFlight calls running and the pool has
// room; else it answers resource_exhausted at once and returns that
// error. The call is tracked.
func (c *Coordinator) spawnRPC(m *nats.Msg, townID string, f func()) *schemas.Error {
	l := c.limiter()
	t, e := l.take(townID, true)
	if e == nil && !c.pool.trySpawn(func() { defer t.done(); f() }) {
		t.done()
		l.busy.Add(1)
		e = schemas.Exhausted(l.busyRetry(), "the coordinator is busy; try again shortly")
	}
	if e != nil {
		c.pool.done()
		_ = bus.RespondError(m, e)
	}
	return e
}

// tokenGetAdmission charges a token.get to its town's bucket and runs h in
// the pool; a request over the rate, or finding the pool full, gets an Ack
// that is not ok, code resource_exhausted, with a retry hint.
func (c *Coordinator) tokenGetAdmission(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		l := c.limiter()
		if townID, _, err := schemas.ParseTownSubject(m.Subject); err == nil {
			if !c.townReplyOK(m, townID) {
				return // the reply rule: a refusal too goes only to the town's own inbox
			}
			if _, e := l.take(townID, false, loadTokenGet); e != nil {
				_ = bus.RespondRefusal(m, e)
				return
			}
		} // a bad subject is the handler's to drop
		if !c.pool.track() {
			return
		}
		if !c.pool.trySpawn(func() { h(m) }) {
			c.pool.done()
			l.tokenGet.Add(1)
			_ = bus.RespondRefusal(m, schemas.Exhausted(l.busyRetry(), "the coordinator is busy; try again shortly"))
		}
	}
}

// heartbeatAdmission charges a heartbeat to its town's bucket and runs h
// in the pool; one over the rate, or finding the pool full, is dropped and
// counted (a heartbeat has no reply).
func (c *Coordinator) heartbeatAdmission(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		l := c.limiter()
		townID, _, err := schemas.ParseTownSubject(m.Subject)
		if err != nil {
			return
		}
		if _, e := l.take(townID, false, loadHeartbeat); e != nil {
			return
		}
		if !c.pool.track() {
			return
		}
		if !c.pool.trySpawn(func() { h(m) }) {
			c.pool.done()
			l.heartbeats.Add(1)
		}
	}
}
