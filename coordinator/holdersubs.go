package coordinator

import (
	"sync"

	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// holderSubs are this coordinator's subscriptions of
// gastown.town.<T>.holder.rpc.> for each town whose lease it holds
// (PROTOCOL.md, RPC): a town's requests go to the one coordinator that
// runs its loops, over one route on a cluster, instead of being spread
// over every coordinator in the queue group. They follow the leases:
// syncHolderSubs runs after every pass of the lease loop. They are in the
// coordinator queue group too, so while a lease moves and the old and the
// new holder both subscribe, a request is still delivered once; while
// neither does, the client falls back to …rpc.<method>, which every
// coordinator answers.
type holderSubs struct {
	mu     sync.Mutex
	subs   map[string]*nats.Subscription // by town id
	closed bool
}

// syncHolderSubs subscribes the holder subjects of the towns this
// coordinator acts on now and unsubscribes those of the towns it no
// longer does.
func (c *Coordinator) syncHolderSubs() {
	want := map[string]bool{}
	for _, key := range c.leases.heldTowns() {
		if c.leases.holdsKey(key) {
			want[key[len(leaseTownPrefix):]] = true
		}
	}
	h := &c.holder
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || c.rpcHandler == nil {
		return
	}
	for town, s := range h.subs {
		if !want[town] {
			_ = s.Unsubscribe()
			delete(h.subs, town)
		}
	}
	for town := range want {
		if h.subs[town] != nil {
			continue
		}
		t, err := schemas.ForTown(town)
		if err != nil {
			continue // not a town a container could name
		}
		s, err := c.nc.QueueSubscribe(t.HolderRPCAll(), schemas.CoordinatorQueue, c.rpcHandler)
		if err != nil {
			// Its requests still reach the queue group on …rpc.<method>.
			c.log.Warn("subscribing the lease holder's rpc subject; the town's requests go to the queue group", KeyTown, town, KeyErr, err)
			continue
		}
		if h.subs == nil {
			h.subs = map[string]*nats.Subscription{}
		}
		h.subs[town] = s
	}
}

// holderTowns lists the towns whose holder subject is subscribed now.
func (c *Coordinator) holderTowns() []string {
	h := &c.holder
	h.mu.Lock()
	defer h.mu.Unlock()
	towns := make([]string, 0, len(h.subs))
	for town := range h.subs {
		towns = append(towns, town)
	}
	return towns
}

// closeHolderSubs unsubscribes them all, for good (Close).
func (c *Coordinator) closeHolderSubs() {
	h := &c.holder
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for town, s := range h.subs {
		_ = s.Unsubscribe()
		delete(h.subs, town)
	}
}
