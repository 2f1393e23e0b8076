package schemas_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// fuzzMaxLen bounds the inputs the fuzz targets look at closely, so each
// execution stays fast; size limits have their own unit tests.
const fuzzMaxLen = 64 << 10

// newMessages makes one empty value of every message type.
func newMessages() []schemas.Message {
	return []schemas.Message{
		&schemas.Ack{}, &schemas.TokenRequest{}, &schemas.TokenRotation{}, &schemas.StartAgent{},
		&schemas.StartAgentResult{}, &schemas.StopAgent{}, &schemas.Heartbeat{}, &schemas.TownEvent{},
	}
}

// normalize makes two decodings of the same wire body comparable: an empty
// collection that Encode omits comes back nil, and a time keeps its instant
// but not necessarily its location.
func normalize(m schemas.Message) schemas.Message {
	utc := func(t time.Time) time.Time { return t.UTC() }
	switch m := m.(type) {
	case *schemas.TokenRotation:
		c := *m
		c.IssuedAt, c.ExpiresAt, c.RevokedBefore = utc(c.IssuedAt), utc(c.ExpiresAt), utc(c.RevokedBefore)
		return &c
	case *schemas.StartAgent:
		c := *m
		if len(c.Env) == 0 {
			c.Env = nil
		}
		return &c
	case *schemas.Heartbeat:
		c := *m
		c.SentAt = utc(c.SentAt)
		if c.Agents != nil {
			c.Agents = append([]schemas.AgentBeat{}, c.Agents...)
			for i := range c.Agents {
				c.Agents[i].LastActivityAt = utc(c.Agents[i].LastActivityAt)
			}
		}
		if len(c.Exits) == 0 {
			c.Exits = nil
		} else {
			c.Exits = append([]schemas.AgentExit{}, c.Exits...)
			for i := range c.Exits {
				c.Exits[i].EndedAt = utc(c.Exits[i].EndedAt)
			}
		}
		return &c
	case *schemas.TownEvent:
		c := *m
		c.At = utc(c.At)
		if len(c.Detail) == 0 {
			c.Detail = nil
		}
		return &c
	}
	return m
}

// FuzzDecode feeds arbitrary bytes to Decode for every message type. Decode
// never panics, fails only with ErrInvalidMessage, and whatever it accepts
// re-encodes and decodes again to the same message.
func FuzzDecode(f *testing.F) {
	for _, s := range samples() {
		b, err := schemas.Encode(s.msg)
		require.NoError(f, err)
		f.Add(b)
	}
	for _, seed := range []string{
		``, `null`, `{}`, `[]`, `"x"`, `{"type":"gastown.v1.ack"}`,
		`{"type":"gastown.v1.ack","ok":true,"Type":"gastown.v1.ack","OK":false}`,
		`{"type":"gastown.v1.ack","ok":false,"code":"resource_exhausted","error":"slow down"}`,
		`{"type":"gastown.v1.start_agent","townId":"A","rigId":"r","agentId":"a","runId":"x","role":"triage","workspace":{"kind":"empty"},"env":{}}`,
		`{"type":"gastown.v1.heartbeat","townId":"A","containerId":"c","sentAt":"2025-01-01T00:00:00+02:00","agents":[],"exits":[]}`,
		`{"type":"gastown.v1.town_event","townId":"A","kind":"k","at":"2025-01-01T00:00:00.5-07:30","detail":{"n":1e300,"s":"\u00ff\ud800"}}`,
		`{"type":"gastown.v1.token_rotation","townId":"A","token":"t","issuedAt":"2025-01-01T00:00:00Z","expiresAt":"2025-01-01T00:00:00.000000001Z"}`,
		`{"type":"gastown.v1.stop_agent","agentId":"a","runId":"r","reason":"<&>"}`,
		`{"type":"gastown.v1.token_rotation","townId":"A","token":"t","issuedAt":"2025-01-01T00:00:00Z","expiresAt":"2025-01-01T01:00:00Z","revokedBefore":"2025-01-01T00:00:00+01:00"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m1 := range newMessages() {
			err := schemas.Decode(data, m1)
			if err != nil {
				if !errors.Is(err, schemas.ErrInvalidMessage) {
					t.Fatalf("Decode %s: error not marked invalid message: %v", m1.MessageType(), err)
				}
				if code := schemas.CodeOf(err); code != schemas.CodeInvalidArgument {
					t.Fatalf("Decode %s: code %q", m1.MessageType(), code)
				}
				continue
			}
			if len(data) > fuzzMaxLen {
				continue // HTML escaping may grow a large body past MaxBodySize
			}
			e1, err := schemas.Encode(m1)
			require.NoError(t, err, "re-encoding an accepted %s", m1.MessageType())
			var m2 schemas.Message
			for _, m := range newMessages() {
				if m.MessageType() == m1.MessageType() {
					m2 = m
				}
			}
			require.NoError(t, schemas.Decode(e1, m2), "decoding a re-encoded %s: %s", m1.MessageType(), e1)
			require.Equal(t, normalize(m1), normalize(m2))
			e2, err := schemas.Encode(m2)
			require.NoError(t, err)
			require.Equal(t, string(e1), string(e2), "encoding is stable")
		}
	})
}

// FuzzDecodeReply: no panic; a result is valid JSON that survives a round
// trip; an error is a known code that survives ErrorReply; anything else is
// ErrInvalidReply.
func FuzzDecodeReply(f *testing.F) {
	for _, seed := range []string{
		`{"result":{"a":1}}`, `{"result":null}`, `{"result":"<&>"}`, `{"error":{"code":"not_found","message":"x"}}`,
		`{"error":{"code":"teapot"}}`, `{"error":null,"result":[1,2]}`, `{}`, `null`, `x`, ``, `{"error":{"code":"conflict","message":"\u2028"}}`,
		`{"error":{"code":"resource_exhausted","message":"over the rate"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := schemas.DecodeReply(data)
		var e *schemas.Error
		switch {
		case err == nil:
			require.True(t, json.Valid(res), "result %q", res)
			if len(data) > fuzzMaxLen {
				return
			}
			b, merr := json.Marshal(schemas.Reply{Result: res})
			require.NoError(t, merr)
			res2, err2 := schemas.DecodeReply(b)
			require.NoError(t, err2)
			require.JSONEq(t, string(res), string(res2))
		case errors.As(err, &e):
			require.Nil(t, res)
			require.True(t, e.Code.Known(), "code %q", e.Code)
			_, err2 := schemas.DecodeReply(schemas.ErrorReply(e))
			var e2 *schemas.Error
			require.True(t, errors.As(err2, &e2))
			require.Equal(t, e, e2)
		default:
			require.Nil(t, res)
			require.True(t, errors.Is(err, schemas.ErrInvalidReply), "%v", err)
		}
	})
}

// FuzzPeekContainerClaims: no panic; what it accepts is a valid container
// claim set; what it refuses is ErrInvalidClaims, without the token.
func FuzzPeekContainerClaims(f *testing.F) {
	const secret = "0123456789abcdef0123456789abcdef"
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, c := range []jwt.Claims{
		schemas.NewContainerClaims("A", "", at, 8*time.Hour),
		schemas.NewAgentClaims("A", "r", "a", "", at, time.Hour),
		jwt.MapClaims{"townId": "A", "userId": "u", "scope": "container", "iat": 1, "exp": 1e11},
	} {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
		s, err := tok.SignedString([]byte(secret))
		require.NoError(f, err)
		f.Add(s)
	}
	for _, seed := range []string{"", ".", "..", "...", "a.b.c", "eyJ.eyJ.", b64(`{"alg":"none"}`) + "." + b64(`{"townId":"A","userId":"A","scope":"container","iat":1,"exp":2}`) + "."} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		if len(token) > fuzzMaxLen {
			return
		}
		c, err := schemas.PeekContainerClaims(token)
		if err != nil {
			require.True(t, errors.Is(err, schemas.ErrInvalidClaims), "%v", err)
			require.Equal(t, schemas.ContainerClaims{}, c)
			if len(token) >= 40 && strings.Count(token, ".") == 2 {
				require.NotContains(t, err.Error(), token)
			}
			return
		}
		require.NoError(t, c.Validate())
		require.Equal(t, schemas.ScopeContainer, c.Scope)
		require.NoError(t, schemas.ValidateID("townId", c.TownID))
		require.True(t, c.Expires().After(c.Issued()))
	})
}

// FuzzNumericTime: no panic; an accepted time marshals and reads back to the
// same millisecond; a refused one is ErrInvalidClaims.
func FuzzNumericTime(f *testing.F) {
	for _, seed := range []string{
		"0", "1", "1700000000", "1700000000.123", "1700000000.0005", "1e9", "1E+10", "99999999999.999",
		"1e11", "-0", "-1", "null", `"1"`, "true", "{}", "1e400", "0.1e-400", " 5 ", "NaN", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var n schemas.NumericTime
		if err := n.UnmarshalJSON(data); err != nil {
			require.True(t, errors.Is(err, schemas.ErrInvalidClaims), "%v", err)
			return
		}
		b, err := n.MarshalJSON()
		require.NoError(t, err)
		var back schemas.NumericTime
		require.NoError(t, back.UnmarshalJSON(b), "reading back %s", b)
		require.True(t, back.Equal(n.Time), "%s → %v → %s → %v", data, n.Time, b, back.Time)
		require.Equal(t, n.Truncate(time.Millisecond), n.Time, "kept to the millisecond")
	})
}

// FuzzDecodeResult: the one-pass decoder agrees with DecodeReply followed
// by json.Unmarshal on every input: the same value, or an error of the
// same kind.
func FuzzDecodeResult(f *testing.F) {
	for _, seed := range []string{
		`{"result":{"a":1}}`, `{"result":null}`, `{"result":1,"error":{"code":"conflict","message":"x"}}`,
		`{"result":{"a":1},"trace":"x"}`, `{"result":1}}`, `{"result": 1 }`, `{"result":}`, `{"result":"\ud800"}`,
		`{"error":{"code":"not_found","message":"x"}}`, `{}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got, want any
		err := schemas.DecodeResult(data, &got)
		res, werr := schemas.DecodeReply(data)
		if werr == nil {
			werr = json.Unmarshal(res, &want)
		}
		if werr != nil {
			require.Error(t, err)
			require.Equal(t, schemas.CodeOf(werr), schemas.CodeOf(err), "%v / %v", werr, err)
			require.Equal(t, errors.Is(werr, schemas.ErrInvalidReply), errors.Is(err, schemas.ErrInvalidReply))
			return
		}
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// FuzzReplyRule: a reply subject the reply rule accepts for a town is that
// town's inbox and a literal subject, never another town's, the admin's, a
// wildcard or a prefix; and one accepted for the admin is the admin's.
func FuzzReplyRule(f *testing.F) {
	for _, s := range []string{"_INBOX.gastown.A.x", "_INBOX.gastown.A.*", "_INBOX.gastown.A", "_INBOX.gastown.AB.x",
		"_INBOX.gastown_admin.x", "_INBOX.gastown.A..x", "_INBOX.gastown.A.x y", "_INBOX.gastown.A.>", "gastown.town.A.events", ""} {
		f.Add("A", s)
	}
	f.Fuzz(func(t *testing.T, town, reply string) {
		if schemas.ReplyOfTown(town, reply) {
			prefix := schemas.InboxRoot + "." + town + "."
			if town == "" || !strings.HasPrefix(reply, prefix) || len(reply) == len(prefix) {
				t.Fatalf("accepted %q for town %q", reply, town)
			}
			for _, tok := range strings.Split(reply[len(prefix):], ".") {
				if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
					t.Fatalf("accepted %q for town %q: token %q", reply, town, tok)
				}
			}
			if schemas.IsAdminReply(reply) {
				t.Fatalf("%q is both a town's and the admin's", reply)
			}
		}
		if schemas.IsAdminReply(reply) && !strings.HasPrefix(reply, schemas.AdminInbox+".") {
			t.Fatalf("accepted %q for the admin", reply)
		}
	})
}
