package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/gastown/gastown/clock"
)

// every runs f every period of clk until ctx is done.
func every(ctx context.Context, clk clock.Clock, period time.Duration, f func(context.Context)) {
	t := clk.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			f(ctx)
		}
	}
}

// forEach runs f on every item, at most workers at a time, and returns when
// all are done (or ctx is done and the rest were skipped).
func forEach[T any](ctx context.Context, workers int, items []T, f func(T)) {
	if len(items) == 0 {
		return
	}
	work := make(chan T)
	var wg sync.WaitGroup
	for range min(workers, len(items)) {
		wg.Go(func() {
			for it := range work {
				f(it)
			}
		})
	}
	defer func() { close(work); wg.Wait() }()
	for _, it := range items {
		select {
		case work <- it:
		case <-ctx.Done():
			return
		}
	}
}
