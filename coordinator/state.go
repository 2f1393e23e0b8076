package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// state is every domain bucket, each with the view its watch keeps true.
type state struct {
	towns      *kvstore.Bucket[Town]
	rigs       *kvstore.Bucket[Rig]
	agents     *kvstore.Bucket[Agent]
	beads      *kvstore.Bucket[Bead]
	heartbeats *kvstore.Bucket[heartbeatRecord]
	// usage counts what each town keeps, from the beads bucket's view.
	usage *usage
}

// openState opens and loads every domain bucket. seen receives every
// heartbeat record any coordinator stores.
func openState(ctx, runCtx context.Context, js jetstream.JetStream, replicas int, wg *sync.WaitGroup, seen func(heartbeatRecord)) (*state, error) {
	cfg := func(name, desc string) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: name, Description: desc, History: 1, Replicas: replicas, Storage: jetstream.FileStorage}
	}
	s := state{usage: newUsage()}
	var err error
	if s.towns, err = kvstore.Open[Town](ctx, runCtx, js, cfg(schemas.BucketTowns, "Gastown: towns and their owners"), wg, nil); err != nil {
		return nil, err
	}
	if s.rigs, err = kvstore.Open[Rig](ctx, runCtx, js, cfg(schemas.BucketRigs, "Gastown: rigs (git repositories) of each town"), wg, nil); err != nil {
		return nil, err
	}
	if s.agents, err = kvstore.Open[Agent](ctx, runCtx, js, cfg(schemas.BucketAgents, "Gastown: agents, their runs and hooks"), wg, nil); err != nil {
		return nil, err
	}
	if s.beads, err = kvstore.Open(ctx, runCtx, js, cfg(schemas.BucketBeads, "Gastown: beads (work, mail, reviews, convoys)"), wg, s.usage.record); err != nil {
		return nil, err
	}
	s.usage.attach(s.beads)
	if s.heartbeats, err = kvstore.Open(ctx, runCtx, js, cfg(schemas.BucketHeartbeats, "Gastown: each town's last heartbeat"), wg,
		func(_ string, r heartbeatRecord) { seen(r) }); err != nil {
		return nil, err
	}
	return &s, nil
}

// seenKey names one run of one agent.
type seenKey struct{ town, agent, run string }

// liveness remembers when each agent run was last heard of. It is a cache
// of the heartbeats bucket, kept true by its watch on every coordinator.
type liveness struct {
	mu        sync.Mutex
	lastSeen  map[seenKey]time.Time
	startedAt time.Time
	// restartGrace is added to startedAt: containers need a moment to
	// reconnect to a restarted coordinator before their heartbeats count.
	restartGrace time.Duration
	// heard is, per town, when its container was last heard from.
	heard map[string]time.Time
}

func (l *liveness) record(r heartbeatRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.heard == nil {
		l.heard = map[string]time.Time{}
	}
	if r.ReceivedAt.After(l.heard[r.TownID]) {
		l.heard[r.TownID] = r.ReceivedAt
	}
	for _, a := range r.Agents {
		k := seenKey{r.TownID, a.AgentID, a.RunID}
		if r.ReceivedAt.After(l.lastSeen[k]) {
			l.lastSeen[k] = r.ReceivedAt
		}
	}
}

// seen is when the run was last heard of: its last heartbeat or its
// dispatch, whichever is later.
func (l *liveness) seen(town, agent, run string, dispatchedAt time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maxTime(l.lastSeen[seenKey{town, agent, run}], dispatchedAt)
}

// settled reports whether a town's runs may be declared dead: once its
// container has been heard from since this coordinator started (a run it
// does not list is not running), or once the grace after the start has
// passed (before it, containers may still be reconnecting, so nothing is
// declared dead because the coordinator was down). The grace does not add
// to a run's own silence: a run silent long enough is dead once the town
// is settled.
func (l *liveness) settled(town string, now time.Time) bool {
	if !now.Before(l.startedAt.Add(l.restartGrace)) {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.heard[town].Before(l.startedAt)
}

// forget drops what is known of a run that ended.
func (l *liveness) forget(town, agent, run string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.lastSeen, seenKey{town, agent, run})
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}
