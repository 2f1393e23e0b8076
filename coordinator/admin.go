package coordinator

import (
	"context"
	"encoding/json"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// adminHandler decodes a TownRequest, runs h and sends its result or error
// as a Reply. Only the admin identity (and the coordinator) can publish on
// gastown.admin.>.
func (c *Coordinator) adminHandler(h func(ctx context.Context, req schemas.TownRequest) (any, *schemas.Error)) nats.MsgHandler {
	return func(m *nats.Msg) {
		var req schemas.TownRequest
		if len(m.Data) > schemas.MaxBodySize {
			_ = bus.RespondError(m, schemas.NewError(schemas.CodeInvalidArgument, "body over %d bytes", schemas.MaxBodySize))
			return
		}
		if err := json.Unmarshal(m.Data, &req); err != nil {
			_ = bus.RespondError(m, schemas.NewError(schemas.CodeInvalidArgument, "body is not a JSON object with townId"))
			return
		}
		if err := req.Validate(); err != nil {
			_ = bus.RespondError(m, schemas.NewError(schemas.CodeInvalidArgument, "%s", err.Error()))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*c.cfg.RequestTimeout)
		defer cancel()
		res, e := h(ctx, req)
		if e != nil {
			_ = bus.RespondError(m, e)
			return
		}
		if err := bus.RespondResult(m, res); err != nil {
			c.log.Warn("answering admin request", KeySubject, m.Subject, KeyErr, err)
		}
	}
}

// adminTokenRotate refreshes a town's token now, bypassing the schedule.
func (c *Coordinator) adminTokenRotate(ctx context.Context, req schemas.TownRequest) (any, *schemas.Error) {
	c.log.Info("token rotation requested by admin", KeyTown, req.TownID)
	return c.refresh(ctx, req.TownID), nil
}

// adminTokenRevoke makes every token of the town issued before now stop
// working, gives its container a fresh one, and closes connections still
// using a revoked token.
func (c *Coordinator) adminTokenRevoke(ctx context.Context, req schemas.TownRequest) (any, *schemas.Error) {
	before := c.now().Truncate(1e6) // the claims' millisecond precision
	if _, err := c.tokens.update(ctx, req.TownID, func(s *townTokens) {
		if before.After(s.RevokedBefore) {
			s.RevokedBefore = before
		}
	}); err != nil {
		c.log.Error("saving revocation", KeyTown, req.TownID, KeyErr, err)
		return nil, schemas.NewError(schemas.CodeUnavailable, "the revocation could not be saved; nothing changed, try again")
	}
	c.log.Info("tokens revoked by admin", KeyTown, req.TownID, "revokedBefore", before)
	t, _ := schemas.ForTown(req.TownID)
	c.publishEvent(t, schemas.EventTokenRevoked, req.TownID, map[string]any{"revokedBefore": before})
	res := schemas.RevokeResult{TownID: req.TownID, RevokedBefore: before}
	res.Rotation = c.refresh(ctx, req.TownID)
	if c.kicker != nil {
		res.Disconnected = c.kicker.Kick(req.TownID, before)
	}
	return res, nil
}
