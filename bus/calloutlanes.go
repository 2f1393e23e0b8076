package bus

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The callout answers in two stages, so that a flood of connects that
// will be refused neither waits for nor delays the ones that will be let in.
//
// Every connection attempt on a cluster node costs a callout round, and
// tokens are not throttled per source (throttle.go says why). Measured on
// a 2-core machine, one refused request used to cost the coordinator
// 285 µs (2.8 ms under -race): opening the seal (an X25519
// multiplication, 81 µs), checking the server's signature (56 µs),
// signing the refusal (61 µs) and sealing it (87 µs), with the server
// opening and checking that answer again. Answered in arrival order, 32
// at a time, an outsider's 2,000 concurrent connects with garbage tokens
// held an honest container's request past the servers' first PING (2 s).
//
// Stage one (dispatch, on the subscription's goroutine, in arrival
// order) opens the request with the shared key cached per server
// (calloutbox.go, about 1 µs) and reads its claims without checking the
// server's signature (any server key signs one: it proves nothing about
// who sent it). Stage two (up to calloutWorkers at once, so a connect
// storm is decided in parallel and a flood takes no more) runs the one
// authorizer, decide (an HMAC for a token, a constant-time compare for a
// password: microseconds). A refusal is answered there and then with an
// empty message, which the server takes as a refusal at once
// ("Authorization Violation" to the client): nothing signed, nothing
// sealed, nothing for the server to open or check, and the worker is
// free again in microseconds. Only what decide let in is verified (the
// server's signature), signed (the user JWT and the answer) and sealed.
//
// A request that cannot be opened or read, or whose signature is wrong,
// is dropped (the server times the client out); drops are counted
// (Counts) and logged at most once per LogInterval.
//
// Measured in the red team's flood (attack/cluster_test.go: three nodes,
// two coordinators and 2,000 flooding clients in one process on 2 cores),
// the coordinators' share of the CPU fell from 31 % to about 2 %, and the
// CPU per refused connect, all parts together, from 1.26 ms to 0.70 ms
// (7.7 ms to 3.7 ms under -race). What is left is the servers' own work
// per connection (accepting it, making, signing and sealing its request:
// about 240 µs) and the flooding clients', which no answer can spare.
// Per-source accounting would not add to this: the first stage already
// costs a refused source next to nothing, and the servers' work comes
// before any callout; tokens stay unthrottled per source (throttle.go).

// CalloutCounts is what the callout did with the requests it received.
type CalloutCounts struct {
	// Requests is every authorization request received.
	Requests uint64
	// Granted were answered with a user JWT.
	Granted uint64
	// RefusedFast were refused in the first stage, with an empty answer
	// (by reason in Refused).
	RefusedFast uint64
	// Dropped were left unanswered: sealed with another key, unreadable,
	// badly signed, or the answer could not be made or sent.
	Dropped uint64
}

// calloutLanes is the callout's state for its two stages.
type calloutLanes struct {
	box         *calloutBox // nil without an xkey
	granted     atomic.Uint64
	refusedFast atomic.Uint64
	dropped     atomic.Uint64
	drops       *RateLog
}

// Counts is what the callout did with the requests it received so far.
func (c *Callout) Counts() CalloutCounts {
	return CalloutCounts{Requests: uint64(c.requests.Load()), Granted: c.lanes.granted.Load(),
		RefusedFast: c.lanes.refusedFast.Load(), Dropped: c.lanes.dropped.Load()}
}

// dispatch is stage one.
func (c *Callout) dispatch(m *nats.Msg) {
	c.requests.Add(1)
	data, ok := c.open(m)
	if !ok {
		c.lanes.dropped.Add(1)
		return
	}
	req, err := readAuthRequest(data)
	if err != nil {
		c.drop("an authorization request could not be read", err)
		return
	}
	c.slots <- struct{}{}
	c.wg.Go(func() {
		defer func() { <-c.slots }()
		c.decide(m, data, req)
	})
}

// decide is stage two: refused at once, or granted.
func (c *Callout) decide(m *nats.Msg, data []byte, req *jwt.AuthorizationRequestClaims) {
	uc, refusal := c.grant(req)
	if refusal != "" {
		// Counted before it is sent: the client may see the refusal
		// before this goroutine runs again, and the counts never lag
		// what a client has seen.
		c.lanes.refusedFast.Add(1)
		if err := m.Respond(nil); err != nil {
			c.lanes.refusedFast.Add(^uint64(0))
			c.drop("an authorization refusal could not be sent", err)
		}
		return
	}
	c.answer(m, data, uc)
}

// open is the request's JWT, out of its seal when the callout has an
// xkey; false when it cannot be had (noted for Probe).
func (c *Callout) open(m *nats.Msg) ([]byte, bool) {
	serverXKey := m.Header.Get(server.AuthRequestXKeyHeader)
	switch {
	case c.xkey != nil && serverXKey == "":
		c.noteUnseal("the cluster sends authorization requests in clear, but the coordinator has an xkey: auth_callout.xkey is missing from the servers' configuration")
		return nil, false
	case c.xkey == nil && serverXKey != "":
		c.noteUnseal("the cluster seals its authorization requests (auth_callout.xkey), but the coordinator has no xkey")
		return nil, false
	case c.xkey != nil:
		opened, err := c.lanes.box.open(m.Data, serverXKey)
		if err != nil {
			c.noteUnseal("an authorization request could not be opened with the coordinator's xkey: auth_callout.xkey is not the public key of xkey.nk")
			return nil, false
		}
		return opened, true
	}
	return m.Data, true
}

// readAuthRequest reads a request's claims without checking its
// signature (stage two checks it before anything is granted).
func readAuthRequest(data []byte) (*jwt.AuthorizationRequestClaims, error) {
	if len(data) > jwt.MaxTokenSize {
		return nil, errors.Newf("the request is %d bytes, more than a JWT may be", len(data))
	}
	parts := bytes.Split(data, []byte("."))
	if len(parts) != 3 {
		return nil, errors.New("the request is not a JWT")
	}
	payload := make([]byte, base64.RawURLEncoding.DecodedLen(len(parts[1])))
	n, err := base64.RawURLEncoding.Decode(payload, parts[1])
	if err != nil {
		return nil, errors.Wrap(err, "decoding the request's claims")
	}
	var req jwt.AuthorizationRequestClaims
	if err := json.Unmarshal(payload[:n], &req); err != nil {
		return nil, errors.Wrap(err, "reading the request's claims")
	}
	if req.Type != jwt.AuthorizationRequestClaim {
		return nil, errors.Newf("the JWT is a %q, not an authorization request", req.Type)
	}
	if !nkeys.IsValidPublicUserKey(req.UserNkey) {
		return nil, errors.New("the request names no user nkey")
	}
	return &req, nil
}

// answer is the grant of uc to the request in data.
func (c *Callout) answer(m *nats.Msg, data []byte, uc *jwt.UserClaims) {
	out, granted, ok := c.sealedGrant(data, uc)
	if !ok {
		return
	}
	// Counted before it is sent, as a refusal is.
	if granted {
		c.lanes.granted.Add(1)
	}
	if err := m.Respond(out); err != nil {
		if granted {
			c.lanes.granted.Add(^uint64(0))
		}
		c.drop("an authorization answer could not be sent", err)
	}
}

// sealedGrant is the answer granting uc to the request in data, signed
// and sealed; granted is false when it had to refuse after all (the user
// JWT could not be signed); ok is false when there is no answer to send.
func (c *Callout) sealedGrant(data []byte, uc *jwt.UserClaims) (out []byte, granted, ok bool) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		c.drop("an authorization request is not signed by a server", err)
		return nil, false, false
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if resp.Jwt, err = uc.Encode(c.issuer); err != nil {
		c.log.Error("a user JWT could not be signed", KeyErr, err)
		resp.Jwt, resp.Error = "", "internal error"
	}
	token, err := resp.Encode(c.issuer)
	if err != nil {
		c.drop("an authorization answer could not be signed", err)
		return nil, false, false
	}
	out = []byte(token)
	if c.lanes.box != nil {
		if out, err = c.lanes.box.seal(out, req.Server.XKey); err != nil {
			c.drop("an authorization answer could not be sealed", err)
			return nil, false, false
		}
	}
	return out, resp.Error == "", true
}

// drop counts a request left unanswered and logs why, rate-limited.
func (c *Callout) drop(why string, err error) {
	c.lanes.dropped.Add(1)
	c.lanes.drops.Log(context.Background(), slog.LevelWarn, why, why, KeyErr, err)
}
