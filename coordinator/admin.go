package coordinator

import (
	"context"
	"encoding/json"
	"maps"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// validator is an admin request body.
type validator interface{ Validate() error }

// adminMethod decodes a request of type R, runs h, and sends its result or
// error as a Reply. Only the admin identity (and the coordinator) can
// publish on gastown.admin.>.
func adminMethod[R validator](c *Coordinator, h func(ctx context.Context, req R) (any, error)) nats.MsgHandler {
	return func(m *nats.Msg) {
		if !c.adminReplyOK(m) {
			return
		}
		var req R
		if len(m.Data) > schemas.MaxBodySize {
			_ = bus.RespondError(m, schemas.NewError(schemas.CodeInvalidArgument, "body over %d bytes", schemas.MaxBodySize))
			return
		}
		if err := json.Unmarshal(m.Data, &req); err != nil {
			_ = bus.RespondError(m, schemas.NewError(schemas.CodeInvalidArgument, "body is not the JSON object this method takes"))
			return
		}
		if err := req.Validate(); err != nil {
			_ = bus.RespondError(m, schemas.NewError(schemas.CodeInvalidArgument, "%s", err.Error()))
			return
		}
		ctx, cancel := context.WithTimeout(c.runCtx, c.cfg.DispatchTimeout+c.cfg.RequestTimeout) // sling dispatches; Close cancels
		defer cancel()
		res, err := h(ctx, req)
		if err != nil {
			_ = bus.RespondError(m, c.wireError(m.Subject, err))
			return
		}
		if err := bus.RespondResult(m, res); err != nil {
			c.log.Warn("answering admin request", KeySubject, m.Subject, KeyErr, err)
		}
	}
}

// adminHandlers maps each admin method to its handler.
func (c *Coordinator) adminHandlers() map[string]nats.MsgHandler {
	handlers := map[string]nats.MsgHandler{
		schemas.AdminTokenRotate: adminMethod(c, func(ctx context.Context, r schemas.TownRequest) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			c.log.Info("token rotation requested by admin", KeyTown, r.TownID)
			return c.refresh(ctx, r.TownID), nil
		}),
		schemas.AdminTokenRevoke: adminMethod(c, c.adminTokenRevoke),
		schemas.AdminTownCreate: adminMethod(c, func(ctx context.Context, r schemas.TownCreate) (any, error) {
			return c.createTown(ctx, r)
		}),
		schemas.AdminRigAdd: adminMethod(c, func(ctx context.Context, r schemas.RigAdd) (any, error) {
			return c.addRig(ctx, r)
		}),
		schemas.AdminBeadCreate: adminMethod(c, func(ctx context.Context, r schemas.BeadCreate) (any, error) {
			return c.createBead(ctx, r)
		}),
		schemas.AdminSling: adminMethod(c, func(ctx context.Context, r schemas.Sling) (any, error) {
			return c.sling(ctx, r)
		}),
		schemas.AdminConvoy: adminMethod(c, func(ctx context.Context, r schemas.AdminConvoyCreate) (any, error) {
			if _, err := c.requireTown(r.TownID); err != nil {
				return nil, err
			}
			return c.createConvoy(ctx, r.TownID, r.ConvoyCreate)
		}),
		schemas.AdminStatus: adminMethod(c, func(_ context.Context, r schemas.TownRequest) (any, error) {
			return c.townStatus(r.TownID)
		}),
	}
	maps.Copy(handlers, c.adminVerbHandlers())
	return handlers
}
