package coordinator

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// DefaultLeaseTTL is how long a town's lease lasts unless renewed. It must
// outlast a JetStream leader election on a cluster (writes stall up to
// about 9 s when a stream leader is killed): a lease is renewed every
// third of it, so two renewals may fail before it lapses.
const DefaultLeaseTTL = 30 * time.Second

// minLeaseTTL is the shortest lease: the bucket's markers of expired keys
// last at least a second, and JetStream counts in whole seconds.
const minLeaseTTL = 2 * time.Second

// Keys of the leases bucket.
const (
	leaseTownPrefix   = "town."
	leaseMemberPrefix = "member."
	// leaseOpsView is the lease of the ops view's copier on a cluster:
	// one coordinator writes the operators' copies.
	leaseOpsView = "opsview"
)

// leases says which coordinator runs each town's loops (rotation,
// liveness, patrol). Each lease is a key of the leases bucket whose value
// names its holder; the bucket's own TTL (MaxAge) expires a key not
// renewed in time, so expiry is the store's clock alone, never two
// machines' clocks compared. A lease is taken with Create (one winner),
// renewed with Update at the revision held (a lost lease fails the
// compare-and-set), and given up with a Delete at that revision.
//
// A holder acts on a lease only while less than actFor has passed, on its
// own monotonic clock, since it sent its last successful renewal: the
// store received that write no sooner, so the key outlives the holder's
// acting on it. Two holders can still overlap briefly (a renewal that
// landed but whose answer was lost); what the loops do is idempotent or
// fenced by runId.
//
// Leases are spread: each coordinator is a member (a member.<id> key it
// renews with its leases) and holds at most ceil(towns / members) towns,
// giving up the excess when another joins, so no coordinator holds more
// than ceil(towns / coordinators) + 1 while members come and go.
type leases struct {
	kv  jetstream.KeyValue
	id  string
	ttl time.Duration
	// towns lists the towns that need a lease.
	towns func() []string
	log   *slog.Logger

	mu sync.Mutex
	// held is what this coordinator holds, by key.
	held map[string]heldLease
	// others is who holds each key, as the watch last saw it.
	others map[string]string
	// writeErrors counts renewals and takes the store failed (metrics).
	writeErrors atomic.Uint64
}

type heldLease struct {
	rev uint64
	// sentAt is when the last successful renewal (or the take) was sent.
	sentAt time.Time
}

// openLeases opens the leases bucket (TTL = ttl), follows it until runCtx
// is done, and returns once it has seen every key.
func openLeases(ctx, runCtx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration,
	towns func() []string, log *slog.Logger, wg *sync.WaitGroup) (*leases, error) {
	ttl = max(ttl, minLeaseTTL).Round(time.Second)
	cfg := jetstream.KeyValueConfig{
		Bucket: schemas.BucketLeases, Description: "Gastown: which coordinator runs each town's loops",
		History: 1, Replicas: replicas, Storage: jetstream.FileStorage,
		TTL: ttl, LimitMarkerTTL: time.Second,
	}
	kv, err := kvstore.OpenKV(ctx, js, cfg)
	if err != nil && ctx.Err() == nil {
		// A bucket made by an older coordinator cannot always take the
		// new settings; leases are only leases: make it again.
		if derr := js.DeleteKeyValue(ctx, schemas.BucketLeases); derr != nil && !errors.Is(derr, jetstream.ErrBucketNotFound) {
			return nil, errors.Wrapf(err, "opening bucket %s", schemas.BucketLeases)
		}
		if kv, err = js.CreateKeyValue(ctx, cfg); err != nil {
			return nil, errors.Wrapf(err, "opening bucket %s", schemas.BucketLeases)
		}
	}
	l := &leases{kv: kv, id: nuid.Next(), ttl: ttl, towns: towns, log: log,
		held: map[string]heldLease{}, others: map[string]string{}}
	if err := kvstore.Watch(ctx, runCtx, js, kv, wg, l.see, l.keepOnly); err != nil {
		return nil, err
	}
	return l, nil
}

// see records a change of the bucket: a key written is held by the
// holder it names; a key deleted or expired is free.
func (l *leases) see(e jetstream.KeyValueEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(l.others, e.Key())
		if h, ok := l.held[e.Key()]; ok && h.rev < e.Revision() {
			delete(l.held, e.Key()) // it expired under us, or an admin deleted it
		}
		return
	}
	l.others[e.Key()] = holderOf(e.Value())
}

// keepOnly forgets the holders a fresh watch's replay did not show: their
// keys expired or were deleted while the connection was down.
func (l *leases) keepOnly(seen map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.others {
		if !seen[k] {
			delete(l.others, k)
		}
	}
}

// leaseValue is what a lease's key holds: the holder and a nonce, so a
// write whose answer was lost can be recognised when read back.
func (l *leases) leaseValue() []byte { return []byte(l.id + ":" + nuid.Next()) }

func holderOf(v []byte) string {
	h, _, _ := strings.Cut(string(v), ":")
	return h
}

// actFor is how long after its last renewal was sent a lease is acted on.
func (l *leases) actFor() time.Duration { return l.ttl - l.ttl/6 }

// holds reports whether this coordinator may run town's loops now.
func (l *leases) holds(townID string) bool { return l.holdsKey(leaseTownPrefix + townID) }

func (l *leases) holdsKey(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.held[key]
	return ok && time.Since(h.sentAt) < l.actFor()
}

// leaseTakeEvery is how often free towns are looked for: from memory (the
// watch), so a new town's loops start within moments at no cost.
const leaseTakeEvery = 250 * time.Millisecond

// run renews the leases every third of the TTL and takes free ones as
// they appear, until ctx is done; after each pass it calls changed
// (what it held may have changed).
func (l *leases) run(ctx context.Context, changed func()) {
	renew := time.NewTicker(l.ttl / 3)
	defer renew.Stop()
	take := time.NewTicker(leaseTakeEvery)
	defer take.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			l.renewHeld(ctx)
		case <-take.C:
			l.takeFree(ctx)
		}
		changed()
	}
}

// renewAll renews what is held, then takes what is free: at start.
func (l *leases) renewAll(ctx context.Context) {
	l.renewHeld(ctx)
	l.takeFree(ctx)
}

// renewHeld renews this coordinator's membership and every lease it holds.
func (l *leases) renewHeld(ctx context.Context) {
	if _, err := l.kv.Put(ctx, leaseMemberPrefix+l.id, []byte(l.id)); err != nil {
		l.writeErrors.Add(1)
		l.log.Debug("membership not renewed", KeyErr, err)
	}
	// Several at once: one at a time, a coordinator holding hundreds of
	// towns on a loaded machine took longer than a third of a short TTL.
	forEach(ctx, leaseRenewers, l.heldKeys(), func(key string) { l.renew(ctx, key) })
}

// leaseRenewers is how many renewals are in flight at once.
const leaseRenewers = 16

// takeFree takes free towns up to this coordinator's share and gives up
// what is beyond it.
func (l *leases) takeFree(ctx context.Context) {
	towns := l.towns()
	share := l.share(len(towns))
	want := make(map[string]bool, len(towns))
	for _, t := range towns {
		want[leaseTownPrefix+t] = true
	}
	mine := l.heldTowns()
	// A town gone (deleted) needs no lease.
	for _, key := range mine {
		if !want[key] {
			l.release(ctx, key)
		}
	}
	mine = slices.DeleteFunc(mine, func(k string) bool { return !want[k] })
	// Give up the excess: another member has joined.
	for len(mine) > share {
		l.release(ctx, mine[len(mine)-1])
		mine = mine[:len(mine)-1]
	}
	for _, town := range towns {
		if len(mine) >= share {
			break
		}
		key := leaseTownPrefix + town
		if l.free(key) && l.take(ctx, key) {
			mine = append(mine, key)
		}
	}
	// The ops view's copier: any one coordinator.
	if !l.holdsKey(leaseOpsView) && l.free(leaseOpsView) {
		l.take(ctx, leaseOpsView)
	}
}

// share is how many towns this coordinator may hold: ceil(towns / members).
func (l *leases) share(towns int) int {
	l.mu.Lock()
	members := 0
	for k := range l.others {
		if strings.HasPrefix(k, leaseMemberPrefix) {
			members++
		}
	}
	l.mu.Unlock()
	members = max(members, 1)
	return (towns + members - 1) / members
}

func (l *leases) heldKeys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.held))
	for k := range l.held {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (l *leases) heldTowns() []string {
	return slices.DeleteFunc(l.heldKeys(), func(k string) bool { return !strings.HasPrefix(k, leaseTownPrefix) })
}

// free reports whether no one holds key, as far as the watch knows.
func (l *leases) free(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, taken := l.others[key]
	return !taken
}

// take creates key; exactly one of several racing coordinators wins.
func (l *leases) take(ctx context.Context, key string) bool {
	v := l.leaseValue()
	sent := time.Now()
	rev, err := l.kv.Create(ctx, key, v)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = l.readBack(ctx, key, v, err)
	}
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			l.writeErrors.Add(1)
		}
		return false
	}
	l.mu.Lock()
	l.held[key] = heldLease{rev: rev, sentAt: sent}
	l.mu.Unlock()
	l.log.Debug("lease taken", "lease", key)
	return true
}

// renew extends a held lease; one lost (expired, or taken by another) is
// dropped at once.
func (l *leases) renew(ctx context.Context, key string) {
	l.mu.Lock()
	h, ok := l.held[key]
	l.mu.Unlock()
	if !ok {
		return
	}
	v := l.leaseValue()
	sent := time.Now()
	rev, err := l.kv.Update(ctx, key, v, h.rev)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = l.readBack(ctx, key, v, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.held[key] = heldLease{rev: rev, sentAt: sent}
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
		delete(l.held, key)
		l.log.Info("lease lost", "lease", key)
	default:
		// Unknown (a stalled store): keep acting until actFor runs out.
		l.writeErrors.Add(1)
		l.log.Debug("lease not renewed", "lease", key, KeyErr, err)
	}
}

// readBack decides a write whose outcome is unknown (it timed out, say
// during a leader election) from what the key holds now: our value means
// it landed; another value means it did not.
func (l *leases) readBack(ctx context.Context, key string, v []byte, werr error) (uint64, error) {
	e, err := l.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, jetstream.ErrKeyNotFound
	case err != nil:
		return 0, werr // still unknown
	case string(e.Value()) == string(v):
		return e.Revision(), nil
	}
	return 0, jetstream.ErrKeyExists
}

// release gives up one lease, so another coordinator takes it at once.
func (l *leases) release(ctx context.Context, key string) {
	l.mu.Lock()
	h, ok := l.held[key]
	delete(l.held, key)
	l.mu.Unlock()
	if ok {
		_ = l.kv.Delete(ctx, key, jetstream.LastRevision(h.rev))
		l.log.Debug("lease given up", "lease", key)
	}
}

// releaseAll gives up every lease and the membership, after a clean
// shutdown.
func (l *leases) releaseAll(ctx context.Context) {
	for _, key := range l.heldKeys() {
		l.release(ctx, key)
	}
	_ = l.kv.Delete(ctx, leaseMemberPrefix+l.id)
}

// forget deletes a town's lease, whoever holds it (the town is deleted).
func (l *leases) forget(ctx context.Context, townID string) error {
	key := leaseTownPrefix + townID
	l.mu.Lock()
	delete(l.held, key)
	l.mu.Unlock()
	if err := l.kv.Purge(ctx, key); err != nil {
		return errors.Wrapf(err, "deleting %s/%s", schemas.BucketLeases, key)
	}
	return nil
}

// heldCount is how many towns' leases this coordinator acts on now.
func (l *leases) heldCount() int {
	n := 0
	for _, k := range l.heldTowns() {
		if l.holdsKey(k) {
			n++
		}
	}
	return n
}

func (l *leases) Name() string        { return schemas.BucketLeases }
func (l *leases) WriteErrors() uint64 { return l.writeErrors.Load() }
