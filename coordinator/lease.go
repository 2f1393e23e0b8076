package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLeaseTTL is how long a town's lease lasts unless renewed.
const DefaultLeaseTTL = 15 * time.Second

// lease says which coordinator runs a town's loops (rotation, liveness,
// patrol) until when.
type lease struct {
	TownID    string    `json:"townId"`
	Holder    string    `json:"holder"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// leases takes and renews the towns' leases with compare-and-set, so that
// of several coordinators exactly one runs each town's loops; the others
// only answer requests.
type leases struct {
	c  *Coordinator
	id string
	b  *bucket[lease]

	mu   sync.Mutex
	held map[string]time.Time // town → until
}

func openLeases(ctx, runCtx context.Context, c *Coordinator, wg *sync.WaitGroup) (*leases, error) {
	b, err := openBucket[lease](ctx, runCtx, c.js, jetstream.KeyValueConfig{
		Bucket: schemas.BucketLeases, Description: "Gastown: which coordinator runs each town's loops",
		History: 1, Replicas: c.cfg.Replicas, Storage: jetstream.FileStorage,
	}, wg, nil)
	if err != nil {
		return nil, err
	}
	return &leases{c: c, id: newRunID(), b: b, held: map[string]time.Time{}}, nil
}

// holds reports whether this coordinator holds town's lease now.
func (l *leases) holds(townID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[townID].After(l.c.now())
}

// renewAll takes or renews the lease of every known town.
func (l *leases) renewAll(ctx context.Context) {
	towns := map[string]bool{}
	for _, t := range l.c.st.towns.List(nil) {
		towns[t.TownID] = true
	}
	for _, t := range l.c.tokens.snapshot() {
		if !t.Deleted {
			towns[t.TownID] = true
		}
	}
	for town := range towns {
		if err := l.renew(ctx, town); err != nil && !errors.Is(err, errNoChange) {
			l.c.log.Debug("lease not renewed", KeyTown, town, KeyErr, err)
		}
	}
}

// renew takes town's lease if it is free or lapsed, or extends ours.
func (l *leases) renew(ctx context.Context, townID string) error {
	now := l.c.now()
	ttl := l.c.cfg.LeaseTTL
	// Renew at a third of the TTL: nothing to do while plenty is left.
	l.mu.Lock()
	until := l.held[townID]
	l.mu.Unlock()
	if until.Sub(now) > 2*ttl/3 {
		return nil
	}
	got, err := l.b.Upsert(ctx, townID, func(x *lease) error {
		if x.Holder != "" && x.Holder != l.id && x.ExpiresAt.After(now) {
			return errNoChange // another coordinator's, still valid
		}
		*x = lease{TownID: townID, Holder: l.id, ExpiresAt: now.Add(ttl)}
		return nil
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		delete(l.held, townID)
		return err
	}
	// Act on it a little less long than it lasts, for clock skew.
	l.held[townID] = got.ExpiresAt.Add(-ttl / 10)
	return nil
}

// releaseAll gives up every lease held, so another coordinator takes over
// at once after a clean shutdown.
func (l *leases) releaseAll(ctx context.Context) {
	l.mu.Lock()
	towns := make([]string, 0, len(l.held))
	for t := range l.held {
		towns = append(towns, t)
	}
	clear(l.held)
	l.mu.Unlock()
	for _, t := range towns {
		_, _ = l.b.Update(ctx, t, func(x *lease) error {
			if x.Holder != l.id {
				return errNoChange
			}
			x.ExpiresAt = time.Time{}
			return nil
		})
	}
}
