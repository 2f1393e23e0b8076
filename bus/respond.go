package bus

import (
	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// RespondFailed answers m with msg, a reply that says it failed (a
// StartAgentResult that is not ok), with e's Gastown-Error header and, when
// e has one, its retry hint: the one wire error convention of every reply
// (PROTOCOL.md, Messages), for replies richer than an Ack.
func RespondFailed(m *nats.Msg, msg schemas.Message, e *schemas.Error) error {
	body, err := schemas.Encode(msg)
	if err != nil {
		return err
	}
	r := nats.NewMsg(m.Reply)
	setErrorHeaders(r, e)
	r.Data = body
	return errors.Wrap(m.RespondMsg(r), "sending failed reply")
}
