package coordinator

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The pool runs at most its size at once, never waits in trySpawn, and
// once closed takes nothing more while wait waits for what it had.
func TestHandlerPool(t *testing.T) {
	p := newHandlerPool(2)
	release := make(chan struct{})
	var ran, finished atomic.Int64
	for range 2 {
		require.True(t, p.track())
		require.True(t, p.trySpawn(func() { ran.Add(1); <-release; finished.Add(1) }))
	}
	require.True(t, p.track())
	require.False(t, p.trySpawn(func() { t.Error("ran in a full pool") }), "full: refused, not queued")
	p.done() // the refused one is the caller's to end

	inline := p.track() // a handler answered on the subscription's goroutine
	require.True(t, inline)
	p.close()
	require.False(t, p.track(), "closed: nothing new is tracked")

	waited := make(chan struct{})
	go func() { p.wait(); close(waited) }()
	require.Eventually(t, func() bool { return ran.Load() == 2 }, 10*time.Second, time.Millisecond)
	close(release)
	require.Eventually(t, func() bool { return finished.Load() == 2 }, 10*time.Second, time.Millisecond)
	select {
	case <-waited:
		t.Fatal("wait returned while a tracked handler was not done")
	default:
	}
	p.done()
	<-waited
}
