package coordinator

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
)

// Revocation is final (PROTOCOL.md, Tokens): every connection that used a
// revoked token is closed at once, and no token issued after the
// revocation ever reaches one. Tokens are minted under a town's mint lock
// held for reading; a revocation holds it for writing while it fixes the
// revocation time, saves it and closes the connections. So a token is
// minted either before (its iat is before revokedBefore: it is revoked
// itself) or after every revoked connection is gone. Nothing is pushed:
// the container is restarted with a freshly minted bootstrap token.

// mintLocks are the towns' mint locks, striped by town id.
type mintLocks struct {
	seed  maphash.Seed
	locks [64]sync.RWMutex
}

func newMintLocks() *mintLocks { return &mintLocks{seed: maphash.MakeSeed()} }

func (m *mintLocks) of(townID string) *sync.RWMutex {
	return &m.locks[maphash.String(m.seed, townID)%uint64(len(m.locks))]
}

// mintContainer mints a container token for town under its mint lock.
func (c *Coordinator) mintContainer(townID, userID string) (string, schemas.ContainerClaims, error) {
	l := c.mint.of(townID)
	l.RLock()
	defer l.RUnlock()
	return c.issuer.MintContainer(townID, userID, c.cfg.TokenTTL)
}

// restartHint is what the administrator does after a revocation.
func restartHint(townID string) string {
	return "restart the town's container with a fresh bootstrap token: gastown token mint --town " + townID
}

// adminTokenRevoke makes every token of the town issued up to now stop
// working and closes every connection that used one, before it answers.
func (c *Coordinator) adminTokenRevoke(ctx context.Context, req schemas.TownRequest) (any, error) {
	if _, err := c.requireTown(req.TownID); err != nil {
		return nil, err
	}
	l := c.mint.of(req.TownID)
	l.Lock()
	defer l.Unlock()
	// Tokens carry iat to the millisecond: revoke every one issued up to
	// and including this millisecond, and let it pass before the lock is
	// released, so the next token minted is not revoked.
	before := c.now().Truncate(time.Millisecond).Add(time.Millisecond)
	// Other writers of the record (another coordinator's schedule) may win
	// a compare-and-set: a revocation keeps trying until its deadline.
	var err error
	for {
		_, err = c.tokens.update(ctx, req.TownID, func(s *townTokens) {
			if before.After(s.RevokedBefore) {
				s.RevokedBefore = before
			}
		})
		if !errors.Is(err, kvstore.ErrStale) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		c.log.Error("saving revocation", KeyTown, req.TownID, KeyErr, err)
		return nil, schemas.NewError(schemas.CodeUnavailable, "the revocation could not be saved; nothing changed, try again")
	}
	res := schemas.RevokeResult{TownID: req.TownID, RevokedBefore: before, Closed: -1, Next: restartHint(req.TownID)}
	if c.kicker != nil {
		res.Closed = c.kicker.Kick(req.TownID, before)
	}
	if d := before.Sub(c.now()); d > 0 {
		time.Sleep(d)
	}
	c.metrics.revoked()
	c.log.Info("tokens revoked by admin", KeyTown, req.TownID, "revokedBefore", before, "closed", res.Closed)
	t, _ := schemas.ForTown(req.TownID)
	c.publishEvent(t, schemas.EventTokenRevoked, req.TownID, map[string]any{"revokedBefore": before})
	return res, nil
}
