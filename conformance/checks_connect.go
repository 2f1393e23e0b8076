package conformance

import (
	"context"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
)

// checkConnect: the container connects with its bootstrap token and its
// town's inbox prefix, asks token.get with a valid TokenRequest, and keeps
// the token file (mode 0600, the bare JWT of its town). It reports whether
// the container connected at all.
func (k *kit) checkConnect(ctx context.Context) bool {
	var gets []tokenGet
	connected := k.check("connects with its bootstrap token and asks token.get", func() error {
		if !waitFor(ctx, k.cfg.Timeout, func() bool { gets = k.obs.tokenGets(); return len(gets) > 0 }) {
			select {
			case <-k.exited:
				return errors.Newf("the container exited (%s) without asking token.get", k.proc.ProcessState)
			default:
			}
			return errors.Newf("no token.get within %s: is GASTOWN_NATS_URL used, and GASTOWN_CONTAINER_TOKEN the connection token?", k.cfg.Timeout)
		}
		return nil
	})
	if !connected {
		return false
	}
	k.check("token.get carries a valid TokenRequest", func() error {
		g := gets[0]
		switch {
		case g.err != nil:
			return errors.Wrap(g.err, "the body is not a valid gastown.v1.token_request")
		case g.req.TownID != k.town.ID():
			return errors.Newf("townId is %q, not the token's town %q", g.req.TownID, k.town.ID())
		case g.req.ContainerID != DefaultContainerID:
			return errors.Newf("containerId is %q, not GASTOWN_CONTAINER_ID (%q)", g.req.ContainerID, DefaultContainerID)
		}
		return nil
	})
	k.check("requests reply on the town's inbox prefix", func() error {
		for _, g := range gets {
			if !k.town.OwnsReply(g.reply) {
				return errors.Newf("a token.get's reply subject %q is not under %s.", g.reply, k.town.Inbox())
			}
		}
		return nil
	})
	k.check("keeps the token file: mode 0600, the bare JWT of its town", func() error {
		var err error
		if !waitFor(ctx, k.cfg.Timeout, func() bool { _, err = k.tokenFileNow(); return err == nil }) {
			return err
		}
		_, err = k.readTokenFile()
		return err
	})
	return true
}

// tokenFileState is what the token file holds and which file it is.
type tokenFileState struct {
	token  string
	claims schemas.ContainerClaims
	info   os.FileInfo
}

// readTokenFile reads GASTOWN_TOKEN_FILE and checks what PROTOCOL.md says
// of it: mode 0600, the bare JWT (no whitespace), a container token of the
// town.
func (k *kit) readTokenFile() (tokenFileState, error) { return k.readTokenFileAs(true) }

// tokenFileNow is readTokenFile for the checks about something else: it
// trims whitespace, as readers do, so a file's one fault is reported once.
func (k *kit) tokenFileNow() (tokenFileState, error) { return k.readTokenFileAs(false) }

func (k *kit) readTokenFileAs(bare bool) (tokenFileState, error) {
	var st tokenFileState
	info, err := os.Stat(k.tokenFile)
	if err != nil {
		return st, errors.Wrap(err, agentclient.EnvTokenFile)
	}
	b, err := os.ReadFile(k.tokenFile)
	if err != nil {
		return st, errors.Wrap(err, agentclient.EnvTokenFile)
	}
	st.token, st.info = string(b), info
	if !bare {
		st.token = strings.TrimSpace(st.token)
	}
	switch {
	case info.Mode().Perm() != 0o600:
		return st, errors.Newf("the token file's mode is %o, not 600", info.Mode().Perm())
	case strings.TrimSpace(st.token) != st.token:
		return st, errors.New("the token file has whitespace around the JWT (a trailing newline?); it must hold the bare JWT")
	}
	if st.claims, err = schemas.PeekContainerClaims(st.token); err != nil {
		return st, errors.Wrap(err, "the token file does not hold a container token")
	}
	if st.claims.TownID != k.town.ID() {
		return st, errors.Newf("the token file holds a token of town %s", st.claims.TownID)
	}
	return st, nil
}

// checkHeartbeats: heartbeats come at the interval the coordinator told
// (heartbeatIntervalMs, not the container's own default), are valid and
// name the town and the container.
func (k *kit) checkHeartbeats(ctx context.Context) {
	iv := k.cfg.HeartbeatInterval
	k.check("heartbeats at the interval the coordinator told ("+iv.String()+")", func() error {
		from := k.obs.numBeats()
		var beats []beat
		const want = 8
		if !waitFor(ctx, want*iv*4+k.cfg.Timeout, func() bool { beats = k.obs.beatsSince(from); return len(beats) >= want }) {
			return errors.Newf("%d heartbeats in %s: the interval told in heartbeatIntervalMs is not used", len(beats), want*iv*4+k.cfg.Timeout)
		}
		var gaps []time.Duration
		for i, b := range beats {
			if b.err != nil {
				return errors.Wrap(b.err, "a heartbeat is not a valid gastown.v1.heartbeat")
			}
			if b.hb.TownID != k.town.ID() || b.hb.ContainerID != DefaultContainerID {
				return errors.Newf("a heartbeat names town %q and container %q, not %q and %q", b.hb.TownID, b.hb.ContainerID, k.town.ID(), DefaultContainerID)
			}
			if i > 0 {
				gaps = append(gaps, b.at.Sub(beats[i-1].at))
			}
		}
		slices.Sort(gaps)
		if med := gaps[len(gaps)/2]; med < iv/2 || med > 2*iv {
			return errors.Newf("heartbeats come every %s (median), not every %s", med.Round(time.Millisecond), iv)
		}
		return nil
	})
}
