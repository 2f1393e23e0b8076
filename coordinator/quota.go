package coordinator

import (
	"context"
	"sync"

	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
)

// Caps on what a town keeps (Limits.MaxBeads, MaxStoredBytes,
// MaxBeadBytes). What a town holds is counted from the beads bucket's
// view, which its watch keeps true on every coordinator, so the count
// survives restarts and agrees between coordinators. Writes this
// coordinator has admitted but not yet seen stored are reserved, so its
// own concurrent writes cannot overshoot a cap together; two coordinators
// writing for one town at once may overshoot by what each has in flight.

// beadBytes is the text a bead stores: what a town supplies in it.
func beadBytes(b Bead) int64 {
	n := len(b.Title) + len(b.Body) + len(b.Summary) + len(b.Branch) + len(b.PRURL)
	for _, id := range b.Tracks {
		n += len(id)
	}
	return int64(n)
}

// usage is what each town keeps.
type usage struct {
	mu sync.Mutex
	// current reads a bead's newest value from the view (nil until the
	// view is open: while it loads, the value given is the newest).
	current func(key string) (Bead, bool)
	towns   map[string]*townUsage
}

// townUsage is one town's beads and the bytes of their text, and what is
// reserved for writes under way.
type townUsage struct {
	sizes        map[string]int64 // bead key → its bytes
	bytes        int64
	pendingBeads int
	pendingBytes int64
}

func newUsage() *usage { return &usage{towns: map[string]*townUsage{}} }

// attach makes record read the view of beads from now on.
func (u *usage) attach(beads *kvstore.Bucket[Bead]) {
	u.mu.Lock()
	u.current = beads.Get
	u.mu.Unlock()
}

func (u *usage) town(townID string) *townUsage {
	t := u.towns[townID]
	if t == nil {
		t = &townUsage{sizes: map[string]int64{}}
		u.towns[townID] = t
	}
	return t
}

// record counts a bead the view has seen written. It reads the view's
// newest value under u.mu, so two writes of one key recorded in either
// order leave the newest size.
func (u *usage) record(key string, b Bead) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.current != nil {
		if cur, ok := u.current(key); ok {
			b = cur
		}
	}
	t := u.town(b.TownID)
	size := beadBytes(b)
	t.bytes += size - t.sizes[key]
	t.sizes[key] = size
}

// counts is what a town keeps: beads and bytes.
func (u *usage) counts(townID string) (int, int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t := u.towns[townID]
	if t == nil {
		return 0, 0
	}
	return len(t.sizes), t.bytes
}

// reserve admits a write that adds beads beads and grows the town's text
// by bytes (or refuses it with resource_exhausted, without a retry hint:
// waiting does not help), and holds room for it until release is called,
// which must be once the write is stored or failed.
func (u *usage) reserve(townID string, beads int, bytes int64, lim Limits) (release func(), err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t := u.town(townID)
	switch {
	case beads > 0 && len(t.sizes)+t.pendingBeads+beads > lim.MaxBeads:
		return nil, schemas.Exhausted(0, "town %s keeps %d beads, its most", townID, len(t.sizes))
	case bytes > 0 && t.bytes+t.pendingBytes+bytes > lim.MaxStoredBytes:
		return nil, schemas.Exhausted(0, "town %s stores %d bytes of text; %d more would pass its cap of %d", townID, t.bytes, bytes, lim.MaxStoredBytes)
	}
	bytes = max(bytes, 0)
	t.pendingBeads += beads
	t.pendingBytes += bytes
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			t.pendingBeads -= beads
			t.pendingBytes -= bytes
			u.mu.Unlock()
		})
	}, nil
}

// capBead refuses a bead whose text is over the town's MaxBeadBytes.
func capBead(townID string, size int64, lim Limits) error {
	if size > int64(lim.MaxBeadBytes) {
		return schemas.Exhausted(0, "%d bytes of text is over town %s's cap of %d for one bead, mail or note", size, townID, lim.MaxBeadBytes)
	}
	return nil
}

// admitBead checks a new bead against its town's caps and reserves room
// for it; release once it is written or failed.
func (c *Coordinator) admitBead(b Bead) (release func(), err error) {
	size := beadBytes(b)
	if err := capBead(b.TownID, size, c.cfg.Limits); err != nil {
		c.limits.caps.Add(1)
		return nil, err
	}
	release, err = c.st.usage.reserve(b.TownID, 1, size, c.cfg.Limits)
	if err != nil {
		c.limits.caps.Add(1)
	}
	return release, err
}

// admitBeadUpdate checks a bead.update's new title and body against the
// town's caps, and reserves the bytes it adds; release once it is
// written or failed.
func (c *Coordinator) admitBeadUpdate(ctx context.Context, townID string, r schemas.BeadUpdate) (release func(), err error) {
	old, err := c.lookupBead(ctx, townID, r.BeadID)
	if schemas.CodeOf(err) == schemas.CodeNotFound {
		return func() {}, nil // the update finds no bead
	}
	if err != nil {
		return nil, err
	}
	next := old
	if r.Title != "" {
		next.Title = r.Title
	}
	if r.Body != "" {
		next.Body = r.Body
	}
	size := beadBytes(next)
	if err := capBead(townID, size, c.cfg.Limits); err != nil {
		c.limits.caps.Add(1)
		return nil, err
	}
	release, err = c.st.usage.reserve(townID, 0, size-beadBytes(old), c.cfg.Limits)
	if err != nil {
		c.limits.caps.Add(1)
	}
	return release, err
}

// admitNote checks a checkpoint note against the town's MaxBeadBytes.
func (c *Coordinator) admitNote(townID, note string) error {
	if err := capBead(townID, int64(len(note)), c.cfg.Limits); err != nil {
		c.limits.caps.Add(1)
		return err
	}
	return nil
}
