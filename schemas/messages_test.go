package schemas_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/stretchr/testify/require"
)

var (
	t0 = time.Date(2025, 3, 4, 5, 6, 7, 8_000_000, time.UTC)
	t1 = t0.Add(8 * time.Hour)
)

// sample is one valid message of a type, the fields its wire form must
// carry, and a fresh empty value to decode into.
type sample struct {
	name   string
	typ    string
	msg    schemas.Message
	fields []string // every top-level key on the wire, `type` included
	empty  func() schemas.Message
}

func samples() []sample {
	return []sample{
		{
			name: "Ack", typ: "gastown.v1.ack",
			msg:    &schemas.Ack{OK: false, Error: "busy"},
			fields: []string{"type", "ok", "error"},
			empty:  func() schemas.Message { return &schemas.Ack{} },
		},
		{
			name: "AckWithCode", typ: "gastown.v1.ack",
			msg:    &schemas.Ack{OK: false, Code: schemas.CodeResourceExhausted, Error: "town A is over its token.get rate"},
			fields: []string{"type", "ok", "code", "error"},
			empty:  func() schemas.Message { return &schemas.Ack{} },
		},
		{
			name: "TokenRequest", typ: "gastown.v1.token_request",
			msg:    &schemas.TokenRequest{TownID: "A", ContainerID: "c-1"},
			fields: []string{"type", "townId", "containerId"},
			empty:  func() schemas.Message { return &schemas.TokenRequest{} },
		},
		{
			name: "TokenRotation", typ: "gastown.v1.token_rotation",
			msg:    &schemas.TokenRotation{TownID: "A", Token: "eyJhbGciOi.x.y", IssuedAt: t0, ExpiresAt: t1},
			fields: []string{"type", "townId", "token", "issuedAt", "expiresAt"},
			empty:  func() schemas.Message { return &schemas.TokenRotation{} },
		},
		{
			name: "TokenRotationAfterRevocation", typ: "gastown.v1.token_rotation",
			msg:    &schemas.TokenRotation{TownID: "A", Token: "eyJhbGciOi.x.y", IssuedAt: t0, ExpiresAt: t1, RevokedBefore: t0},
			fields: []string{"type", "townId", "token", "issuedAt", "expiresAt", "revokedBefore"},
			empty:  func() schemas.Message { return &schemas.TokenRotation{} },
		},
		{
			name: "StartAgent", typ: "gastown.v1.start_agent",
			msg: &schemas.StartAgent{
				TownID: "A", RigID: "r1", AgentID: "polecat-1", RunID: "run-1", Role: schemas.RolePolecat,
				BeadID: "b-1", Prompt: "fix the bug",
				Workspace: schemas.Workspace{Kind: schemas.WorkspaceGit, GitURL: "https://example.com/r.git", Branch: "b", DefaultBranch: "main"},
				Env:       map[string]string{"FOO": "bar"},
			},
			fields: []string{"type", "townId", "rigId", "agentId", "runId", "role", "beadId", "prompt", "workspace", "env"},
			empty:  func() schemas.Message { return &schemas.StartAgent{} },
		},
		{
			name: "StartAgentResult", typ: "gastown.v1.start_agent_result",
			msg:    &schemas.StartAgentResult{OK: false, AgentID: "polecat-1", RunID: "run-1", Error: "no git"},
			fields: []string{"type", "ok", "agentId", "runId", "error"},
			empty:  func() schemas.Message { return &schemas.StartAgentResult{} },
		},
		{
			name: "StopAgent", typ: "gastown.v1.stop_agent",
			msg:    &schemas.StopAgent{AgentID: "polecat-1", RunID: "run-1", Reason: "dead"},
			fields: []string{"type", "agentId", "runId", "reason"},
			empty:  func() schemas.Message { return &schemas.StopAgent{} },
		},
		{
			name: "Heartbeat", typ: "gastown.v1.heartbeat",
			msg: &schemas.Heartbeat{
				TownID: "A", ContainerID: "c-1", SentAt: t0,
				Agents: []schemas.AgentBeat{{AgentID: "polecat-1", RunID: "run-2", Status: schemas.RunRunning, LastActivityAt: t0}},
				Exits:  []schemas.AgentExit{{AgentID: "polecat-1", RunID: "run-1", ExitCode: 137, EndedAt: t0}},
			},
			fields: []string{"type", "townId", "containerId", "sentAt", "agents", "exits"},
			empty:  func() schemas.Message { return &schemas.Heartbeat{} },
		},
		{
			name: "TownEvent", typ: "gastown.v1.town_event",
			msg: &schemas.TownEvent{
				TownID: "A", Kind: schemas.EventAgentDead, At: t0, Subject: "polecat-1",
				Detail: map[string]any{"runId": "run-1", "missed": float64(3), "nested": map[string]any{"a": []any{true, nil}}},
			},
			fields: []string{"type", "townId", "kind", "at", "subject", "detail"},
			empty:  func() schemas.Message { return &schemas.TownEvent{} },
		},
	}
}

func keys(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestMessageRoundTrip(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			require.Equal(t, s.typ, s.msg.MessageType())
			b, err := schemas.Encode(s.msg)
			require.NoError(t, err)

			wire := keys(t, b)
			require.Equal(t, s.typ, wire["type"])
			got := make([]string, 0, len(wire))
			for k := range wire {
				got = append(got, k)
			}
			require.ElementsMatch(t, s.fields, got, "camelCase field names on the wire: %s", b)

			out := s.empty()
			require.NoError(t, schemas.Decode(b, out))
			require.Equal(t, s.msg, out)
		})
	}
}

// TestWireShapes pins nested field names and the time format.
func TestWireShapes(t *testing.T) {
	byName := map[string]sample{}
	for _, s := range samples() {
		byName[s.name] = s
	}
	encode := func(name string) map[string]any {
		b, err := schemas.Encode(byName[name].msg)
		require.NoError(t, err)
		return keys(t, b)
	}

	t.Run("times are RFC 3339 in UTC", func(t *testing.T) {
		w := encode("TokenRotation")
		require.Equal(t, "2025-03-04T05:06:07.008Z", w["issuedAt"])
		require.Equal(t, "2025-03-04T13:06:07.008Z", w["expiresAt"])
	})
	t.Run("workspace", func(t *testing.T) {
		w := encode("StartAgent")
		require.Equal(t, map[string]any{
			"kind": "git", "gitUrl": "https://example.com/r.git", "branch": "b", "defaultBranch": "main",
		}, w["workspace"])
		require.Equal(t, map[string]any{"FOO": "bar"}, w["env"])
	})
	t.Run("heartbeat lines", func(t *testing.T) {
		w := encode("Heartbeat")
		require.Equal(t, []any{map[string]any{
			"agentId": "polecat-1", "runId": "run-2", "status": "running", "lastActivityAt": "2025-03-04T05:06:07.008Z",
		}}, w["agents"])
		require.Equal(t, []any{map[string]any{
			"agentId": "polecat-1", "runId": "run-1", "exitCode": float64(137), "endedAt": "2025-03-04T05:06:07.008Z",
		}}, w["exits"])
	})
	t.Run("ok ack has no error", func(t *testing.T) {
		b, err := schemas.Encode(&schemas.Ack{OK: true})
		require.NoError(t, err)
		require.JSONEq(t, `{"type":"gastown.v1.ack","ok":true}`, string(b))
	})
	t.Run("encode stamps the type", func(t *testing.T) {
		m := &schemas.StopAgent{Type: "something else", AgentID: "a", RunID: "r"}
		b, err := schemas.Encode(m)
		require.NoError(t, err)
		require.Equal(t, "gastown.v1.stop_agent", keys(t, b)["type"])
	})
}

// TestDecodeReadsForeignBodies decodes bodies written by hand, as another
// implementation of PROTOCOL.md would send them.
func TestDecodeReadsForeignBodies(t *testing.T) {
	var hb schemas.Heartbeat
	require.NoError(t, schemas.Decode([]byte(`{
		"type": "gastown.v1.heartbeat", "townId": "A", "containerId": "c",
		"sentAt": "2025-03-04T05:06:07Z",
		"agents": [{"agentId": "a", "runId": "r", "status": "starting", "lastActivityAt": "2025-03-04T05:06:00Z"}],
		"exits": [{"agentId": "b", "runId": "r0", "exitCode": 1, "endedAt": "2025-03-04T05:05:00Z"}]
	}`), &hb))
	require.Equal(t, "A", hb.TownID)
	require.Equal(t, "c", hb.ContainerID)
	require.True(t, hb.SentAt.Equal(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)))
	require.Equal(t, []schemas.AgentBeat{{AgentID: "a", RunID: "r", Status: "starting", LastActivityAt: time.Date(2025, 3, 4, 5, 6, 0, 0, time.UTC)}}, hb.Agents)
	require.Equal(t, []schemas.AgentExit{{AgentID: "b", RunID: "r0", ExitCode: 1, EndedAt: time.Date(2025, 3, 4, 5, 5, 0, 0, time.UTC)}}, hb.Exits)

	var sa schemas.StartAgent
	require.NoError(t, schemas.Decode([]byte(`{"type":"gastown.v1.start_agent","townId":"A","rigId":"r","agentId":"m",
		"runId":"x","role":"mayor","beadId":"","prompt":"","workspace":{"kind":"empty"}}`), &sa))
	require.Equal(t, schemas.RoleMayor, sa.Role)
	require.Empty(t, sa.BeadID, "beadId may be empty")
	require.Equal(t, schemas.WorkspaceEmpty, sa.Workspace.Kind)
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			b, err := schemas.Encode(s.msg)
			require.NoError(t, err)
			var m map[string]any
			require.NoError(t, json.Unmarshal(b, &m))
			m["futureField"] = map[string]any{"x": []any{1, "two"}}
			m["anotherOne"] = 42
			b, err = json.Marshal(m)
			require.NoError(t, err)

			out := s.empty()
			require.NoError(t, schemas.Decode(b, out))
			require.Equal(t, s.msg, out)
		})
	}
}

// withField returns the sample's wire body with one top-level field set
// (or deleted when value is the deleteField marker).
type deleteField struct{}

func withField(t *testing.T, s sample, field string, value any) []byte {
	t.Helper()
	b, err := schemas.Encode(s.msg)
	require.NoError(t, err)
	m := keys(t, b)
	if _, ok := value.(deleteField); ok {
		delete(m, field)
	} else {
		m[field] = value
	}
	b, err = json.Marshal(m)
	require.NoError(t, err)
	return b
}

func TestDecodeRefuses(t *testing.T) {
	byName := map[string]sample{}
	for _, s := range samples() {
		byName[s.name] = s
	}
	del := deleteField{}
	type badCase struct {
		name  string
		msg   string // sample name
		body  func(t *testing.T) []byte
		badID bool // the error is also ErrInvalidID
	}
	field := func(msg, f string, v any, badID bool) badCase {
		return badCase{
			name: fmt.Sprintf("%s %s=%v", msg, f, v), msg: msg, badID: badID,
			body: func(t *testing.T) []byte { return withField(t, byName[msg], f, v) },
		}
	}
	raw := func(name, msg, body string) badCase {
		return badCase{name: name, msg: msg, body: func(*testing.T) []byte { return []byte(body) }}
	}
	cases := []badCase{
		// Not JSON, or not an object of the right type.
		raw("empty body", "Ack", ""),
		raw("not json", "Ack", "hello"),
		raw("truncated json", "Ack", `{"type":"gastown.v1.ack","ok":tr`),
		raw("json array", "Ack", `[1,2]`),
		raw("json null", "Ack", `null`),
		raw("json string", "Ack", `"gastown.v1.ack"`),
		raw("trailing garbage", "Ack", `{"type":"gastown.v1.ack","ok":true} x`),
		raw("type is a number", "Ack", `{"type":1,"ok":true}`),
		raw("no type", "Ack", `{"ok":true}`),
		field("Ack", "type", "gastown.v2.ack", false),
		field("TokenRequest", "type", schemas.TypeTokenRotation, false),
		field("Heartbeat", "type", "", false),
		field("StartAgent", "type", del, false),
		raw("field of the wrong type", "Ack", `{"type":"gastown.v1.ack","ok":"yes"}`),
		// Missing required fields.
		field("Ack", "error", del, false), // ok is false
		raw("ack with an unknown code", "Ack", `{"type":"gastown.v1.ack","ok":false,"code":"teapot","error":"x"}`),
		raw("ok ack with a code", "Ack", `{"type":"gastown.v1.ack","ok":true,"code":"conflict"}`),
		field("TokenRequest", "townId", del, true),
		field("TokenRequest", "containerId", del, false),
		field("TokenRotation", "townId", del, true),
		field("TokenRotation", "token", del, false),
		field("TokenRotation", "issuedAt", del, false),
		field("TokenRotation", "expiresAt", del, false),
		field("TokenRotation", "expiresAt", "2025-03-04T05:06:07.008Z", false), // not after issuedAt
		field("TokenRotation", "issuedAt", "yesterday", false),
		field("StartAgent", "townId", del, true),
		field("StartAgent", "rigId", del, true),
		field("StartAgent", "agentId", del, true),
		field("StartAgent", "runId", del, true),
		field("StartAgent", "role", del, false),
		field("StartAgent", "role", "king", false),
		field("StartAgent", "workspace", del, false),
		field("StartAgent", "workspace", map[string]any{"kind": "git"}, false),
		field("StartAgent", "workspace", map[string]any{"kind": "svn", "gitUrl": "x"}, false),
		field("StartAgentResult", "agentId", del, true),
		field("StartAgentResult", "runId", del, true),
		field("StartAgentResult", "error", del, false), // ok is false
		field("StopAgent", "agentId", del, true),
		field("StopAgent", "runId", del, true),
		field("Heartbeat", "townId", del, true),
		field("Heartbeat", "containerId", del, false),
		field("Heartbeat", "sentAt", del, false),
		field("Heartbeat", "agents", []any{map[string]any{"agentId": "a", "runId": "r", "status": "sleeping"}}, false),
		field("Heartbeat", "agents", []any{map[string]any{"runId": "r", "status": "running"}}, true),
		field("Heartbeat", "exits", []any{map[string]any{"agentId": "a", "exitCode": 1}}, true),
		field("TownEvent", "townId", del, true),
		field("TownEvent", "kind", del, false),
		field("TownEvent", "at", del, false),
		// Bad identifiers.
		field("TokenRequest", "townId", "a.b", true),
		field("TokenRotation", "townId", "*", true),
		field("StartAgent", "rigId", ">", true),
		field("StartAgent", "agentId", "a b", true),
		field("StartAgent", "runId", strings.Repeat("r", 65), true),
		field("StartAgent", "beadId", "bead.1", true),
		field("StartAgentResult", "runId", "ü", true),
		field("StopAgent", "agentId", "a\nb", true),
		field("Heartbeat", "townId", "A.>", true),
		field("TownEvent", "townId", "", true),
		// Too big.
		field("StartAgent", "prompt", strings.Repeat("x", schemas.MaxBodySize), false),
		field("TownEvent", "padding", strings.Repeat(" ", schemas.MaxBodySize), false), // unknown, but too big
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := byName[tc.msg].empty()
			err := schemas.Decode(tc.body(t), out)
			require.Error(t, err)
			require.True(t, errors.Is(err, schemas.ErrInvalidMessage), "%v", err)
			require.Equal(t, tc.badID, errors.Is(err, schemas.ErrInvalidID), "%v", err)
			require.Equal(t, schemas.CodeInvalidArgument, schemas.CodeOf(err))
		})
	}
}

func TestDecodeAcceptsExactlyMaxBodySize(t *testing.T) {
	head := `{"type":"gastown.v1.ack","ok":true,"pad":"`
	tail := `"}`
	body := head + strings.Repeat("x", schemas.MaxBodySize-len(head)-len(tail)) + tail
	require.Len(t, body, schemas.MaxBodySize)
	require.NoError(t, schemas.Decode([]byte(body), &schemas.Ack{}))
	require.Error(t, schemas.Decode([]byte(body+" "), &schemas.Ack{}))
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  schemas.Message
	}{
		{"ack not ok without error", &schemas.Ack{}},
		{"token request without town", &schemas.TokenRequest{ContainerID: "c"}},
		{"rotation without token", &schemas.TokenRotation{TownID: "A", IssuedAt: t0, ExpiresAt: t1}},
		{"start agent with bad town", &schemas.StartAgent{TownID: "a.b", RigID: "r", AgentID: "a", RunID: "x", Role: "mayor", Workspace: schemas.Workspace{Kind: "empty"}}},
		{"heartbeat without sentAt", &schemas.Heartbeat{TownID: "A", ContainerID: "c"}},
		{"oversized prompt", &schemas.StartAgent{
			TownID: "A", RigID: "r", AgentID: "a", RunID: "x", Role: "mayor",
			Workspace: schemas.Workspace{Kind: "empty"}, Prompt: strings.Repeat("x", schemas.MaxBodySize),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := schemas.Encode(tc.msg)
			require.True(t, errors.Is(err, schemas.ErrInvalidMessage), "%v", err)
			require.Equal(t, schemas.CodeInvalidArgument, schemas.CodeOf(err))
			require.Nil(t, b)
		})
	}
}

func TestValidateRole(t *testing.T) {
	for _, r := range []string{"mayor", "polecat", "refinery", "triage"} {
		t.Run(r, func(t *testing.T) { require.NoError(t, schemas.ValidateRole(r)) })
	}
	for _, r := range []string{"", "Mayor", "admin", "polecat "} {
		t.Run("bad "+r, func(t *testing.T) {
			require.True(t, errors.Is(schemas.ValidateRole(r), schemas.ErrInvalidMessage))
		})
	}
}

func TestTokenRotationNeverPrintsItsToken(t *testing.T) {
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJ0b3duSWQiOiJBIn0.c2VjcmV0LXNpZ25hdHVyZQ"
	rot := schemas.TokenRotation{Type: schemas.TypeTokenRotation, TownID: "A", Token: token, IssuedAt: t0, ExpiresAt: t1}
	for _, tc := range []struct {
		name string
		got  string
	}{
		{"String", rot.String()},
		{"%v", fmt.Sprintf("%v", rot)},
		{"%+v", fmt.Sprintf("%+v", rot)},
		{"%s", fmt.Sprintf("%s", rot)},
		{"pointer %v", fmt.Sprintf("%v", &rot)},
		{"pointer %+v", fmt.Sprintf("%+v", &rot)},
		{"in a slice", fmt.Sprintf("%v", []schemas.TokenRotation{rot})},
		{"in a struct", fmt.Sprintf("%+v", struct{ R schemas.TokenRotation }{rot})},
		{"wrapped in an error", errors.Wrapf(errors.New("x"), "sending %s", rot).Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NotContains(t, tc.got, token)
			require.NotContains(t, tc.got, "c2VjcmV0LXNpZ25hdHVyZQ")
			require.Contains(t, tc.got, "A", "it still says which town")
		})
	}
	require.Contains(t, rot.String(), "2025-03-04T13:06:07Z")
}
