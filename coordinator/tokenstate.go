package coordinator

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// townTokens is one town's token state in the tokens bucket. No token is
// ever stored: only the schedule, the owner and the revocation time.
type townTokens struct {
	TownID string `json:"townId"`
	// UserID is the town owner written into its tokens; empty means the
	// town id.
	UserID string `json:"userId,omitempty"`
	// NextRefreshAt is when the town's token is next due for refresh.
	NextRefreshAt time.Time `json:"nextRefreshAt"`
	// LastIssuedAt is when the last acknowledged token was minted.
	LastIssuedAt time.Time `json:"lastIssuedAt,omitzero"`
	// LastAckAt is when a container last acknowledged a token.
	LastAckAt time.Time `json:"lastAckAt,omitzero"`
	// RevokedBefore: every token of the town issued before it is refused.
	RevokedBefore time.Time `json:"revokedBefore,omitzero"`
}

type tokenEntry struct {
	state    townTokens
	revision uint64
}

// revocations is the tokens bucket and the in-memory view a KV watch keeps
// true. It is created before the bus starts (so the connection authorizer
// can ask it) and refuses every question until its first full load.
type revocations struct {
	mu    sync.RWMutex
	towns map[string]tokenEntry
	ready bool
	kv    jetstream.KeyValue
}

func newRevocations() *revocations {
	return &revocations{towns: map[string]tokenEntry{}}
}

// revoked implements revocationChecker.
func (r *revocations) revoked(townID string, issuedAt time.Time) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.ready {
		return false, ErrNotReady
	}
	e, ok := r.towns[townID]
	return ok && issuedAt.Before(e.state.RevokedBefore), nil
}

// get returns a town's state and its revision (0 when absent).
func (r *revocations) get(townID string) (townTokens, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.towns[townID]
	if !ok {
		return townTokens{TownID: townID}, 0
	}
	return e.state, e.revision
}

// snapshot lists every town's state.
func (r *revocations) snapshot() []townTokens {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]townTokens, 0, len(r.towns))
	for _, e := range r.towns {
		out = append(out, e.state)
	}
	return out
}

// apply records a state seen at a revision, keeping the newest.
func (r *revocations) apply(s townTokens, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.towns[s.TownID]; ok && cur.revision >= rev {
		return
	}
	r.towns[s.TownID] = tokenEntry{state: s, revision: rev}
}

// open creates or binds the bucket and loads it, waiting at most until
// ctx is done; the returned watch keeps the cache true until runCtx is done.
func (r *revocations) open(ctx, runCtx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyWatcher, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      schemas.BucketTokens,
		Description: "Gastown: each town's token refresh schedule, owner and revocation time (never a token)",
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, errors.Wrapf(err, "opening bucket %s", schemas.BucketTokens)
	}
	r.kv = kv
	w, err := kv.WatchAll(runCtx)
	if err != nil {
		return nil, errors.Wrapf(err, "watching bucket %s", schemas.BucketTokens)
	}
	// The watcher sends every current value, then a nil marking the end of
	// the initial load.
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("bucket watch closed while loading")
			}
			if e == nil {
				r.mu.Lock()
				r.ready = true
				r.mu.Unlock()
				return w, nil
			}
			r.applyEntry(e)
		}
	}
}

func (r *revocations) applyEntry(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		r.mu.Lock()
		delete(r.towns, e.Key())
		r.mu.Unlock()
		return
	}
	var s townTokens
	if err := json.Unmarshal(e.Value(), &s); err != nil || s.TownID != e.Key() {
		return // not ours to interpret; never crash on a hand-edited value
	}
	r.apply(s, e.Revision())
}

// follow applies watch updates until the watcher stops.
func (r *revocations) follow(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e != nil {
			r.applyEntry(e)
		}
	}
}

// ErrStale is a compare-and-set write that lost to another writer.
var ErrStale = errors.New("state changed underneath; retry")

// update reads a town's state, applies change, and writes it with
// compare-and-set, retrying a few times when another writer got there first.
func (r *revocations) update(ctx context.Context, townID string, change func(*townTokens)) (townTokens, error) {
	for attempt := 0; ; attempt++ {
		s, rev := r.get(townID)
		if rev == 0 {
			// The cache may lag; read the bucket itself.
			if e, err := r.kv.Get(ctx, townID); err == nil {
				if jerr := json.Unmarshal(e.Value(), &s); jerr == nil {
					rev = e.Revision()
				}
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return townTokens{}, errors.Wrapf(err, "reading token state of town %s", townID)
			}
		}
		s.TownID = townID
		change(&s)
		b, err := json.Marshal(s)
		if err != nil {
			return townTokens{}, errors.Wrap(err, "encoding token state")
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = r.kv.Create(ctx, townID, b)
		} else {
			newRev, err = r.kv.Update(ctx, townID, b, rev)
		}
		if err == nil {
			r.apply(s, newRev)
			return s, nil
		}
		conflict := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
		if !conflict || attempt >= 5 {
			if conflict {
				return townTokens{}, errors.Mark(errors.Wrapf(err, "writing token state of town %s", townID), ErrStale)
			}
			return townTokens{}, errors.Wrapf(err, "writing token state of town %s", townID)
		}
		// Lost a race: refresh from the bucket and try again.
		if e, gerr := r.kv.Get(ctx, townID); gerr == nil {
			var fresh townTokens
			if json.Unmarshal(e.Value(), &fresh) == nil {
				fresh.TownID = townID
				r.apply(fresh, e.Revision())
			}
		}
	}
}
