package agentclient

import (
	"context"
	"sync/atomic"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// ErrConnectionLost is a request whose connection dropped while it waited
// for its reply: the coordinator may or may not have handled it, and no
// reply will ever come. It is marked schemas.ErrUnavailable.
var ErrConnectionLost = errors.Mark(errors.New("the connection to the bus dropped while the request waited for its reply; it may or may not have been handled"),
	schemas.ErrUnavailable)

// dropSignal tells the requests in flight on a connection that it dropped.
// Each drop ends the current epoch and starts the next at once, so a
// request sent while the connection is away (it goes out when it is back)
// is not failed by the drop that came before it.
type dropSignal struct{ cur atomic.Pointer[dropEpoch] }

type dropEpoch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newDropSignal() *dropSignal {
	d := &dropSignal{}
	d.next()
	return d
}

func (d *dropSignal) next() {
	ctx, cancel := context.WithCancelCause(context.Background())
	d.cur.Store(&dropEpoch{ctx: ctx, cancel: cancel})
}

// dropped ends the requests in flight.
func (d *dropSignal) dropped() {
	old := d.cur.Load()
	d.next()
	old.cancel(ErrConnectionLost)
}

// run calls f with a context that ends with ctx or when the connection
// drops; an error f returns because of the drop is ErrConnectionLost.
func (d *dropSignal) run(ctx context.Context, f func(ctx context.Context) error) error {
	e := d.cur.Load()
	rctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(e.ctx, func() { cancel(ErrConnectionLost) })
	err := f(rctx)
	stop()
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), ErrConnectionLost) {
		err = errors.WithSecondaryError(ErrConnectionLost, err)
	}
	cancel(nil)
	return err
}
