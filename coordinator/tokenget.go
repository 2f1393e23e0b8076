package coordinator

import (
	"context"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// handleTokenGet answers …token.get: a fresh container token for the town,
// valid for the full lifetime. Only a connection holding a (possibly just
// expired, never revoked) token of that town can publish here, so the
// subject's town is the caller's town.
func (c *Coordinator) handleTokenGet(m *nats.Msg) {
	townID, _, err := schemas.ParseTownSubject(m.Subject)
	if err != nil || !c.townReplyOK(m, townID) {
		return
	}
	var req schemas.TokenRequest
	if err := schemas.Decode(m.Data, &req); err != nil {
		_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodeInvalidArgument, "%s", err.Error()))
		return
	}
	if req.TownID != townID {
		_ = bus.RespondRefusal(m, schemas.NewError(schemas.CodePermissionDenied, "townId does not match the subject's town"))
		return
	}
	state := c.tokens.get(townID)
	token, claims, err := c.mintContainer(townID, state.UserID)
	if err != nil {
		c.log.Error("minting container token", KeyTown, townID, KeyErr, err)
		_ = bus.RespondRefusal(m, c.wireError(m.Subject, err))
		return
	}
	heard := c.noContainer.stamp()
	if err := bus.Respond(m, &schemas.TokenRotation{
		TownID: townID, Token: token, IssuedAt: claims.Issued(), ExpiresAt: claims.Expires(), RevokedBefore: state.RevokedBefore,
		HeartbeatIntervalMs: c.cfg.HeartbeatInterval.Milliseconds(),
	}); err != nil {
		c.log.Warn("answering token request", KeyTown, townID, KeyErr, err)
		return
	}
	c.metrics.tokenGot()
	c.idleMu.Lock()
	delete(c.idleUntil, townID)
	c.idleMu.Unlock()
	// The container now holds a full-lifetime token: next refresh is a full
	// interval away. Written only when the schedule is not that far ahead
	// already, so a burst of requests (a flood, or several containers
	// starting) does not fight over the record, nor the revocation that
	// writes it too.
	now := c.now()
	if state.NextRefreshAt.Before(now.Add(c.cfg.RefreshInterval / 2)) {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
		defer cancel()
		if _, err := c.tokens.update(ctx, townID, func(s *townTokens) {
			s.LastIssuedAt, s.NextRefreshAt = claims.Issued(), c.nextRefresh(now)
		}); err != nil {
			c.log.Warn("saving token schedule", KeyTown, townID, KeyErr, err)
		}
	}
	c.containerArrived(townID, heard)
	c.log.Debug("token issued on request", KeyTown, townID, "container", req.ContainerID)
}
