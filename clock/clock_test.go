package clock_test

import (
	"testing"
	"time"

	"github.com/gastown/gastown/clock"
	"github.com/stretchr/testify/require"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fired is what c holds now, if anything.
func fired(c <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-c:
		return t, true
	default:
		return time.Time{}, false
	}
}

func TestManualTimerFiresWhenDue(t *testing.T) {
	m := clock.NewManual(start)
	tm := m.NewTimer(time.Minute)
	require.Equal(t, 1, m.Waiters())
	m.Advance(time.Minute - time.Nanosecond)
	_, ok := fired(tm.C())
	require.False(t, ok, "not due yet")
	m.Advance(time.Nanosecond)
	at, ok := fired(tm.C())
	require.True(t, ok)
	require.Equal(t, start.Add(time.Minute), at)
	require.Zero(t, m.Waiters(), "a timer fires once")
	m.Advance(time.Hour)
	_, ok = fired(tm.C())
	require.False(t, ok)
}

func TestManualTimerStopAndReset(t *testing.T) {
	m := clock.NewManual(start)
	tm := m.NewTimer(time.Second)
	require.True(t, tm.Stop())
	require.False(t, tm.Stop())
	m.Advance(time.Minute)
	_, ok := fired(tm.C())
	require.False(t, ok, "a stopped timer does not fire")

	require.False(t, tm.Reset(time.Second))
	m.Advance(time.Second)
	require.False(t, tm.Reset(time.Second), "a fired timer is not active; its fire not taken is dropped")
	_, ok = fired(tm.C())
	require.False(t, ok)
	m.Advance(time.Second)
	at, ok := fired(tm.C())
	require.True(t, ok)
	require.Equal(t, start.Add(time.Minute+2*time.Second), at)

	zero := m.NewTimer(0)
	_, ok = fired(zero.C())
	require.True(t, ok, "a timer of zero fires at once")
}

func TestManualTickerTicksEveryPeriod(t *testing.T) {
	m := clock.NewManual(start)
	tk := m.NewTicker(10 * time.Second)
	for i := 1; i <= 3; i++ {
		m.Advance(10 * time.Second)
		at, ok := fired(tk.C())
		require.True(t, ok)
		require.Equal(t, start.Add(time.Duration(i)*10*time.Second), at)
	}
	m.Advance(time.Minute)
	_, ok := fired(tk.C())
	require.True(t, ok, "ticks not taken are dropped, one is kept")
	_, ok = fired(tk.C())
	require.False(t, ok)

	tk.Reset(time.Second)
	m.Advance(time.Second)
	_, ok = fired(tk.C())
	require.True(t, ok)
	tk.Stop()
	m.Advance(time.Hour)
	_, ok = fired(tk.C())
	require.False(t, ok)
	require.Zero(t, m.Waiters())
}

// Advance fires in the order things are due, each seeing its own time.
func TestManualAdvanceFiresInOrder(t *testing.T) {
	m := clock.NewManual(start)
	late := m.NewTimer(3 * time.Second)
	early := m.NewTimer(time.Second)
	tk := m.NewTicker(2 * time.Second)
	m.Advance(5 * time.Second)
	at, _ := fired(early.C())
	require.Equal(t, start.Add(time.Second), at)
	at, _ = fired(tk.C())
	require.Equal(t, start.Add(2*time.Second), at, "the first tick is kept; the second, at 4 s, is dropped")
	at, _ = fired(late.C())
	require.Equal(t, start.Add(3*time.Second), at)
	require.Equal(t, start.Add(5*time.Second), m.Now())
}

func TestReal(t *testing.T) {
	c := clock.Or(nil)
	require.WithinDuration(t, time.Now(), c.Now(), time.Minute)
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	tk := c.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Stop()
	m := clock.NewManual(start)
	require.Same(t, m, clock.Or(m).(*clock.Manual))
}
