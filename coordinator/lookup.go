package coordinator

import (
	"context"

	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
)

// Read your writes across coordinators. Every request handler that may
// wait (the admin methods, the tools that are not inline, and what they
// call: sling, dispatch) looks a key up with fetch: the view first, and on
// a miss the store, so that a town, rig, agent or bead another coordinator
// has just written, not yet brought by this one's watch, is found. A hit
// is the view's value, which may lag a watch delivery behind; every write
// reads the store again (compare-and-set), so a lagging hit never
// overwrites anything.
//
// What stays memory-only, on purpose: the RPC middleware's checks and the
// inline tools (prime, bead.get) run on the subscription's goroutine, where
// a store read would hold up every call behind it (and the middleware's
// agent check runs before the town's rate limit); the authorizer answers
// from memory while JetStream elects a leader; the loops (patrol, repair,
// liveness) and every List see the view and catch up at their next turn.
//
// Cost: a lookup of a key that does not exist costs one KV get, bounded by
// RequestTimeout. Tool callers hold their town's container token and pass
// the town's rate and concurrency limits before the handler runs: a town
// makes at most Limits.WriteRate such calls a second (WriteInFlight at
// once), each with a bounded number of lookups (a convoy's beads: as many
// as fit in a body). Admin requests need the admin password.

// fetch is b.Fetch bounded by RequestTimeout, answering not_found (with
// the message format and args) for a key that is not in the store either.
func fetch[T any](ctx context.Context, c *Coordinator, b *kvstore.Bucket[T], key, format string, args ...any) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	v, ok, err := b.Fetch(ctx, key)
	if err != nil {
		return v, err
	}
	if !ok {
		return v, schemas.NewError(schemas.CodeNotFound, format, args...)
	}
	return v, nil
}

// lookupBead is bead for a request that may wait: it reads through.
func (c *Coordinator) lookupBead(ctx context.Context, townID, beadID string) (Bead, error) {
	return fetch(ctx, c, c.st.beads, schemas.Key(townID, beadID), "no bead %s", beadID)
}
