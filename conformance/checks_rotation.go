package conformance

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
)

// rotation is a TokenRotation of a token the kit mints now.
func (k *kit) rotation(ttl time.Duration) (schemas.TokenRotation, error) {
	tok, c, err := k.issuer.MintContainer(k.town.ID(), "", ttl)
	if err != nil {
		return schemas.TokenRotation{}, err
	}
	return schemas.TokenRotation{TownID: k.town.ID(), Token: tok, IssuedAt: c.Issued(), ExpiresAt: c.Expires(),
		HeartbeatIntervalMs: k.cfg.HeartbeatInterval.Milliseconds()}, nil
}

// push sends a rotation as the coordinator would and decodes the Ack.
func (k *kit) push(ctx context.Context, rot *schemas.TokenRotation) (schemas.Ack, error) {
	var ack schemas.Ack
	m, err := k.request(ctx, k.town.Token(), rot)
	if err != nil {
		return ack, err
	}
	if err := schemas.Decode(m.Data, &ack); err != nil {
		return ack, errors.Wrap(err, "the rotation's answer is not a valid gastown.v1.ack")
	}
	return ack, nil
}

// containerConns are the container's own connections, open and closed:
// the server's outside connections that are not the kit's agents'.
func (k *kit) containerConns() []bus.ClientConn {
	all, err := k.d.Server().ClientConns()
	if err != nil {
		return nil
	}
	var out []bus.ClientConn
	for _, c := range all {
		if c.Name != agentConnName {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b bus.ClientConn) int { return a.Start.Compare(b.Start) })
	return out
}

// checkRotations: pushed rotations are stored before they are
// acknowledged, the file never goes back, the connection moves at its
// midpoint (make before break) and at once on revokedBefore, and an agent
// calling tools all the while sees no failure.
func (k *kit) checkRotations(ctx context.Context) {
	callsRun := k.nextRun()
	if !k.check("an agent calling tools in a loop starts", func() error {
		if _, err := k.dispatch(ctx, k.startReq("a5", callsRun, schemas.RolePolecat, ModeCalls)); err != nil {
			return err
		}
		_, err := k.report(ctx, callsRun)
		return err
	}) {
		return
	}
	older, err := k.rotation(k.cfg.TokenTTL)
	if err != nil {
		k.check("the kit mints tokens", func() error { return err })
		return
	}
	var newest time.Time
	n := k.cfg.Rotations
	k.check("acknowledges a pushed rotation only once the token file holds it (0600, bare, renamed)", func() error {
		for i := range n {
			k.nextBeats(ctx, 1)
			if _, err := k.tokenFileNow(); err != nil {
				return err
			}
			// Held open, the file's inode cannot be given to the file
			// renamed over it (the container may also have replaced the
			// file on its own meanwhile, freeing an inode for reuse), so
			// the same file after means a rewrite in place.
			held, err := os.Open(k.tokenFile)
			if err != nil {
				return errors.Wrap(err, agentclient.EnvTokenFile)
			}
			defer held.Close() // one per rotation, until the check ends
			before, err := held.Stat()
			if err != nil {
				return errors.Wrap(err, agentclient.EnvTokenFile)
			}
			rot, err := k.rotation(k.cfg.TokenTTL)
			if err != nil {
				return err
			}
			ack, err := k.push(ctx, &rot)
			if err != nil {
				return errors.Wrapf(err, "rotation %d of %d", i+1, n)
			}
			if !ack.OK {
				return errors.Newf("rotation %d of %d refused: %s %s", i+1, n, ack.Code, ack.Error)
			}
			after, err := k.readTokenFile()
			if err != nil {
				return errors.Wrapf(err, "just after acknowledging rotation %d", i+1)
			}
			if after.claims.Issued().Before(rot.IssuedAt) {
				return errors.Newf("rotation %d was acknowledged before the token file held it", i+1)
			}
			if os.SameFile(before, after.info) {
				return errors.Newf("rotation %d: the token file was rewritten in place, not replaced by rename", i+1)
			}
			newest = rot.IssuedAt
		}
		return nil
	})
	k.check("the token file never goes back to an older token", func() error {
		if _, err := k.push(ctx, &older); err != nil {
			return err
		}
		st, err := k.tokenFileNow()
		if err != nil {
			return err
		}
		if st.claims.Issued().Before(newest) {
			return errors.New("after an older token was pushed, the token file holds an older token than it had")
		}
		return nil
	})
	k.checkMoves(ctx)
	k.check("0 failed agent tool calls over "+strconv.Itoa(n)+" rotations and the connection moves", func() error {
		b, err := os.ReadFile(filepath.Join(k.reports, callsRun+".calls.json"))
		if err != nil {
			return errors.Wrap(err, "the calling agent's counts")
		}
		var c Calls
		if err := json.Unmarshal(b, &c); err != nil {
			return errors.Wrap(err, "the calling agent's counts")
		}
		_, _, _ = k.stop(ctx, "a5", callsRun)
		switch {
		case c.Calls < 2:
			return errors.Newf("only %d calls were made", c.Calls)
		case c.Failures > 0:
			return errors.Newf("%d of %d calls failed, the last with: %s", c.Failures, c.Calls, c.LastErr)
		}
		return nil
	})
}

// checkMoves: the container moves its connection before its token's exp
// (the server never closes one), opening the new one before closing the
// old, with no heartbeat missed; and moves at once when a rotation's
// revokedBefore is after its connection's token.
func (k *kit) checkMoves(ctx context.Context) {
	wait := k.cfg.TokenTTL + k.cfg.Timeout
	from := k.obs.numBeats()
	var conns []bus.ClientConn
	if !k.check("moves its connection at its midpoint, make before break", func() error {
		if !waitFor(ctx, wait, func() bool {
			conns = k.containerConns()
			return len(conns) >= 2 && !conns[0].Stop.IsZero()
		}) {
			return errors.Newf("no connection was replaced within %s (a token lives %s)", wait, k.cfg.TokenTTL)
		}
		// The first connection used the bootstrap token: it moves half way
		// between connecting and that token's exp (with room for a busy
		// machine), not at once and not at the last moment.
		life := k.bootstrapExp.Sub(conns[0].Start)
		at := conns[1].Start.Sub(conns[0].Start)
		if at < life/4 || at > life*17/20 {
			return errors.Newf("the first connection moved %s after connecting, not near the midpoint of the %s its token had left", at.Round(time.Millisecond), life.Round(time.Millisecond))
		}
		return k.movesClean(conns, from)
	}) {
		return
	}
	k.check("moves at once when a rotation's revokedBefore is after its connection's token", func() error {
		open := map[uint64]bool{}
		for _, c := range k.containerConns() {
			if c.Stop.IsZero() {
				open[c.ID] = true
			}
		}
		rot, err := k.rotation(k.cfg.TokenTTL)
		if err != nil {
			return err
		}
		rot.RevokedBefore = rot.IssuedAt
		pushed := time.Now()
		ack, err := k.push(ctx, &rot)
		if err != nil {
			return err
		}
		if !ack.OK {
			return errors.Newf("the rotation was refused: %s %s", ack.Code, ack.Error)
		}
		// At once: well before the new connection's own midpoint.
		soon := k.cfg.TokenTTL / 4
		if !waitFor(ctx, soon, func() bool {
			moved := false
			for _, c := range k.containerConns() {
				if open[c.ID] && c.Stop.IsZero() {
					return false
				}
				if c.Start.After(pushed) {
					moved = true
				}
			}
			return moved
		}) {
			return errors.Newf("its connections were not replaced within %s of the rotation", soon)
		}
		return k.movesClean(k.containerConns(), from)
	})
}

// movesClean checks the container's connections: none closed by the
// server, each closed one replaced by one opened before it closed, and no
// heartbeat missed since beat from.
func (k *kit) movesClean(conns []bus.ClientConn, from int) error {
	for _, c := range conns {
		if !c.Stop.IsZero() && c.Reason != bus.ClosedByClient {
			return errors.Newf("the server closed one of its connections (%s): it must move before that", c.Reason)
		}
	}
	for i, c := range conns {
		if c.Stop.IsZero() || i == len(conns)-1 {
			continue
		}
		if next := conns[i+1]; next.Start.After(c.Stop) {
			return errors.Newf("a connection closed %s before the next one opened: make before break", next.Start.Sub(c.Stop).Round(time.Millisecond))
		}
	}
	beats := k.obs.beatsSince(from)
	for i := 1; i < len(beats); i++ {
		if gap := beats[i].at.Sub(beats[i-1].at); gap > 3*k.cfg.HeartbeatInterval+time.Second {
			return errors.Newf("no heartbeat for %s while it moved", gap.Round(time.Millisecond))
		}
	}
	return nil
}
