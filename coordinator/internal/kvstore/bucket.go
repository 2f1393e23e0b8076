package kvstore

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is one JetStream KV bucket of JSON values of type T, with an
// in-memory view that a KV watch keeps true. Every write is a
// compare-and-set against the revision read, so two writers can never
// silently overwrite each other.
type Bucket[T any] struct {
	name string
	kv   jetstream.KeyValue

	mu    sync.RWMutex
	items map[string]versioned[T]
	onSet func(key string, v T) // called for every value the watch sees
	// writeErrors counts writes the store failed (metrics).
	writeErrors atomic.Uint64
}

type versioned[T any] struct {
	value    T
	revision uint64
}

// Open creates or binds a bucket and loads it; the watch keeps the
// view true until runCtx is done. ctx bounds the initial load.
func Open[T any](ctx, runCtx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, wg *sync.WaitGroup, onSet func(string, T)) (*Bucket[T], error) {
	kv, err := OpenKV(ctx, js, cfg)
	if err != nil {
		return nil, errors.Wrapf(err, "opening bucket %s", cfg.Bucket)
	}
	b := &Bucket[T]{name: cfg.Bucket, kv: kv, items: map[string]versioned[T]{}, onSet: onSet}
	if err := Watch(ctx, runCtx, js, kv, wg, b.applyEntry, b.keepOnly); err != nil {
		return nil, err
	}
	return b, nil
}

// Watch loads kv through a watch, calling apply for each entry, and
// returns once the bucket's present contents are seen; then it follows
// the bucket until runCtx is done. After the connection comes back (a
// restarted or killed NATS server) it starts a fresh watch at once: the
// old one would notice the lost consumer only after missed heartbeats,
// some 15 s during which writes of other coordinators went unseen. The
// fresh watch replays the newest value of every key, and once it has,
// resync is told which keys it saw, so that a key deleted while the
// connection was down is dropped too. ctx bounds the initial load.
func Watch(ctx, runCtx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, wg *sync.WaitGroup,
	apply func(jetstream.KeyValueEntry), resync func(seen map[string]bool)) error {
	w, err := kv.WatchAll(runCtx)
	if err != nil {
		return errors.Wrapf(err, "watching bucket %s", kv.Bucket())
	}
	for loaded := false; !loaded; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return errors.Wrapf(ctx.Err(), "loading bucket %s", kv.Bucket())
		case e, ok := <-w.Updates():
			if !ok {
				return errors.Newf("watch of bucket %s closed while loading", kv.Bucket())
			}
			if e == nil {
				loaded = true
				continue
			}
			apply(e)
		}
	}
	reconnected := js.Conn().StatusChanged(nats.CONNECTED)
	wg.Go(func() {
		defer js.Conn().RemoveStatusListener(reconnected)
		followKV(runCtx, kv, w, reconnected, apply, resync)
	})
	return nil
}

func followKV(runCtx context.Context, kv jetstream.KeyValue, w jetstream.KeyWatcher, reconnected <-chan nats.Status,
	apply func(jetstream.KeyValueEntry), resync func(map[string]bool)) {
	var replay map[string]bool // keys seen by a fresh watch's replay, until it ends
	for {
		select {
		case <-runCtx.Done():
			_ = w.Stop()
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			switch {
			case e != nil:
				if replay != nil {
					replay[e.Key()] = true
				}
				apply(e)
			case replay != nil:
				resync(replay)
				replay = nil
			}
		case <-reconnected:
			fresh, err := kv.WatchAll(runCtx)
			if err != nil {
				continue // the old watch recovers on its own, later
			}
			_ = w.Stop()
			w, replay = fresh, map[string]bool{}
		}
	}
}

// keepOnly drops the keys a fresh watch's replay did not show: deleted
// while the connection was down.
func (b *Bucket[T]) keepOnly(seen map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.items {
		if !seen[k] {
			delete(b.items, k)
		}
	}
}

// openKVAttempt bounds one attempt to create or update a bucket: on a
// cluster, two coordinators creating the same bucket at once can both be
// left unanswered (measured with nats-server v2.15.2, R3: neither create
// is answered), and trying again, at a random moment, binds the bucket
// made meanwhile. An uncontended R3 create takes well under a second.
const openKVAttempt = 2 * time.Second

// OpenKV creates the bucket, or updates it to cfg, trying again while a
// racing creator or a leader election keeps the answer from coming, until
// ctx is done.
func OpenKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for {
		// Create first, update only a bucket that exists: two racing
		// CreateOrUpdateKeyValue of one R3 bucket were left unanswered,
		// racing creates were not.
		actx, cancel := context.WithTimeout(ctx, openKVAttempt)
		kv, err := js.CreateKeyValue(actx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.UpdateKeyValue(actx, cfg)
		}
		cancel()
		if err == nil || ctx.Err() != nil {
			return kv, err
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) &&
			!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoStreamResponse) && !noPeersYet(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(rand.Int64N(int64(500 * time.Millisecond)))):
		}
	}
}

// errNoPeers is JetStream's "no suitable peers for placement": a new
// bucket's replicas need that many peers the meta leader has heard from.
// Just after the nodes start (make cluster starts the coordinators right
// behind them), or while a node never started comes up, a peer is not
// heard from yet; a cluster short of peers for good fails at the end of
// ctx, with this error.
const errNoPeers = 10005

func noPeersYet(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == errNoPeers
}

func (b *Bucket[T]) applyEntry(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		b.mu.Lock()
		if cur, ok := b.items[e.Key()]; !ok || cur.revision < e.Revision() {
			delete(b.items, e.Key())
		}
		b.mu.Unlock()
		return
	}
	var v T
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return // never crash on a hand-edited value; it is simply not seen
	}
	b.apply(e.Key(), v, e.Revision())
}

// apply records a value seen at a revision, keeping the newest.
func (b *Bucket[T]) apply(key string, v T, rev uint64) {
	b.mu.Lock()
	if cur, ok := b.items[key]; ok && cur.revision >= rev {
		b.mu.Unlock()
		return
	}
	b.items[key] = versioned[T]{value: v, revision: rev}
	b.mu.Unlock()
	if b.onSet != nil {
		b.onSet(key, v)
	}
}

// Get returns the cached value of key.
func (b *Bucket[T]) Get(key string) (T, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	v, ok := b.items[key]
	return v.value, ok
}

// Fetch is Get that, when the key is not in the view, reads the store:
// with several coordinators a key another one has just written may not
// have reached this one's watch yet (a script creating a bead on one and
// slinging it on the next). What it reads joins the view.
func (b *Bucket[T]) Fetch(ctx context.Context, key string) (T, bool, error) {
	if v, ok := b.Get(key); ok {
		return v, true, nil
	}
	return b.Read(ctx, key)
}

// Read reads key from the store, whatever the view holds: for a reader
// that must not act on a value a watch delivery behind (an agent's prime
// right after another coordinator hooked its bead). What it reads joins
// the view; false when the store has no such key.
func (b *Bucket[T]) Read(ctx context.Context, key string) (T, bool, error) {
	var zero T
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, errors.Wrapf(err, "reading %s/%s", b.name, key)
	}
	var v T
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return zero, false, errors.Wrapf(err, "decoding %s/%s", b.name, key)
	}
	b.apply(key, v, e.Revision())
	return v, true, nil
}

// List returns every cached value whose key passes keep (all when nil).
func (b *Bucket[T]) List(keep func(key string, v T) bool) []T {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]T, 0, len(b.items))
	for k, v := range b.items {
		if keep == nil || keep(k, v.value) {
			out = append(out, v.value)
		}
	}
	return out
}

// Create writes key only if it does not exist yet.
func (b *Bucket[T]) Create(ctx context.Context, key string, v T) error {
	data, err := json.Marshal(v)
	if err != nil {
		return errors.Wrapf(err, "encoding %s/%s", b.name, key)
	}
	rev, err := b.kv.Create(ctx, key, data)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		switch r, ok, known := b.landed(ctx, key, data); {
		case ok:
			rev, err = r, nil
		case known && r > 0:
			err = jetstream.ErrKeyExists // another writer's value is there
		}
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return errors.Mark(errors.Newf("%s already exists", key), ErrKeyExists)
	}
	if err != nil {
		b.writeErrors.Add(1)
		return errors.Wrapf(err, "creating %s/%s", b.name, key)
	}
	b.apply(key, v, rev)
	return nil
}

// Put writes key unconditionally: only for values no two writers build
// on (a heartbeat record), never for state read-modify-written.
func (b *Bucket[T]) Put(ctx context.Context, key string, v T) error {
	data, err := json.Marshal(v)
	if err != nil {
		return errors.Wrapf(err, "encoding %s/%s", b.name, key)
	}
	rev, err := b.kv.Put(ctx, key, data)
	if err != nil {
		if r, ok, _ := b.landed(ctx, key, data); ok {
			rev, err = r, nil
		} else {
			rev, err = b.kv.Put(ctx, key, data) // a put may be repeated
		}
	}
	if err != nil {
		b.writeErrors.Add(1)
		return errors.Wrapf(err, "writing %s/%s", b.name, key)
	}
	b.apply(key, v, rev)
	return nil
}

// Update applies change to key's value and writes it back with
// compare-and-set, retrying when another writer got there first. The
// first attempt starts from the view's value (no read of the store when
// the view is current); a refused attempt reads the store.
// change may return an error to abandon the write; it is returned as is.
// A key that does not exist is ErrKeyNotFound.
func (b *Bucket[T]) Update(ctx context.Context, key string, change func(*T) error) (T, error) {
	var zero T
	// unsure is the value of the last write whose outcome is unknown (it
	// timed out while the store elected a leader, and could not be read
	// back): if the key holds it when read again, that write landed.
	var unsure []byte
	for attempt := 0; ; attempt++ {
		// The first attempt builds on the view's value and revision, which
		// spares the write a read of the store: the compare-and-set refuses
		// it if the view was behind, and the attempts after it read the
		// store.
		var v T
		var read uint64
		cached := false
		if attempt == 0 {
			v, read, cached = b.cachedCopy(key)
		}
		if !cached {
			e, err := b.kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return zero, errors.Mark(errors.Newf("%s not found", key), ErrKeyNotFound)
			}
			if err != nil {
				return zero, errors.Wrapf(err, "reading %s/%s", b.name, key)
			}
			v, read = *new(T), e.Revision()
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return zero, errors.Wrapf(err, "decoding %s/%s", b.name, key)
			}
			if unsure != nil && bytes.Equal(e.Value(), unsure) {
				b.apply(key, v, e.Revision()) // our earlier write landed
				return v, nil
			}
		}
		if err := change(&v); err != nil {
			return zero, err
		}
		data, err := json.Marshal(v)
		if err != nil {
			return zero, errors.Wrapf(err, "encoding %s/%s", b.name, key)
		}
		rev, err := b.kv.Update(ctx, key, data, read)
		stale := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
		if err != nil && !stale {
			// Unknown, not lost: read it back.
			switch r, ok, known := b.landed(ctx, key, data); {
			case ok:
				rev, err = r, nil
			case known:
				stale, unsure = true, nil // not ours: build on what is there
			default:
				unsure = data
			}
		}
		if err == nil {
			b.apply(key, v, rev)
			return v, nil
		}
		if (!stale && unsure == nil) || attempt >= 10 || ctx.Err() != nil {
			b.writeErrors.Add(1)
			if stale {
				err = errors.Mark(err, ErrStale)
			}
			if unsure != nil {
				err = errors.WithHint(err, "the store did not answer (a leader election?): the write may or may not have landed")
			}
			return zero, errors.Wrapf(err, "writing %s/%s", b.name, key)
		}
		if stale {
			contended(ctx, attempt)
		}
	}
}

// contended waits a moment after the attempt-th compare-and-set of a key
// lost to another writer: up to attempt+1 ms, at random. Without it a
// writer whose first attempt builds on its view (one round trip) keeps
// beating one that must read the store first (two), and the slower one
// runs out of attempts while the other writes on.
func contended(ctx context.Context, attempt int) {
	t := time.NewTimer(rand.N(time.Duration(attempt+1) * time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// cachedCopy is the view's value of key and its revision, as a copy that
// shares nothing with the view (a change may write into its maps and
// slices): decoded again from its encoding, as a read of the store
// would decode it.
func (b *Bucket[T]) cachedCopy(key string) (T, uint64, bool) {
	var v T
	b.mu.RLock()
	cur, ok := b.items[key]
	b.mu.RUnlock()
	if !ok || cur.revision == 0 {
		return v, 0, false
	}
	data, err := json.Marshal(cur.value)
	if err != nil || json.Unmarshal(data, &v) != nil {
		return *new(T), 0, false
	}
	return v, cur.revision, true
}

// landed reads key back after a write whose outcome is unknown: a write
// that timed out while the store elected a leader may have landed. ok
// says the key holds exactly data (our write, at rev); known says the key
// could be read at all (rev 0: it does not exist). It tries for a few
// seconds while the store does not answer, and never past ctx.
func (b *Bucket[T]) landed(ctx context.Context, key string, data []byte) (rev uint64, ok, known bool) {
	for range landedTries {
		e, err := b.kv.Get(ctx, key)
		switch {
		case err == nil:
			return e.Revision(), bytes.Equal(e.Value(), data), true
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return 0, false, true
		}
		select {
		case <-ctx.Done():
			return 0, false, false
		case <-time.After(landedWait):
		}
	}
	return 0, false, false
}

// How landed waits for a store that does not answer: a killed stream
// leader stalls writes for up to about 9 s. Variables only so that a test
// can make landed give up at once (export_test.go).
var (
	landedTries = 40
	landedWait  = 250 * time.Millisecond
)

// Upsert is Update for a key that may not exist yet: change then starts
// from T's zero value, and the key is created.
func (b *Bucket[T]) Upsert(ctx context.Context, key string, change func(*T) error) (T, error) {
	for attempt := 0; ; attempt++ {
		v, err := b.Update(ctx, key, change)
		if !errors.Is(err, ErrKeyNotFound) {
			return v, err
		}
		var fresh T
		if err := change(&fresh); err != nil {
			return fresh, err
		}
		err = b.Create(ctx, key, fresh)
		if err == nil || !errors.Is(err, ErrKeyExists) || attempt >= 3 {
			return fresh, err
		}
	}
}
