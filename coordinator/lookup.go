package coordinator

import (
	"context"
	"encoding/json"

	"github.com/cockroachdb/errors"
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
// prime reads the store whatever the view holds (Read): an agent primes
// as its run starts, right after another coordinator wrote its hook.
//
// What stays memory-only, on purpose: the RPC middleware's checks and the
// inline ping run on the subscription's goroutine, where a store read
// would hold up every call behind it; a middleware check that misses the
// calling agent sends the call to its own goroutine, under the town's
// write rate, to read the agent first (readAgentFirst); the authorizer answers
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

// errAgentUnseen is the middleware's agent check missing the caller's
// agent in the view: an agent another coordinator has just made (a new
// polecat, a town's mayor) calls before this one's watch has brought it.
var errAgentUnseen = errors.New("agent not in the view")

// readAgentFirst is h run on its own goroutine (never inline, so under
// the town's write rate and in-flight limits) after reading the caller's
// agent from the store and checking it as allowed does: a call that
// missed the view is decided on the store's record, and refused as
// before when the store has no such agent either.
func (c *Coordinator) readAgentFirst(h rpcMethod, method string) rpcMethod {
	return rpcMethod{h: func(ctx context.Context, caller Caller, body json.RawMessage) (any, error) {
		a, err := fetch(ctx, c, c.st.agents, schemas.Key(caller.TownID, caller.AgentID), "no agent %s in town %s", caller.AgentID, caller.TownID)
		if schemas.CodeOf(err) == schemas.CodeNotFound {
			return nil, schemas.NewError(schemas.CodePermissionDenied, "no agent %s in town %s", caller.AgentID, caller.TownID)
		}
		if err != nil {
			return nil, err
		}
		if err := allowedAs(a, &caller, method); err != nil {
			return nil, err
		}
		return h.h(ctx, caller, body)
	}}
}
