package bus

import (
	"bytes"
	"context"
	"hash/maphash"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The ops view: the server copies every state bucket (but the leases) into
// a bucket of the same name in the ops account, where the operator reads it
// with the nats CLI. The copy is made by watching the state bucket on the
// state account and writing what is seen, so no JetStream path joins the
// two accounts: a mirror would need the ops account to reach the state
// account's consumer API, and JetStream answers there on the requester's
// behalf (a consumer-create answer is itself a valid consumer-create
// request). The operator can still make its own JetStream write into its
// copy (a reply aimed at $KV.…); the copier notices (the copy's stream has
// messages it did not write) and restores the copy from the state.

// opsBuckets are the buckets copied. The leases change every few seconds
// per town and say only which coordinator runs a town's loops: not worth
// doubling those writes.
var opsBuckets = slices.DeleteFunc(slices.Clone(schemas.StateBuckets), func(b string) bool { return b == schemas.BucketLeases })

// opsCopyCheck is how often a copy is checked for messages the copier did
// not write.
const opsCopyCheck = 5 * time.Second

// opsCopyRetry is the first wait before a copy that could not be made (or
// whose store failed) is made again; it doubles up to opsCopyCheck.
const opsCopyRetry = 100 * time.Millisecond

// opsCopyList bounds the wait for the next key of a copy's listing. A
// copy deleted while it is listed leaves the listing waiting for good:
// its ordered consumer cannot be made again on a stream that is gone, and
// nats.go's key lister ends only with its context. The copier waited with
// it, and never made the copy again.
const opsCopyList = opsCopyCheck

// opsCopyMade, when set (tests), is called between making a copy's
// bucket and limiting its stream.
var opsCopyMade atomic.Pointer[func(bucket string)]

// opsView is the running copier, owned by the Server.
type opsView struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	state, ops *nats.Conn
}

// StartOpsView starts copying each state bucket that exists into the ops
// account, and returns once the copies are set up (their first contents
// follow within moments). The coordinator calls it once its buckets exist;
// Close stops it. Calling it again restarts the copiers, so buckets made
// since are copied too.
func (s *Server) StartOpsView(ctx context.Context) error {
	s.stopOpsView()
	state, err := s.connectAs(stateUser, "gastown-ops-copy-source")
	if err != nil {
		return err
	}
	ops, err := s.connectAs(opsCopyUser, "gastown-ops-copy")
	if err != nil {
		s.closeGone(state)
		return err
	}
	v := &opsView{state: state, ops: ops}
	runCtx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	if err := v.start(ctx, runCtx, s.log); err != nil {
		cancel()
		v.wg.Wait()
		s.closeGone(state)
		s.closeGone(ops)
		return errors.Wrap(err, "copying the state for operators")
	}
	s.opsMu.Lock()
	s.ops = v
	s.opsMu.Unlock()
	return nil
}

// stopOpsView stops the copiers, if running, and waits for them.
func (s *Server) stopOpsView() {
	s.opsMu.Lock()
	v := s.ops
	s.ops = nil
	s.opsMu.Unlock()
	if v == nil {
		return
	}
	v.cancel()
	v.wg.Wait()
	s.closeGone(v.state)
	s.closeGone(v.ops)
}

func (v *opsView) start(ctx, runCtx context.Context, log *slog.Logger) error {
	src, err := jetstream.New(v.state)
	if err != nil {
		return errors.Wrap(err, "opening the state account's JetStream")
	}
	dst, err := jetstream.New(v.ops)
	if err != nil {
		return errors.Wrap(err, "opening the ops account's JetStream")
	}
	for _, b := range opsBuckets {
		from, err := src.KeyValue(ctx, b)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return errors.Wrapf(err, "opening %s", b)
		}
		to, stream, err := opsCopyOf(ctx, dst, from)
		if err != nil {
			return err
		}
		w, err := from.WatchAll(runCtx)
		if err != nil {
			return errors.Wrapf(err, "watching %s", b)
		}
		deleted := make(chan struct{}, 1)
		sub, err := v.ops.Subscribe("$JS.EVENT.ADVISORY.STREAM.DELETED.KV_"+b, func(*nats.Msg) {
			select {
			case deleted <- struct{}{}:
			default:
			}
		})
		if err != nil {
			_ = w.Stop()
			return errors.Wrapf(err, "watching the ops copy of %s", b)
		}
		c := &copier{bucket: b, src: from, dst: to, js: dst, stream: stream, deleted: deleted, seen: map[string]uint64{}, log: log, seed: maphash.MakeSeed()}
		v.wg.Go(func() {
			defer func() { _ = sub.Unsubscribe() }()
			c.run(runCtx, w)
		})
	}
	return nil
}

// opsCopyOf makes (or opens) the ops account's bucket for from: the same
// name and history, purges denied, consumers that vanish after
// opsConsumerInactive.
func opsCopyOf(ctx context.Context, dst jetstream.JetStream, from jetstream.KeyValue) (jetstream.KeyValue, jetstream.Stream, error) {
	to, err := dst.KeyValue(ctx, from.Bucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		st, serr := from.Status(ctx)
		if serr != nil {
			return nil, nil, errors.Wrapf(serr, "reading %s", from.Bucket())
		}
		to, err = dst.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      from.Bucket(),
			Description: "copy of the state bucket, for operators; written by the server only",
			History:     uint8(st.History()),
			TTL:         st.TTL(),
			Storage:     jetstream.FileStorage,
			Replicas:    replicasOf(st),
		})
		if f := opsCopyMade.Load(); err == nil && f != nil {
			(*f)(from.Bucket())
		}
	}
	if err != nil {
		return nil, nil, errors.Wrapf(err, "making the ops copy of %s", from.Bucket())
	}
	stream, err := dst.Stream(ctx, "KV_"+from.Bucket())
	if err != nil {
		return nil, nil, errors.Wrapf(err, "opening the ops copy of %s", from.Bucket())
	}
	// JetStream answers on whatever reply subject the operator names, and
	// some answers are empty (a direct get's 404, the end of a batch): an
	// empty body aimed at the ops account's own API purges or deletes a
	// stream. Purges are denied here; a deleted copy is made again at
	// once (the copier watches for its deletion advisory), or at the next
	// check (opsCopyCheck) if the server loses the advisory: nats-server
	// queues it on the stream's loop and stops the loop right after, and
	// the loop may stop first.
	if cfg := stream.CachedInfo().Config; !cfg.DenyPurge || cfg.AllowRollup || cfg.ConsumerLimits.InactiveThreshold != opsConsumerInactive {
		cfg.DenyPurge, cfg.AllowRollup = true, false // the copier deletes with markers, never rolls up
		cfg.ConsumerLimits.InactiveThreshold = opsConsumerInactive
		if stream, err = dst.UpdateStream(ctx, cfg); err != nil {
			return nil, nil, errors.Wrapf(err, "limiting the ops copy of %s", from.Bucket())
		}
	}
	return to, stream, nil
}

// copier keeps one ops copy true. Only its goroutine touches its fields.
type copier struct {
	bucket   string
	src, dst jetstream.KeyValue
	js       jetstream.JetStream // the ops account's
	stream   jetstream.Stream
	// deleted is told when the copy's stream is deleted.
	deleted <-chan struct{}
	log     *slog.Logger
	seed    maphash.Seed
	// seen is a hash of each live key's value in the state.
	seen map[string]uint64
	// expect is the copy's last sequence: every write of the copier adds
	// exactly one message (a value or a delete marker), so a copy whose
	// stream has another last sequence was written by someone else.
	expect uint64
	known  bool // expect is known
	ready  bool
	// broken is set when the server refused a write to the copy or a
	// change of its stream (an answer, not a lost one): its store is
	// unusable, so the copy is deleted and made again. nats-server sends
	// a stream's deletion advisory before it moves the stream's files
	// away, so a copy made again at once can lose its files to the old
	// copy's deletion.
	broken bool
	// retry fires when a copy that could not be made (or is broken) is
	// to be made again; retryWait is the next wait.
	retry     <-chan time.Time
	retryWait time.Duration
}

func (c *copier) run(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	t := time.NewTicker(opsCopyCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil { // the state's present contents are all seen
				_ = c.restore(ctx, false)
				c.ready = true
				continue
			}
			c.apply(ctx, e)
		case <-c.deleted:
			c.remake(ctx)
		case <-c.retry:
			c.retry = nil
			c.remake(ctx)
		case <-t.C:
			if c.ready && c.retry == nil {
				c.check(ctx)
			}
		}
	}
}

// apply copies one change of the state. Before the copy is ready (the
// present contents, after a restart) it writes only what differs, so a
// restart does not rewrite every key.
func (c *copier) apply(ctx context.Context, e jetstream.KeyValueEntry) {
	put := e.Operation() == jetstream.KeyValuePut
	if put {
		c.seen[e.Key()] = maphash.Bytes(c.seed, e.Value())
	} else { // deleted or purged
		delete(c.seen, e.Key())
	}
	if c.ready && c.retry != nil {
		return // the copy is made again soon, and filled from seen (a broken store may not even answer)
	}
	var err error
	switch {
	case put:
		if !c.ready && c.holds(ctx, e.Key(), e.Value()) {
			return
		}
		_, err = c.dst.Put(ctx, e.Key(), e.Value())
	default:
		if !c.ready && c.holds(ctx, e.Key(), nil) {
			return
		}
		err = c.dst.Delete(ctx, e.Key())
	}
	if err != nil {
		c.log.Warn("copying state for operators", "bucket", c.bucket, KeyErr, err)
		c.known = false // re-read at the next check
		c.failed(err)
		return
	}
	c.expect++
}

// failed marks the copy broken when err is the server's refusal, and has
// it made again soon.
func (c *copier) failed(err error) {
	var refused *jetstream.APIError
	if !errors.As(err, &refused) {
		return // a lost answer: the next check reads the copy again
	}
	c.broken = true
	c.later()
}

// later has the copy made again after the next wait.
func (c *copier) later() {
	if c.retry != nil {
		return
	}
	c.retryWait = min(max(2*c.retryWait, opsCopyRetry), opsCopyCheck)
	c.retry = time.After(c.retryWait)
}

// holds reports whether the copy already has value for key (nil: no key).
func (c *copier) holds(ctx context.Context, key string, value []byte) bool {
	e, err := c.dst.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return value == nil
	}
	return err == nil && value != nil && bytes.Equal(e.Value(), value)
}

// remake makes the copy again after its stream was deleted (or its store
// failed: it is deleted first), and fills it.
func (c *copier) remake(ctx context.Context) {
	if c.broken {
		// The server answers a deletion once the store's files are moved
		// away, so the copy made next gets files of its own.
		if err := c.js.DeleteStream(ctx, "KV_"+c.bucket); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			c.log.Warn("deleting the operators' broken copy", "bucket", c.bucket, KeyErr, err)
			c.later()
			return
		}
		c.broken = false
	}
	to, stream, err := opsCopyOf(ctx, c.js, c.src)
	if err != nil {
		c.log.Warn("making the operators' copy again", "bucket", c.bucket, KeyErr, err)
		c.known = false
		c.later()
		c.failed(err)
		return
	}
	c.dst, c.stream = to, stream
	n := 0
	if c.ready {
		n = c.restore(ctx, true)
	}
	if c.broken {
		c.log.Warn("the operators' copy of a state bucket failed as it was made; making it again", "bucket", c.bucket)
		return
	}
	c.retryWait = 0
	c.log.Warn("the operators' copy of a state bucket was made again", "bucket", c.bucket, "keys", n)
}

// check restores the copy when it has messages the copier did not write,
// and makes it again if it is gone.
func (c *copier) check(ctx context.Context) {
	info, err := c.stream.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		c.remake(ctx)
		return
	}
	if err != nil {
		return
	}
	if last := info.State.LastSeq; !c.known {
		c.expect, c.known = last, true
	} else if last != c.expect {
		if n := c.restore(ctx, true); n > 0 {
			c.log.Warn("the operators' copy of a state bucket held writes not made by the server; restored", "bucket", c.bucket, "count", n)
		}
	}
}

// restore makes the copy hold exactly the state: keys the state does not
// have are deleted, and (when full) every value is compared and rewritten
// where it differs.
func (c *copier) restore(ctx context.Context, full bool) (fixed int) {
	list, cancel := context.WithCancel(ctx)
	defer cancel()
	keys, err := c.dst.ListKeys(list)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		c.log.Warn("checking the operators' copy", "bucket", c.bucket, KeyErr, err)
		return 0
	}
	if keys != nil {
		stalled := false
		for k := range listed(keys, &stalled) {
			want, ok := c.seen[k]
			if !ok {
				if err := c.dst.Delete(ctx, k); err != nil {
					c.failed(err)
				} else {
					fixed++
				}
				continue
			}
			if !full {
				continue
			}
			got, err := c.dst.Get(ctx, k)
			if err == nil && maphash.Bytes(c.seed, got.Value()) == want {
				continue
			}
			if e, err := c.src.Get(ctx, k); err == nil {
				if _, err := c.dst.Put(ctx, k, e.Value()); err != nil {
					c.failed(err)
				} else {
					fixed++
				}
			}
		}
		if stalled {
			// The copy deleted meanwhile, say: what was expected of the
			// copy still stands, so the next check looks again, and
			// makes the copy again if it is gone.
			c.log.Warn("checking the operators' copy: its listing stalled", "bucket", c.bucket, "waited", opsCopyList)
			return fixed
		}
	}
	if full {
		for k := range c.seen { // keys the operator deleted from its copy
			if _, err := c.dst.Get(ctx, k); errors.Is(err, jetstream.ErrKeyNotFound) {
				if e, err := c.src.Get(ctx, k); err == nil {
					if _, err := c.dst.Put(ctx, k, e.Value()); err != nil {
						c.failed(err)
					} else {
						fixed++
					}
				}
			}
		}
	}
	c.known = false
	if info, err := c.stream.Info(ctx); err == nil {
		c.expect, c.known = info.State.LastSeq, true
	}
	return fixed
}

// listed is the lister's keys until it ends, or until no key came for
// opsCopyList, which sets *stalled.
func listed(keys jetstream.KeyLister, stalled *bool) iter.Seq[string] {
	return func(yield func(string) bool) {
		t := time.NewTimer(opsCopyList)
		defer t.Stop()
		for {
			select {
			case k, ok := <-keys.Keys():
				if !ok || !yield(k) {
					return
				}
				t.Reset(opsCopyList)
			case <-t.C:
				*stalled = true
				return
			}
		}
	}
}

// replicasOf is a bucket's replica count: a copy is as durable as its
// state bucket (3 on a cluster).
func replicasOf(st jetstream.KeyValueStatus) int {
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok && s.StreamInfo() != nil {
		return max(s.StreamInfo().Config.Replicas, 1)
	}
	return 1
}

// OpsCopy is the ops view's copier on connections the caller owns: on a
// cluster, the coordinator holding the ops view's lease runs it with its
// state and ops-copy keys (the embedded server runs its own, StartOpsView).
type OpsCopy struct{ v *opsView }

// StartOpsCopy copies each state bucket that exists, read on state (the
// state account), into the ops account, written on ops, until Close. It
// does not close the connections.
func StartOpsCopy(ctx context.Context, state, ops *nats.Conn, log *slog.Logger) (*OpsCopy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &opsView{state: state, ops: ops}
	runCtx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	if err := v.start(ctx, runCtx, log); err != nil {
		cancel()
		v.wg.Wait()
		return nil, errors.Wrap(err, "copying the state for operators")
	}
	return &OpsCopy{v: v}, nil
}

// Close stops the copiers and waits for them. Safe to call twice.
func (o *OpsCopy) Close() {
	o.v.cancel()
	o.v.wg.Wait()
}
