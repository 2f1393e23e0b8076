package bus

import (
	"context"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Request sends msg on subject and decodes the reply into reply. The
// request is bounded by ctx; pass a context with a deadline.
func Request(ctx context.Context, nc *nats.Conn, subject string, msg, reply schemas.Message) error {
	body, err := schemas.Encode(msg)
	if err != nil {
		return err
	}
	m, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return errors.Wrapf(err, "request %s on %s", msg.MessageType(), subject)
	}
	if err := schemas.Decode(m.Data, reply); err != nil {
		return errors.Wrapf(err, "reply to %s on %s", msg.MessageType(), subject)
	}
	return nil
}

// Respond encodes msg and sends it as the reply to m.
func Respond(m *nats.Msg, msg schemas.Message) error {
	body, err := schemas.Encode(msg)
	if err != nil {
		return err
	}
	return errors.Wrap(m.Respond(body), "sending reply")
}

// RespondError sends an error Reply with its Gastown-Error header.
func RespondError(m *nats.Msg, e *schemas.Error) error {
	r := nats.NewMsg(m.Reply)
	r.Header.Set(schemas.ErrorHeader, string(e.Code))
	r.Data = schemas.ErrorReply(e)
	return errors.Wrap(m.RespondMsg(r), "sending error reply")
}

// RespondResult sends a result Reply.
func RespondResult(m *nats.Msg, result any) error {
	b, err := schemas.ResultReply(result)
	if err != nil {
		return err
	}
	return errors.Wrap(m.Respond(b), "sending reply")
}

// Call sends a JSON body to an RPC or admin subject and decodes the Reply's
// result into out (when not nil). An error reply comes back as a
// *schemas.Error, to match with errors.Is.
func Call(ctx context.Context, nc *nats.Conn, m *nats.Msg, out any) error {
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return errors.Mark(errors.Wrapf(err, "calling %s", m.Subject), schemas.ErrUnavailable)
		}
		return errors.Wrapf(err, "calling %s", m.Subject)
	}
	return schemas.DecodeResult(resp.Data, out)
}
