package bus_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
)

// forgedAuthRequest is an authorization request as a server makes it for
// a client presenting tok, signed by a server key of the forger's own and
// sealed to xkey; badSig breaks its signature.
func forgedAuthRequest(t *testing.T, xkey, tok string, badSig bool) *nats.Msg {
	t.Helper()
	srv, err := nkeys.CreateServer()
	require.NoError(t, err)
	srvPub := pub(t, srv)
	sx, err := nkeys.CreateCurveKeys()
	require.NoError(t, err)
	sxPub := pub(t, sx)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	req := jwt.NewAuthorizationRequestClaims(srvPub)
	req.UserNkey = pub(t, user)
	req.Server = jwt.ServerID{Name: "forged", ID: srvPub, XKey: sxPub}
	req.ClientInformation.Host = "203.0.113.9"
	req.ConnectOptions.Token = tok
	enc, err := req.Encode(srv)
	require.NoError(t, err)
	if badSig {
		parts := strings.Split(enc, ".")
		parts[2] = strings.Repeat("A", len(parts[2]))
		enc = strings.Join(parts, ".")
	}
	sealed, err := sx.Seal([]byte(enc), xkey)
	require.NoError(t, err)
	m := nats.NewMsg(bus.AuthCalloutSubject)
	m.Header.Set(server.AuthRequestXKeyHeader, sxPub)
	m.Data = sealed
	return m
}

// TestCalloutForgedRequests: what the callout's two stages do with
// requests a forger made (on a cluster nats-server denies every client
// publishing there; attack's TestClusterNobodyForgesCalloutRequests), on a
// plain server without that guard. The first stage reads a request
// without checking its server's signature: a refusal is an empty answer;
// a request for a valid token whose signature is broken is never granted
// (dropped, nothing sent); a request with no reply is dropped, and the
// callout answers the next.
func TestCalloutForgedRequests(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(waitFor))
	creds, keys := newCreds(t)
	key, err := token.NewKey(randomSecret(t))
	require.NoError(t, err)
	issuer := token.NewIssuer(token.NewKeyRing(key), nil)
	tokens, err := token.NewConnAuthorizer(issuer, token.AuthConfig{}, nil)
	require.NoError(t, err)
	responder, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(responder.Close)
	callout, err := bus.StartCallout(responder, bus.CalloutConfig{
		Tokens: tokens, Issuer: creds.Issuer, XKey: creds.XKey})
	require.NoError(t, err)
	t.Cleanup(callout.Close)
	valid, _, err := issuer.MintContainer("alpha", "", time.Hour)
	require.NoError(t, err)
	forger, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(forger.Close)

	// A refusal is empty: nothing signed, nothing sealed.
	ans, err := forger.RequestMsg(forgedAuthRequest(t, keys.XKey, "garbage", false), waitFor)
	require.NoError(t, err)
	require.Empty(t, ans.Data)

	// A valid token, well signed: a sealed grant (the baseline).
	ans, err = forger.RequestMsg(forgedAuthRequest(t, keys.XKey, valid, false), waitFor)
	require.NoError(t, err)
	require.NotEmpty(t, ans.Data)
	require.Equal(t, uint64(1), callout.Counts().Granted)

	// The same, badly signed: dropped, nothing sent to its reply.
	replies, err := forger.SubscribeSync(nats.NewInbox())
	require.NoError(t, err)
	m := forgedAuthRequest(t, keys.XKey, valid, true)
	m.Reply = replies.Subject
	require.NoError(t, forger.PublishMsg(m))
	require.Eventually(t, func() bool { return callout.Counts().Dropped == 1 }, waitFor, 5*time.Millisecond)
	require.NoError(t, forger.Flush())
	_, err = replies.NextMsg(10 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "a badly signed request was answered")
	require.Equal(t, uint64(1), callout.Counts().Granted, "a badly signed request was granted")

	// No reply: dropped; the next request is answered.
	require.NoError(t, forger.PublishMsg(forgedAuthRequest(t, keys.XKey, "garbage", false)))
	require.Eventually(t, func() bool { return callout.Counts().Dropped == 2 }, waitFor, 5*time.Millisecond)
	ans, err = forger.RequestMsg(forgedAuthRequest(t, keys.XKey, "garbage", false), waitFor)
	require.NoError(t, err)
	require.Empty(t, ans.Data)
}
