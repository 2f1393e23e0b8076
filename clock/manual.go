package clock

import (
	"sync"
	"time"
)

// Manual is a clock that moves only when told: tests advance it by hand.
// Its timers and tickers fire inside Advance, in the order of the times
// they are due (those due at the same time in the order they were made),
// each seeing Now at the moment it fires. A fire is a send on a channel
// of one, dropped when the reader has not taken the last one, as with
// the time package. Safe for concurrent use.
type Manual struct {
	mu  sync.Mutex
	now time.Time
	// waiters are the armed timers and tickers; seq orders equal due times.
	waiters map[*manualWaiter]struct{}
	seq     uint64
}

// NewManual is a manual clock reading start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, waiters: map[*manualWaiter]struct{}{}}
}

// Now is the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// Advance moves the clock d forward, firing every timer and ticker due on
// the way, in order.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	target := m.now.Add(d)
	for {
		w := m.nextLocked(target)
		if w == nil {
			break
		}
		m.now = w.when
		select {
		case w.c <- w.when:
		default:
		}
		if w.period > 0 {
			w.when = w.when.Add(w.period)
			m.seq++
			w.seq = m.seq
		} else {
			delete(m.waiters, w)
		}
	}
	if target.After(m.now) {
		m.now = target
	}
}

// Waiters is how many timers and tickers are armed: a test waits for a
// loop to be waiting on the clock before it advances past its wait.
func (m *Manual) Waiters() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

// NewTimer is a timer that fires once the clock has advanced d.
func (m *Manual) NewTimer(d time.Duration) Timer {
	w := &manualWaiter{m: m, c: make(chan time.Time, 1)}
	m.arm(w, d, 0)
	return manualTimer{w}
}

// NewTicker is a ticker that fires each time the clock has advanced d more.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	w := &manualWaiter{m: m, c: make(chan time.Time, 1)}
	m.arm(w, d, d)
	return manualTicker{w}
}

// nextLocked is the waiter due first at or before target, nil if none.
func (m *Manual) nextLocked(target time.Time) *manualWaiter {
	var first *manualWaiter
	for w := range m.waiters {
		if w.when.After(target) {
			continue
		}
		if first == nil || w.when.Before(first.when) || w.when.Equal(first.when) && w.seq < first.seq {
			first = w
		}
	}
	return first
}

// arm (re)arms w to fire d from now, every period after when positive,
// dropping a fire not yet taken; it reports whether w was armed before.
func (m *Manual) arm(w *manualWaiter, d, period time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, was := m.waiters[w]
	drain(w.c)
	m.seq++
	w.when, w.period, w.seq = m.now.Add(d), period, m.seq
	if d <= 0 && period == 0 {
		// Due now: fire at once, as a time.Timer of zero does.
		w.c <- w.when
		delete(m.waiters, w)
		return was
	}
	m.waiters[w] = struct{}{}
	return was
}

// disarm stops w, dropping a fire not yet taken; it reports whether w was
// armed.
func (m *Manual) disarm(w *manualWaiter) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, was := m.waiters[w]
	delete(m.waiters, w)
	drain(w.c)
	return was
}

func drain(c chan time.Time) {
	select {
	case <-c:
	default:
	}
}

// manualWaiter is one timer or ticker of a Manual clock.
type manualWaiter struct {
	m      *Manual
	c      chan time.Time
	when   time.Time
	period time.Duration // 0 for a timer
	seq    uint64
}

type manualTimer struct{ w *manualWaiter }

func (t manualTimer) C() <-chan time.Time        { return t.w.c }
func (t manualTimer) Stop() bool                 { return t.w.m.disarm(t.w) }
func (t manualTimer) Reset(d time.Duration) bool { return t.w.m.arm(t.w, d, 0) }

type manualTicker struct{ w *manualWaiter }

func (t manualTicker) C() <-chan time.Time { return t.w.c }
func (t manualTicker) Stop()               { t.w.m.disarm(t.w) }
func (t manualTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	t.w.m.arm(t.w, d, d)
}
