package coordinator

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// handlerPool runs the coordinator's request handlers, each on its own
// goroutine, at most its size at once, and counts every handler it
// tracked, spawned or answered inline, so that Close waits for each one.
// Once closed it tracks no more. Towns' requests never wait for a slot
// (trySpawn: a full pool is answered resource_exhausted, fairness.go);
// admin requests do (spawn).
type handlerPool struct {
	// slots holds one token per running handler; its capacity is the
	// pool's size (Limits.Handlers).
	slots chan struct{}
	// mu guards closed, so that no handler is tracked once wait may have
	// begun.
	mu     sync.Mutex
	closed bool
	// tracked counts the handlers tracked and not yet done.
	tracked sync.WaitGroup
}

func newHandlerPool(size int) *handlerPool {
	return &handlerPool{slots: make(chan struct{}, size)}
}

// track counts a handler in, unless the pool is closed. A tracked handler
// ends with done, or is handed to spawn or trySpawn, which end it.
func (p *handlerPool) track() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.tracked.Add(1)
	return true
}

// done ends a tracked handler that was not spawned.
func (p *handlerPool) done() { p.tracked.Done() }

// spawn runs a tracked handler f on its own goroutine once a slot is free.
func (p *handlerPool) spawn(f func()) {
	p.slots <- struct{}{}
	go p.run(f)
}

// trySpawn runs a tracked handler f on its own goroutine if a slot is
// free, and reports whether it did. It never waits; when it reports
// false, f is still the caller's to end with done.
func (p *handlerPool) trySpawn(f func()) bool {
	select {
	case p.slots <- struct{}{}:
	default:
		return false
	}
	go p.run(f)
	return true
}

func (p *handlerPool) run(f func()) {
	defer func() { <-p.slots; p.tracked.Done() }()
	f()
}

// concurrent runs h for each message in the pool, waiting for a slot.
func (p *handlerPool) concurrent(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		if p.track() {
			p.spawn(func() { h(m) })
		}
	}
}

// close tracks no more handlers; those tracked run on.
func (p *handlerPool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// wait waits for every tracked handler to be done.
func (p *handlerPool) wait() { p.tracked.Wait() }
