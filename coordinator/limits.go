package coordinator

import (
	"time"

	"github.com/cockroachdb/errors"
)

// Default limits per town (PROTOCOL.md, "Towns are isolated in load too").
const (
	// DefaultRPCRate is the tool calls per second a town may make, every
	// method counted: far above what agents paced by a model make, well
	// under what the coordinator's one RPC subscription answers.
	DefaultRPCRate = 1000
	// DefaultWriteRate is the calls per second a town may make of the
	// methods that run on their own goroutine (they write state, wait or
	// scan). Each write is a JetStream round trip; at this rate one town
	// can never build a backlog that delays another town's writes.
	DefaultWriteRate = 50
	// DefaultWriteInFlight is how many of a town's such calls may run at
	// once: a sixteenth of DefaultHandlers, so one town never holds more
	// than its share of the pool.
	DefaultWriteInFlight = 16
	// DefaultHandlers is the size of the pool every spawned handler (tool
	// calls, token.get, heartbeats, admin requests) runs in.
	DefaultHandlers = 256
	// DefaultTokenGetRate is the token.get requests per second a town may
	// make: a container needs a token when it starts, at half its
	// connection's life and after a revocation.
	DefaultTokenGetRate = 1
	// DefaultTokenGetBurst is how many token.get requests a town may make
	// at once.
	DefaultTokenGetBurst = 10
	// DefaultHeartbeatsPerInterval is the heartbeats per heartbeat
	// interval a town may send, and at least DefaultMinHeartbeatRate a
	// second: its container sends one, but uses its own interval until it
	// hears the coordinator's, and a dropped heartbeat loses the exits it
	// carries (the run is then found dead by missed heartbeats), so the
	// margin is wide; a flood is still cut by orders of magnitude.
	DefaultHeartbeatsPerInterval = 20
	// DefaultMinHeartbeatRate is the least default heartbeat rate, a
	// second.
	DefaultMinHeartbeatRate = 2
	// DefaultHeartbeatBurst is how many heartbeats a town may send at once.
	DefaultHeartbeatBurst = 40
	// DefaultMaxBeads is how many beads (of any type and status: closed
	// ones stay stored) a town may keep.
	DefaultMaxBeads = 10_000
	// DefaultMaxStoredBytes is how many bytes of text (titles, bodies,
	// summaries, branches, links, tracked ids) a town's beads may hold in
	// all.
	DefaultMaxStoredBytes = 64 << 20
	// DefaultMaxBeadBytes is the most text one bead, mail or checkpoint
	// note may carry.
	DefaultMaxBeadBytes = 64 << 10
	// DefaultMaxUnknownTowns is how many towns that do not exist (no town
	// record) get limiter state of their own; the rest share one.
	DefaultMaxUnknownTowns = 1024
	// DefaultForgetAfter is how long a town must be quiet before its
	// limiter state is dropped.
	DefaultForgetAfter = time.Minute
)

// Limits bounds what each town may do and keep, so that one town's flood
// is its own problem. A town over a rate or a cap gets resource_exhausted;
// over a rate, with a retry hint (the Gastown-Retry-After header). Zero
// fields get the defaults above.
type Limits struct {
	// RPCRate is tool calls per second per town, every method counted
	// (DefaultRPCRate); RPCBurst is how many may come at once (zero: twice
	// the rate).
	RPCRate  float64
	RPCBurst int
	// WriteRate is calls per second per town of the methods not answered
	// inline, i.e. those that write state, wait or scan
	// (DefaultWriteRate); WriteBurst is how many may come at once (zero:
	// twice the rate).
	WriteRate  float64
	WriteBurst int
	// WriteInFlight is how many such calls of one town may run at once
	// (DefaultWriteInFlight). A call over it, or one that finds the
	// Handlers pool full, is refused at once with a retry hint of one
	// WriteRate interval (at least 10 ms): the subscription never waits.
	WriteInFlight int
	// Handlers is the size of the pool every spawned handler runs in
	// (DefaultHandlers).
	Handlers int
	// TokenGetRate is token.get requests per second per town
	// (DefaultTokenGetRate); TokenGetBurst how many at once
	// (DefaultTokenGetBurst).
	TokenGetRate  float64
	TokenGetBurst int
	// HeartbeatRate is heartbeats per second per town (zero:
	// DefaultHeartbeatsPerInterval per HeartbeatInterval, at least
	// DefaultMinHeartbeatRate); HeartbeatBurst
	// how many at once (DefaultHeartbeatBurst). Excess heartbeats are
	// dropped and counted (LoadStats); a heartbeat has no reply.
	HeartbeatRate  float64
	HeartbeatBurst int
	// MaxBeads is how many beads a town may keep, open and closed alike:
	// closed beads stay stored, and every coordinator holds them in memory
	// (DefaultMaxBeads). Beads made by the admin and by patrol count too.
	MaxBeads int
	// MaxStoredBytes bounds the text of all of a town's beads together
	// (DefaultMaxStoredBytes).
	MaxStoredBytes int64
	// MaxBeadBytes bounds the text of one bead, mail or checkpoint note
	// (DefaultMaxBeadBytes), well under the bus's 1 MiB body limit. Over
	// it is resource_exhausted too: it is this town's cap, not the wire's.
	MaxBeadBytes int
	// MaxUnknownTowns is how many towns with no town record get limiter
	// state of their own; the others share one (DefaultMaxUnknownTowns).
	MaxUnknownTowns int
	// ForgetAfter is how long a town must be quiet (nothing in flight, its
	// buckets full again) before its limiter state is dropped
	// (DefaultForgetAfter).
	ForgetAfter time.Duration
}

// withDefaults fills zero fields and checks the result. heartbeat is the
// configured heartbeat interval.
func (l Limits) withDefaults(heartbeat time.Duration) (Limits, error) {
	rate := func(r *float64, def float64) {
		if *r == 0 {
			*r = def
		}
	}
	burst := func(b *int, r float64) {
		if *b == 0 {
			*b = max(1, int(2*r))
		}
	}
	count := func(n *int, def int) {
		if *n == 0 {
			*n = def
		}
	}
	rate(&l.RPCRate, DefaultRPCRate)
	burst(&l.RPCBurst, l.RPCRate)
	rate(&l.WriteRate, DefaultWriteRate)
	burst(&l.WriteBurst, l.WriteRate)
	count(&l.WriteInFlight, DefaultWriteInFlight)
	count(&l.Handlers, DefaultHandlers)
	rate(&l.TokenGetRate, DefaultTokenGetRate)
	count(&l.TokenGetBurst, DefaultTokenGetBurst)
	if l.HeartbeatRate == 0 && heartbeat > 0 {
		l.HeartbeatRate = max(DefaultMinHeartbeatRate, DefaultHeartbeatsPerInterval/heartbeat.Seconds())
	}
	count(&l.HeartbeatBurst, DefaultHeartbeatBurst)
	count(&l.MaxBeads, DefaultMaxBeads)
	if l.MaxStoredBytes == 0 {
		l.MaxStoredBytes = DefaultMaxStoredBytes
	}
	count(&l.MaxBeadBytes, DefaultMaxBeadBytes)
	count(&l.MaxUnknownTowns, DefaultMaxUnknownTowns)
	if l.ForgetAfter == 0 {
		l.ForgetAfter = DefaultForgetAfter
	}
	switch {
	case l.RPCRate < 0 || l.WriteRate < 0 || l.TokenGetRate < 0 || l.HeartbeatRate <= 0:
		return l, errors.New("limits: rates must be positive")
	case l.RPCBurst < 1 || l.WriteBurst < 1 || l.TokenGetBurst < 1 || l.HeartbeatBurst < 1:
		return l, errors.New("limits: bursts must be at least 1")
	case l.WriteInFlight < 1 || l.Handlers < 1 || l.WriteInFlight > l.Handlers:
		return l, errors.Newf("limits: a town's calls in flight (%d) must be 1 to the handler pool's size (%d)", l.WriteInFlight, l.Handlers)
	case l.MaxBeads < 1 || l.MaxStoredBytes < 1 || l.MaxBeadBytes < 1 || l.MaxUnknownTowns < 0 || l.ForgetAfter < 0:
		return l, errors.New("limits: caps must be positive")
	}
	return l, nil
}
