package conformance

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// otherTown is the town of the kit's foreign tokens.
const otherTown = "conformance-other"

// unchanged checks the token file is the very file it was.
func (k *kit) unchanged(before tokenFileState) error {
	after, err := k.tokenFileNow()
	if err != nil {
		return err
	}
	if after.token != before.token || !os.SameFile(before.info, after.info) {
		return errors.New("the token file was written")
	}
	return nil
}

// oversized is a body of the right type over the 1 MiB limit.
func oversized(typ string) []byte {
	return []byte(`{"type":"` + typ + `","pad":"` + strings.Repeat("x", schemas.MaxBodySize) + `"}`)
}

// checkHostile: malformed, oversized and foreign input is refused with a
// code, and nothing is written to the token file.
func (k *kit) checkHostile(ctx context.Context) {
	mint := func(town string, ttl time.Duration) schemas.TokenRotation {
		tok, c, err := k.issuer.MintContainer(town, "", ttl)
		if err != nil {
			return schemas.TokenRotation{}
		}
		return schemas.TokenRotation{TownID: town, Token: tok, IssuedAt: c.Issued(), ExpiresAt: c.Expires()}
	}
	foreign := mint(otherTown, k.cfg.TokenTTL)
	theirs := foreign
	theirs.TownID = k.town.ID()
	expired := mint(k.town.ID(), time.Millisecond)
	waitFor(ctx, time.Second, func() bool { return time.Now().After(expired.ExpiresAt) })
	legacy, lc, _ := k.issuer.MintAgent(k.town.ID(), "rig", "a1", "", k.cfg.TokenTTL)
	notContainer := schemas.TokenRotation{TownID: k.town.ID(), Token: legacy, IssuedAt: lc.IssuedAt.Time, ExpiresAt: lc.ExpiresAt.Time}
	for _, tc := range []struct {
		name string
		body any
	}{
		{"a malformed rotation", []byte(`{"type": "gastown.v1.token_rotation", "token": `)},
		{"an oversized rotation", oversized(schemas.TypeTokenRotation)},
		{"a rotation for another town", &foreign},
		{"another town's token", &theirs},
		{"an expired token", &expired},
		{"a token that is not a container token", &notContainer},
	} {
		k.check(tc.name+" is refused, and nothing is written to the token file", func() error {
			before, err := k.tokenFileNow()
			if err != nil {
				return err
			}
			m, err := k.request(ctx, k.town.Token(), tc.body)
			if err != nil {
				return err
			}
			if err := refused(m); err != nil {
				return err
			}
			return k.unchanged(before)
		})
	}
	other := k.startReq("a6", k.nextRun(), schemas.RoleMayor, ModeReport)
	other.TownID = otherTown
	for _, tc := range []struct {
		name string
		body any
	}{
		{"a malformed dispatch", []byte(`{"type": "gastown.v1.start_agent", "agentId": `)},
		{"an oversized dispatch", oversized(schemas.TypeStartAgent)},
		{"a dispatch for another town", &other},
		{"a malformed stop", []byte(`not json`)},
	} {
		k.check(tc.name+" is refused with a code", func() error {
			subject := k.town.Dispatch()
			if strings.Contains(tc.name, "stop") {
				subject = k.town.ControlStop()
			}
			m, err := k.request(ctx, subject, tc.body)
			if err != nil {
				return err
			}
			return refused(m)
		})
	}
}

// checkNoTokenOnTheWire: no heartbeat and no answer to a dispatch, a stop
// or a rotation ever holds a token.
func (k *kit) checkNoTokenOnTheWire() {
	k.check("no heartbeat or reply holds a token", func() error {
		k.obs.mu.Lock()
		defer k.obs.mu.Unlock()
		for _, b := range k.obs.beats {
			if holdsToken(b.raw) {
				return errors.New("a heartbeat holds a token")
			}
		}
		for _, r := range k.obs.replies {
			if holdsToken(r) {
				return errors.New("a reply holds a token")
			}
		}
		return nil
	})
}

// holdsToken reports whether any string in a JSON body is a container
// token.
func holdsToken(body []byte) bool {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return looksLikeToken(string(body))
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case string:
			return looksLikeToken(x)
		case []any:
			for _, e := range x {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for _, e := range x {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// admin calls an admin method of the kit's coordinator.
func (k *kit) adminCall(ctx context.Context, method string, out any) error {
	return k.adminCallWith(ctx, method, schemas.TownRequest{TownID: k.town.ID()}, out)
}

// adminCallWith calls gastown.admin.<method> with req.
func (k *kit) adminCallWith(ctx context.Context, method string, req, out any) error {
	subject, err := schemas.Admin(method)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(req)
	m := nats.NewMsg(subject)
	m.Data = body
	rctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	return bus.Call(rctx, k.admin, m, out)
}

// checkRevocation, last since it is final: a revocation closes the
// container's connections, and it gets nothing new after it: no push
// reaches it, its token file stays, and it sends no heartbeat.
func (k *kit) checkRevocation(ctx context.Context) {
	var res schemas.RevokeResult
	var before tokenFileState
	var at time.Time
	if !k.check("a revocation closes its connections", func() error {
		var err error
		if before, err = k.tokenFileNow(); err != nil {
			return err
		}
		// The coordinator revokes only a town it knows. The kit's town is
		// made only now, so its mayor did not take part in the checks
		// before; the revocation shuts it out with the rest.
		if err := k.adminCallWith(ctx, schemas.AdminTownCreate, schemas.TownCreate{TownID: k.town.ID()}, nil); err != nil {
			return errors.Wrap(err, "town.create")
		}
		at = time.Now()
		if err := k.adminCall(ctx, schemas.AdminTokenRevoke, &res); err != nil {
			return errors.Wrap(err, "token.revoke")
		}
		if res.Closed < 1 {
			return errors.Newf("token.revoke closed %d connections", res.Closed)
		}
		if !waitFor(ctx, k.cfg.Timeout, func() bool {
			all, err := k.d.Server().ClientConns()
			if err != nil {
				return false
			}
			for _, c := range all {
				if c.Stop.IsZero() {
					return false
				}
			}
			return true
		}) {
			return errors.New("a connection of the town is still open after the revocation")
		}
		return nil
	}) {
		return
	}
	k.check("after a revocation it gets nothing new: no push reaches it, no heartbeat, the token file stays", func() error {
		var rot schemas.RotateResult
		if err := k.adminCall(ctx, schemas.AdminTokenRotate, &rot); err == nil && rot.Acknowledged {
			return errors.New("a token minted after the revocation was acknowledged")
		}
		quiet := max(4*k.cfg.HeartbeatInterval, time.Second)
		from := k.obs.numBeats()
		t := time.NewTimer(quiet)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		for _, b := range k.obs.beatsSince(from) {
			if b.at.After(at.Add(k.cfg.HeartbeatInterval)) {
				return errors.New("a heartbeat arrived after the revocation")
			}
		}
		return k.unchanged(before)
	})
}
