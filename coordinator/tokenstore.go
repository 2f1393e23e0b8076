package coordinator

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/coordinator/token"
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
	// Deleted: the town was deleted; only the revocation is kept, so the
	// town's old tokens stay refused. Creating the town again clears it.
	Deleted bool `json:"deleted,omitempty"`
}

// tokenStore is the tokens bucket: each town's token schedule, owner and
// revocation time (townTokens). It is made before the bus starts so that
// the connection authorizer can ask it which tokens are revoked; it
// refuses every question until the bucket is loaded.
type tokenStore struct {
	b atomic.Pointer[kvstore.Bucket[townTokens]]

	// onRevoke, when set, hears each town's newer revocation the watch
	// sees after the load (the cluster's backstop kick, KickLater in
	// bus/clusterkick.go); seen is the newest revocation seen per town.
	onRevoke atomic.Pointer[func(townID string, before time.Time)]
	seenMu   sync.Mutex
	seen     map[string]time.Time
}

// noteRevocation is the tokens bucket's onSet: it calls onRevoke for a
// revocation newer than any seen before for the town, once loaded.
func (r *tokenStore) noteRevocation(townID string, s townTokens) {
	r.seenMu.Lock()
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	newer := s.RevokedBefore.After(r.seen[townID])
	if newer {
		r.seen[townID] = s.RevokedBefore
	}
	r.seenMu.Unlock()
	if f := r.onRevoke.Load(); newer && f != nil && r.b.Load() != nil {
		(*f)(townID, s.RevokedBefore)
	}
}

func newTokenStore() *tokenStore { return &tokenStore{} }

// Revoked implements token.RevocationChecker.
func (r *tokenStore) Revoked(townID string, issuedAt time.Time) (bool, error) {
	b := r.b.Load()
	if b == nil {
		return false, token.ErrNotReady
	}
	s, ok := b.Get(townID)
	return ok && issuedAt.Before(s.RevokedBefore), nil
}

// get returns a town's state (zero but for the id when absent).
func (r *tokenStore) get(townID string) townTokens {
	if b := r.b.Load(); b != nil {
		if s, ok := b.Get(townID); ok {
			return s
		}
	}
	return townTokens{TownID: townID}
}

// snapshot lists every town's state.
func (r *tokenStore) snapshot() []townTokens { return r.b.Load().List(nil) }

// open creates or binds the bucket and loads it.
func (r *tokenStore) open(ctx, runCtx context.Context, js jetstream.JetStream, replicas int, wg *sync.WaitGroup) error {
	b, err := kvstore.Open[townTokens](ctx, runCtx, js, jetstream.KeyValueConfig{
		Bucket:      schemas.BucketTokens,
		Description: "Gastown: each town's token refresh schedule, owner and revocation time (never a token)",
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	}, wg, r.noteRevocation)
	if err != nil {
		return err
	}
	r.b.Store(b)
	return nil
}

// update changes a town's record (its schedule, owner or revocation) with
// compare-and-set, creating it if new.
func (r *tokenStore) update(ctx context.Context, townID string, change func(*townTokens)) (townTokens, error) {
	return r.b.Load().Upsert(ctx, townID, func(s *townTokens) error {
		s.TownID = townID
		change(s)
		return nil
	})
}
