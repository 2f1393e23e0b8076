// Package clock is the one source of time for Gastown's loops: it tells the
// time and makes the timers and tickers they wait on. Production code is
// handed Real (the wall clock); tests hand it a Manual clock and move it by
// hand, so that a loop ticking every minute runs as soon as the test
// advances a minute, with no wall-clock wait.
//
// It imports nothing of Gastown and does no I/O: any package may use it.
package clock

import "time"

// Clock tells the time and makes timers and tickers that run on it.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// NewTimer is a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
	// NewTicker is a ticker that fires every d, from d from now; d must be
	// positive.
	NewTicker(d time.Duration) Ticker
}

// Timer is a time.Timer of some Clock.
type Timer interface {
	// C delivers the time the timer fired at.
	C() <-chan time.Time
	// Stop stops the timer; it reports whether that stopped it from firing.
	Stop() bool
	// Reset makes the timer fire d from now; it reports whether it had
	// been active.
	Reset(d time.Duration) bool
}

// Ticker is a time.Ticker of some Clock.
type Ticker interface {
	// C delivers the time of each tick; a tick the reader is not ready for
	// is dropped, as with time.Ticker.
	C() <-chan time.Time
	// Stop stops the ticker.
	Stop()
	// Reset makes the ticker tick every d, from d from now.
	Reset(d time.Duration)
}

// Real is the wall clock: the time package's own timers and tickers.
func Real() Clock { return realClock{} }

// Or is c, or Real when c is nil: what a config's zero Clock means.
func Or(c Clock) Clock {
	if c == nil {
		return Real()
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time                   { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer   { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
