package agentclient

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// HolderRecheck is how long a client sends its town's requests straight
// to the coordinators' queue group (…rpc.<method>) after a request to
// the lease holder's subject (…holder.rpc.<method>) found no responder:
// while a lease moves, or with coordinators that do not subscribe it.
// After that it tries the holder's subject again.
const HolderRecheck = time.Second

// holderRoute remembers whether the town's lease holder answers on its
// own subject. It is shared by the copies WithTimeout makes.
type holderRoute struct {
	// absentUntil is when to try the holder's subject again (UnixNano);
	// zero: try it now.
	absentUntil atomic.Int64
}

// rpcSubjects are the two subjects of one method: the lease holder's,
// tried first, and the queue group's.
type rpcSubjects struct{ holder, queue string }

// send sends the request to the lease holder's subject and, when no one
// listens there, to the queue group's at once: a request that found no
// responder was received by no one, so sending it again is always safe
// (PROTOCOL.md, RPC). After a miss the holder's subject is skipped for
// HolderRecheck.
func (r *holderRoute) send(s rpcSubjects, call func(subject string) error) error {
	if now := time.Now().UnixNano(); now >= r.absentUntil.Load() {
		err := call(s.holder)
		if !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		r.absentUntil.Store(now + int64(HolderRecheck))
	}
	return call(s.queue)
}

// callRouted is call on the lease holder's subject, or the queue group's.
func (c *Client) callRouted(ctx context.Context, s rpcSubjects, data []byte, out any) error {
	return c.route.send(s, func(subject string) error { return c.call(ctx, subject, data, out) })
}
