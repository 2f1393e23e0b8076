package coordinator

import (
	"sync/atomic"
	"time"

	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// The reply rule (PROTOCOL.md): NATS checks no request's reply subject
// against its sender's permissions, and the coordinator may publish where
// a container may not. So a request is answered, and acted on, only when
// its reply subject is the requester's own inbox: a town's for the town's
// subjects, the administrator's for gastown.admin.>. Anything else is
// dropped without effect, counted, and logged at most once per
// misdirectedLogEvery.

// misdirectedLogEvery is the least time between two log lines about
// dropped requests; the lines in between are counted in the next one.
const misdirectedLogEvery = 10 * time.Second

// misdirected counts requests dropped by the reply rule.
type misdirected struct {
	total     atomic.Int64
	unlogged  atomic.Int64
	lastLogNs atomic.Int64
}

// townReplyOK reports whether m, on a subject of townID, may be answered.
func (c *Coordinator) townReplyOK(m *nats.Msg, townID string) bool {
	if schemas.ReplyOfTown(townID, m.Reply) {
		return true
	}
	c.dropMisdirected(m)
	return false
}

// adminReplyOK reports whether admin request m may be answered.
func (c *Coordinator) adminReplyOK(m *nats.Msg) bool {
	if schemas.IsAdminReply(m.Reply) {
		return true
	}
	c.dropMisdirected(m)
	return false
}

func (c *Coordinator) dropMisdirected(m *nats.Msg) {
	c.misdirected.total.Add(1)
	n := c.misdirected.unlogged.Add(1)
	now := c.now().UnixNano()
	last := c.misdirected.lastLogNs.Load()
	if now-last < int64(misdirectedLogEvery) || !c.misdirected.lastLogNs.CompareAndSwap(last, now) {
		return
	}
	c.misdirected.unlogged.Add(-n)
	// The reply subject is the attacker's choice: log its length, never
	// its text (it could be anything, a token included).
	c.log.Warn("requests dropped: their reply subject is not the requester's own inbox",
		KeySubject, m.Subject, "replyLen", len(m.Reply), KeyCount, n)
}

// Misdirected is how many requests the reply rule has dropped.
func (c *Coordinator) Misdirected() int64 { return c.misdirected.total.Load() }
