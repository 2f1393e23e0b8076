package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/gastown/gastown/clock"
	"github.com/stretchr/testify/require"
)

// every ticks on the clock it is given: a loop of an hour runs as soon as
// a manual clock is advanced an hour, once per advance past a period.
func TestEveryTicksOnItsClock(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every(ctx, clk, time.Hour, func(context.Context) { ran <- clk.Now() })
	}()
	require.Eventually(t, func() bool { return clk.Waiters() == 1 }, 10*time.Second, time.Millisecond, "the loop's ticker is on the clock")
	for i := 1; i <= 3; i++ {
		clk.Advance(time.Hour)
		require.Equal(t, time.Date(2026, 1, 1, i, 0, 0, 0, time.UTC), <-ran)
	}
	select {
	case <-ran:
		t.Fatal("ran without the clock moving")
	default:
	}
	cancel()
	<-done
	require.Zero(t, clk.Waiters(), "its ticker is stopped")
}
