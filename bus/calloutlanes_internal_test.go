package bus

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// The shared-key box is nkeys' xkey format both ways: what a server
// seals the callout opens, and what the callout seals a server opens.
func TestCalloutBoxIsNkeysXKey(t *testing.T) {
	srv, err := nkeys.CreateCurveKeys()
	require.NoError(t, err)
	coord, err := nkeys.CreateCurveKeys()
	require.NoError(t, err)
	srvPub, coordPub := pubKey(t, srv), pubKey(t, coord)
	b, err := newCalloutBox(coord)
	require.NoError(t, err)

	sealed, err := srv.Seal([]byte("a request"), coordPub)
	require.NoError(t, err)
	for range 2 { // the second from the cached key
		got, err := b.open(sealed, srvPub)
		require.NoError(t, err)
		require.Equal(t, "a request", string(got))
	}
	answer, err := b.seal([]byte("an answer"), srvPub)
	require.NoError(t, err)
	got, err := srv.Open(answer, coordPub)
	require.NoError(t, err)
	require.Equal(t, "an answer", string(got))

	other, err := nkeys.CreateCurveKeys()
	require.NoError(t, err)
	_, err = b.open(sealed, pubKey(t, other))
	require.Error(t, err, "opened with the wrong sender's key")
	_, err = b.open([]byte("xkv1short"), srvPub)
	require.Error(t, err)
	_, err = b.open(sealed, "not a key")
	require.Error(t, err)
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	_, err = b.open(tampered, srvPub)
	require.Error(t, err, "a tampered request was opened")

	_, err = newCalloutBox(srv)
	require.NoError(t, err)
	acc, err := nkeys.CreateAccount()
	require.NoError(t, err)
	_, err = newCalloutBox(acc)
	require.Error(t, err, "an account key is not an xkey")
}

// Stage one reads a server's request without its signature, and nothing
// that is not one.
func TestReadAuthRequest(t *testing.T) {
	k := newLaneKeys(t)
	data := k.request(t, "a-token")
	req, err := readAuthRequest(data)
	require.NoError(t, err)
	require.Equal(t, "a-token", req.ConnectOptions.Token)
	require.Equal(t, k.serverID, req.Server.ID)

	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	uc := jwt.NewUserClaims(pubKey(t, user))
	notRequest, err := uc.Encode(k.issuer)
	require.NoError(t, err)
	for name, in := range map[string][]byte{
		"empty":           nil,
		"not a JWT":       []byte("garbage"),
		"bad base64":      []byte("a.!!!.c"),
		"not JSON":        []byte("a.bm90IGpzb24.c"),
		"a user JWT":      []byte(notRequest),
		"four parts":      append(append([]byte(nil), data...), []byte(".x")...),
		"no user nkey":    k.requestWith(t, func(c *jwt.AuthorizationRequestClaims) { c.UserNkey = "" }),
		"bad user nkey":   k.requestWith(t, func(c *jwt.AuthorizationRequestClaims) { c.UserNkey = "town:beta" }),
		"an oversize JWT": []byte(strings.Repeat("a", jwt.MaxTokenSize+1)),
	} {
		_, err := readAuthRequest(in)
		require.Error(t, err, name)
	}
}

// laneKeys are a server's keys and a coordinator's, for requests as a
// server makes them.
type laneKeys struct {
	server, serverX, coordX, issuer nkeys.KeyPair
	serverID                        string
}

func newLaneKeys(t testing.TB) laneKeys {
	t.Helper()
	var k laneKeys
	var err error
	for _, p := range []struct {
		kp   *nkeys.KeyPair
		make func() (nkeys.KeyPair, error)
	}{{&k.server, nkeys.CreateServer}, {&k.serverX, nkeys.CreateCurveKeys}, {&k.coordX, nkeys.CreateCurveKeys}, {&k.issuer, nkeys.CreateAccount}} {
		*p.kp, err = p.make()
		require.NoError(t, err)
	}
	k.serverID = pubKey(t, k.server)
	return k
}

func (k laneKeys) request(t testing.TB, tok string) []byte {
	return k.requestWith(t, func(c *jwt.AuthorizationRequestClaims) { c.ConnectOptions.Token = tok })
}

// requestWith is a request as a server signs it, changed by edit.
func (k laneKeys) requestWith(t testing.TB, edit func(*jwt.AuthorizationRequestClaims)) []byte {
	t.Helper()
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	c := jwt.NewAuthorizationRequestClaims(pubKey(t, k.issuer))
	c.Audience = AuthCalloutSubject
	c.UserNkey = pubKey(t, user)
	c.Server = jwt.ServerID{Name: "node-1", ID: k.serverID, XKey: pubKey(t, k.serverX)}
	c.ClientInformation.Host = "127.0.0.1"
	c.Expires = time.Now().Add(2 * time.Second).Unix()
	edit(c)
	s, err := c.Encode(k.server)
	require.NoError(t, err)
	return []byte(s)
}

// sealed is the request sealed as the server sends it, with its header.
func (k laneKeys) sealed(t testing.TB, data []byte) *nats.Msg {
	t.Helper()
	out, err := k.serverX.Seal(data, pubKey(t, k.coordX))
	require.NoError(t, err)
	m := nats.NewMsg(AuthCalloutSubject)
	m.Data = out
	m.Header.Set(server.AuthRequestXKeyHeader, pubKey(t, k.serverX))
	return m
}

func pubKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	require.NoError(t, err)
	return p
}

// hmacTokens verifies tokens of the form <town>.<hex HMAC-SHA256 of town>,
// costing what the coordinator's issuer does for a token: one HMAC.
type hmacTokens struct{ key []byte }

func (h hmacTokens) sign(town string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(town))
	return town + "." + hex.EncodeToString(m.Sum(nil))
}

func (h hmacTokens) AuthorizeConnection(tok string) (Grant, error) {
	town, _, ok := strings.Cut(tok, ".")
	if !ok || !hmac.Equal([]byte(tok), []byte(h.sign(town))) {
		return Grant{}, errors.New("token refused")
	}
	return Grant{TownID: town, Deadline: time.Now().Add(time.Hour), IssuedAt: time.Now()}, nil
}

// laneCallout is a callout with k's keys and no connection, for the
// stages' benchmarks.
func laneCallout(t testing.TB, k laneKeys, tokens TokenAuthorizer) *Callout {
	t.Helper()
	limits, err := Limits{LogInterval: time.Hour}.withDefaults()
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)
	a := &authenticator{tokens: tokens, log: log, noRecords: true}
	a.authLimits = newAuthLimits(limits, log)
	c := &Callout{auth: a, issuer: k.issuer, xkey: k.coordX, log: log}
	c.lanes.box, err = newCalloutBox(k.coordX)
	require.NoError(t, err)
	c.lanes.drops = NewRateLog(log, limits.LogInterval, limits.Now)
	return c
}

// The coordinator's cost of one authorization request, by path:
// stage one refusing a garbage token, stage one and the grant lane
// admitting a good one, and (the baselines, "-before") the round each
// took before the two stages: nkeys' open, the signature check, a signed
// refusal or grant, and nkeys' seal.
func BenchmarkCalloutRequest(b *testing.B) {
	k := newLaneKeys(b)
	tokens := hmacTokens{key: []byte("a key of the benchmark's, thirty-two bytes long")}
	c := laneCallout(b, k, tokens)
	garbage := k.sealed(b, k.request(b, "garbage-1"))
	good := k.sealed(b, k.request(b, tokens.sign("alpha")))
	b.Run("refused", func(b *testing.B) {
		for b.Loop() {
			data, ok := c.open(garbage)
			require.True(b, ok)
			req, err := readAuthRequest(data)
			require.NoError(b, err)
			_, refusal := c.grant(req)
			require.NotEmpty(b, refusal)
		}
	})
	b.Run("granted", func(b *testing.B) {
		for b.Loop() {
			data, ok := c.open(good)
			require.True(b, ok)
			req, err := readAuthRequest(data)
			require.NoError(b, err)
			uc, refusal := c.grant(req)
			require.Empty(b, refusal)
			_, granted, ok := c.sealedGrant(data, uc)
			require.True(b, granted && ok)
		}
	})
	b.Run("refused-before", func(b *testing.B) {
		for b.Loop() {
			data, err := k.coordX.Open(garbage.Data, garbage.Header.Get(server.AuthRequestXKeyHeader))
			require.NoError(b, err)
			req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
			require.NoError(b, err)
			_, refusal := c.grant(req)
			resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
			resp.Audience, resp.Error = req.Server.ID, refusal
			tok, err := resp.Encode(k.issuer)
			require.NoError(b, err)
			_, err = k.coordX.Seal([]byte(tok), req.Server.XKey)
			require.NoError(b, err)
		}
	})
	b.Run("granted-before", func(b *testing.B) {
		for b.Loop() {
			data, err := k.coordX.Open(good.Data, good.Header.Get(server.AuthRequestXKeyHeader))
			require.NoError(b, err)
			req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
			require.NoError(b, err)
			uc, refusal := c.grant(req)
			require.Empty(b, refusal)
			resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
			resp.Audience = req.Server.ID
			resp.Jwt, err = uc.Encode(k.issuer)
			require.NoError(b, err)
			tok, err := resp.Encode(k.issuer)
			require.NoError(b, err)
			_, err = k.coordX.Seal([]byte(tok), req.Server.XKey)
			require.NoError(b, err)
		}
	})
}
