package agentclient

import (
	"sync/atomic"

	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// headerCache holds the headers of a client's requests for the newest
// token: the Authorization value and the identity headers are the same on
// every call until the token changes, so a call reuses them instead of
// making a map, three value slices and the bearer string each time. A
// header handed out is never written again (a new token gets a new map):
// the requests in flight that share it only read it, as nats.go does when
// it encodes a request.
type headerCache struct {
	agentID, rigID string
	cur            atomic.Pointer[tokenHeader]
}

// tokenHeader is the request header for one token.
type tokenHeader struct {
	token  string
	header nats.Header
}

// header is the request header for token: the cached one when the token
// is the one it was made for, else a new one (cached in its place).
func (hc *headerCache) header(token string) nats.Header {
	if t := hc.cur.Load(); t != nil && t.token == token {
		return t.header
	}
	h := nats.Header{schemas.AuthorizationHeader: {schemas.BearerPrefix + token}}
	if hc.agentID != "" {
		h[schemas.AgentIDHeader] = []string{hc.agentID}
	}
	if hc.rigID != "" {
		h[schemas.RigIDHeader] = []string{hc.rigID}
	}
	hc.cur.Store(&tokenHeader{token: token, header: h})
	return h
}
