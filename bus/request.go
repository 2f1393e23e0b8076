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
	if _, ack := reply.(*schemas.Ack); !ack && m.Header.Get(schemas.ErrorHeader) != "" {
		// A refusal: an Ack that is not ok instead of the reply asked for.
		var refusal schemas.Ack
		if err := schemas.Decode(m.Data, &refusal); err == nil && !refusal.OK {
			err := schemas.WithRetryAfter(refusal.Err(), m.Header.Get(schemas.RetryAfterHeader))
			return errors.Wrapf(err, "%s on %s refused", msg.MessageType(), subject)
		}
	}
	if err := schemas.Decode(m.Data, reply); err != nil {
		return errors.Wrapf(err, "reply to %s on %s", msg.MessageType(), subject)
	}
	return nil
}

// RespondRefusal answers m with an Ack that is not ok, carrying e's code
// and message, the Gastown-Error header and, when e has one, its retry
// hint in the Gastown-Retry-After header.
func RespondRefusal(m *nats.Msg, e *schemas.Error) error {
	body, err := schemas.Encode(&schemas.Ack{Code: e.Code, Error: e.Message})
	if err != nil {
		return err
	}
	r := nats.NewMsg(m.Reply)
	setErrorHeaders(r, e)
	r.Data = body
	return errors.Wrap(m.RespondMsg(r), "sending refusal")
}

// setErrorHeaders sets the headers of an error reply.
func setErrorHeaders(r *nats.Msg, e *schemas.Error) {
	r.Header.Set(schemas.ErrorHeader, string(e.Code))
	if e.RetryAfter > 0 {
		r.Header.Set(schemas.RetryAfterHeader, schemas.FormatRetryAfter(e.RetryAfter))
	}
}

// Respond encodes msg and sends it as the reply to m.
func Respond(m *nats.Msg, msg schemas.Message) error {
	body, err := schemas.Encode(msg)
	if err != nil {
		return err
	}
	return errors.Wrap(m.Respond(body), "sending reply")
}

// RespondError sends an error Reply with its Gastown-Error header and,
// when e has a retry hint, its Gastown-Retry-After header.
func RespondError(m *nats.Msg, e *schemas.Error) error {
	r := nats.NewMsg(m.Reply)
	setErrorHeaders(r, e)
	r.Data = schemas.ErrorReply(e)
	return errors.Wrap(m.RespondMsg(r), "sending error reply")
}

// RespondResult sends a result Reply.
func RespondResult(m *nats.Msg, result any) error {
	return schemas.WithResultReply(result, func(b []byte) error {
		return errors.Wrap(m.Respond(b), "sending reply")
	})
}

// Call sends a JSON body to an RPC or admin subject and decodes the Reply's
// result into out (when not nil). An error reply comes back as a
// *schemas.Error, to match with errors.Is, with the retry hint of its
// Gastown-Retry-After header (schemas.RetryAfterOf).
func Call(ctx context.Context, nc *nats.Conn, m *nats.Msg, out any) error {
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return errors.Mark(errors.Wrapf(err, "calling %s", m.Subject), schemas.ErrUnavailable)
		}
		return errors.Wrapf(err, "calling %s", m.Subject)
	}
	err = schemas.DecodeResult(resp.Data, out)
	if err != nil {
		if v := resp.Header.Get(schemas.RetryAfterHeader); v != "" {
			return schemas.WithRetryAfter(err, v)
		}
	}
	return err
}
