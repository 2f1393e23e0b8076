package bus

import (
	"log/slog"
	"time"
)

// authLimits is the authenticator's defence against being worn down: the
// password throttle, the refusal counters and log, and the per-town cap
// on connections with the index it is counted from.
type authLimits struct {
	now       func() time.Time
	guesses   *throttle
	refused   *refusals
	townConns int
	// live says whether the server still has connection id; nil means
	// every one is live (an authenticator without a server, in tests).
	live func(id uint64) bool
	// revokedBefore is, per town, the latest time Kick closed the town's
	// connections for: a connection whose token was issued before it is
	// not admitted, even if it passed the token check just before the
	// kick. Guarded by authenticator.mu.
	revokedBefore map[string]time.Time
	// byTown indexes conns by town. Guarded by authenticator.mu.
	byTown map[string]map[uint64]struct{}
	// cluster counts the towns' connections on a cluster, for the town
	// cap of the callout (clustercount.go); nil on the embedded server.
	cluster *clusterConns
}

func newAuthLimits(l Limits, log *slog.Logger) authLimits {
	return authLimits{
		now:       l.Now,
		guesses:   newThrottle(l),
		refused:   newRefusals(NewRateLog(log, l.LogInterval, l.Now)),
		townConns: l.TownConns,
	}
}

// admit records token connection id unless its town already has
// townConns connections open. The count comes from the records; at the
// cap, the town's records are first checked against the server, so a
// connection that closed since the last sweep does not hold a slot.
//
// A connection whose token was issued before a kick of its town is refused
// (revoked is true): it may have passed the token check just before the
// revocation, and the kick, which saw no record of it, did not close it.
func (a *authenticator) admit(id uint64, tc tokenConn) (ok, revoked bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tc.issuedAt.Before(a.revokedBefore[tc.town]) {
		return false, true
	}
	if ids := a.byTown[tc.town]; a.townConns > 0 && len(ids) >= a.townConns {
		for other := range ids {
			if !a.isLive(other) {
				a.forgetLocked(other)
			}
		}
		if len(a.byTown[tc.town]) >= a.townConns {
			return false, false
		}
	}
	a.rememberLocked(id, tc, a.now())
	return true, false
}

// revokeLocked records that the town's tokens issued before t are revoked,
// for admit. a.mu must be held.
func (a *authenticator) revokeLocked(town string, t time.Time) {
	if a.revokedBefore == nil {
		a.revokedBefore = map[string]time.Time{}
	}
	if t.After(a.revokedBefore[town]) {
		a.revokedBefore[town] = t
	}
}

func (a *authenticator) isLive(id uint64) bool { return a.live == nil || a.live(id) }

// indexLocked adds connection id to its town's index. a.mu must be held.
func (a *authenticator) indexLocked(id uint64, town string) {
	if a.byTown == nil {
		a.byTown = map[string]map[uint64]struct{}{}
	}
	ids := a.byTown[town]
	if ids == nil {
		ids = map[uint64]struct{}{}
		a.byTown[town] = ids
	}
	ids[id] = struct{}{}
}

// forgetLocked drops the record of connection id. a.mu must be held.
func (a *authenticator) forgetLocked(id uint64) {
	tc, ok := a.conns[id]
	if !ok {
		return
	}
	delete(a.conns, id)
	if ids := a.byTown[tc.town]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(a.byTown, tc.town)
		}
	}
}

// dropClosed forgets the connections the server no longer has, reusing
// buf for the ids (it returns it for the next sweep). The server is asked
// without a.mu held, so a sweep of many records does not hold up
// connects; connection ids are never reused, so one found gone stays gone.
func (a *authenticator) dropClosed(buf []uint64) []uint64 {
	a.mu.Lock()
	buf = buf[:0]
	for id := range a.conns {
		buf = append(buf, id)
	}
	a.mu.Unlock()
	gone := buf[:0]
	for _, id := range buf {
		if !a.isLive(id) {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		a.mu.Lock()
		for _, id := range gone {
			a.forgetLocked(id)
		}
		a.mu.Unlock()
	}
	return buf
}

// sweepConns drops the records of closed connections every interval
// until the server closes: nothing tells the authenticator that a
// connection closed, and a record kept until its token's expiry would
// let connection churn grow memory for hours.
func (s *Server) sweepConns(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var buf []uint64
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			buf = s.auth.dropClosed(buf)
		}
	}
}

// TokenConns is how many token connections the server keeps a record of
// (for Kick and the town cap): the open ones, and any that closed since
// the last sweep. For tests and status.
func (s *Server) TokenConns() int {
	s.auth.mu.Lock()
	defer s.auth.mu.Unlock()
	return len(s.auth.conns)
}
