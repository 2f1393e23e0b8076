package coordinator

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// rotationWorkers bounds how many towns are refreshed at once.
const rotationWorkers = 64

// rotationTick is how often the loop looks for due towns: often enough for
// the refresh interval, never busier than every 10 ms nor idler than 1 s.
func (c *Coordinator) rotationTick() time.Duration {
	return min(max(c.cfg.RefreshInterval/8, 10*time.Millisecond), time.Second)
}

// idleRecheck is how long a town found with no container is left alone.
func (c *Coordinator) idleRecheck() time.Duration {
	return min(c.cfg.RefreshInterval, time.Minute)
}

// nextRefresh is when a token minted now is next due, with jitter so that
// a thousand towns do not refresh in the same second.
func (c *Coordinator) nextRefresh(now time.Time) time.Time {
	j := time.Duration(0)
	if c.cfg.RefreshJitter > 0 {
		j = rand.N(c.cfg.RefreshJitter)
	}
	return now.Add(c.cfg.RefreshInterval + j)
}

// rotationLoop refreshes every town whose schedule is due until ctx is done.
func (c *Coordinator) rotationLoop(ctx context.Context) {
	every(ctx, c.cfg.Clock, c.rotationTick(), c.refreshDue)
}

// refreshDue refreshes the due towns, a bounded number at a time, and
// returns when all of them are done.
func (c *Coordinator) refreshDue(ctx context.Context) {
	now := c.now()
	var due []string
	c.idleMu.Lock()
	for _, s := range c.tokens.snapshot() {
		if s.Deleted || s.NextRefreshAt.After(now) || c.idleUntil[s.TownID].After(now) || !c.leases.holds(s.TownID) {
			continue
		}
		due = append(due, s.TownID)
	}
	c.idleMu.Unlock()
	forEach(ctx, rotationWorkers, due, func(town string) { c.refresh(ctx, town) })
}

// refresh mints a new token for town and pushes it to its container. The
// schedule advances only when the container acknowledges; on failure the
// town stays due and is tried on the next tick. The container keeps working
// with its current token all the while.
func (c *Coordinator) refresh(ctx context.Context, townID string) schemas.RotateResult {
	res := schemas.RotateResult{TownID: townID}
	t, err := schemas.ForTown(townID)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	state := c.tokens.get(townID)
	token, claims, err := c.mintContainer(townID, state.UserID)
	if err != nil {
		res.Error = "minting failed"
		c.metrics.rotationFailed(rotFailMint)
		c.log.Error("minting container token", KeyTown, townID, KeyErr, err)
		return res
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var ack schemas.Ack
	sent := c.now()
	err = bus.Request(rctx, c.nc, t.Token(), &schemas.TokenRotation{
		TownID: townID, Token: token, IssuedAt: claims.Issued(), ExpiresAt: claims.Expires(), RevokedBefore: state.RevokedBefore,
		HeartbeatIntervalMs: c.cfg.HeartbeatInterval.Milliseconds(),
	}, &ack)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		res.Idle = true
		c.metrics.rotationFailed(rotFailNoContainer)
		c.idleMu.Lock()
		c.idleUntil[townID] = c.now().Add(c.idleRecheck())
		c.idleMu.Unlock()
		c.log.Debug("town has no connected container; not refreshed", KeyTown, townID)
		return res
	case err != nil:
		res.Error = "container did not answer: " + errors.UnwrapAll(err).Error()
		c.metrics.rotationPushed()
		c.metrics.rotationFailed(rotFailNoAnswer)
		c.log.Warn("token refresh not delivered; will retry", KeyTown, townID, KeyErr, err)
		return res
	case !ack.OK:
		res.Error = "container refused the token: " + ack.Err().Error()
		c.metrics.rotationPushed()
		c.metrics.rotationFailed(rotFailRefused)
		c.log.Warn("token refresh refused; will retry", KeyTown, townID, KeyErr, ack.Err())
		return res
	}
	res.Acknowledged, res.ExpiresAt = true, claims.Expires()
	c.metrics.rotationPushed()
	c.metrics.rotationAcked(c.now().Sub(sent))
	c.idleMu.Lock()
	delete(c.idleUntil, townID)
	c.idleMu.Unlock()
	now := c.now()
	next, err := c.tokens.update(ctx, townID, func(s *townTokens) {
		s.LastIssuedAt, s.LastAckAt, s.NextRefreshAt = claims.Issued(), now, c.nextRefresh(now)
	})
	if err != nil {
		c.log.Warn("token delivered but schedule not saved; the town will be refreshed again soon", KeyTown, townID, KeyErr, err)
	} else if c.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations, on every rotation
		c.log.Debug("token refreshed", KeyTown, townID, KeyExpires, claims.Expires(), KeyNext, next.NextRefreshAt)
	}
	c.publishEvent(t, schemas.EventTokenRotated, townID, map[string]any{"expiresAt": claims.Expires()})
	return res
}

// publishEvent tells observers what happened. Never put a token in detail.
func (c *Coordinator) publishEvent(t schemas.Town, kind, subject string, detail map[string]any) {
	b, err := schemas.Encode(&schemas.TownEvent{TownID: t.ID(), Kind: kind, At: c.now().UTC(), Subject: subject, Detail: detail})
	if err == nil {
		err = c.nc.Publish(t.Events(), b)
	}
	if err != nil {
		c.log.Warn("publishing event", KeyTown, t.ID(), "kind", kind, KeyErr, err)
	}
}
