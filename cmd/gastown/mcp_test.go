package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/mcpserver"
	"github.com/gastown/gastown/schemas"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// mcpTown is a coordinator with town M: rig app, bead b-1 hooked to a
// polecat, and the container's token file, for `gastown mcp` processes.
type mcpTown struct {
	h         *coordinatortest.Harness
	tokenFile string
	polecat   string
	tokens    []string // every token written to the file: none may leak
	logs      []*lockedBuffer
}

func newMCPTown(t *testing.T, cfg coordinator.Config) *mcpTown {
	t.Helper()
	h := coordinatortest.Start(t, cfg)
	m := &mcpTown{h: h, tokenFile: filepath.Join(t.TempDir(), "token")}
	m.admin(t, schemas.AdminTownCreate, schemas.TownCreate{TownID: "M", UserID: "u"}, nil)
	m.admin(t, schemas.AdminRigAdd, schemas.RigAdd{TownID: "M", RigID: "app", GitURL: bareRepo(t), DefaultBranch: "main"}, nil)
	m.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "M", BeadID: "b-1", RigID: "app",
		Title: "Add login", Body: "A login page.\nWith a form for the password."}, nil)
	// No container is connected: the sling hooks a polecat and its
	// dispatch waits (the reply may say so).
	var res schemas.SlingResult
	_ = m.adminErr(schemas.AdminSling, schemas.Sling{TownID: "M", BeadID: "b-1"}, &res)
	require.Eventually(t, func() bool {
		var st struct {
			Agents []coordinator.Agent `json:"agents"`
		}
		if m.adminErr(schemas.AdminStatus, schemas.TownRequest{TownID: "M"}, &st) != nil {
			return false
		}
		for _, a := range st.Agents {
			if a.Role == schemas.RolePolecat && a.Hook == "b-1" {
				m.polecat = a.AgentID
				return true
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, "b-1 is hooked to a polecat")
	m.writeToken(t, m.mint(t, 8*time.Hour))
	return m
}

// mint is a container token of town M's owner.
func (m *mcpTown) mint(t *testing.T, ttl time.Duration) string {
	t.Helper()
	tok, _, err := m.h.Issuer.MintContainer("M", "u", ttl)
	require.NoError(t, err)
	return tok
}

func (m *mcpTown) adminErr(method string, body, out any) error {
	subject, err := schemas.Admin(method)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Call(ctx, m.h.AdminConn(), &nats.Msg{Subject: subject, Data: b}, out)
}

func (m *mcpTown) admin(t *testing.T, method string, body, out any) {
	t.Helper()
	require.NoError(t, m.adminErr(method, body, out), method)
}

// writeToken replaces the token file, as the container does at a rotation.
func (m *mcpTown) writeToken(t *testing.T, tok string) {
	t.Helper()
	m.tokens = append(m.tokens, tok)
	require.NoError(t, agentclient.WriteTokenFile(m.tokenFile, tok))
}

// agentEnv is the environment a container gives an agent.
func (m *mcpTown) agentEnv(role, agentID, rigID string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		agentclient.EnvTownID + "=M", agentclient.EnvRigID + "=" + rigID, agentclient.EnvAgentID + "=" + agentID,
		agentclient.EnvAgentRole + "=" + role, agentclient.EnvRunID + "=", agentclient.EnvNatsURL + "=" + m.h.URL(),
		agentclient.EnvTokenFile + "=" + m.tokenFile,
	}
}

// connect starts `gastown mcp` (debug logs) as role's agent and connects
// to it with the go-sdk client.
func (m *mcpTown) connect(t *testing.T, role, agentID, rigID string, args ...string) *mcp.ClientSession {
	t.Helper()
	logs := &lockedBuffer{}
	m.logs = append(m.logs, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcpserver.Dial(ctx, binary(t), append([]string{"--log-level", "debug"}, args...), m.agentEnv(role, agentID, rigID), logs)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// noLeak checks that no token written to the file is in text.
func (m *mcpTown) noLeak(t *testing.T, text string) {
	t.Helper()
	for _, tok := range m.tokens {
		require.NotContains(t, text, tok, "a token leaked")
	}
	require.NotRegexp(t, jwtPattern, text, "a JWT leaked")
}

// callTool calls a tool, checks its text holds no token, and returns it.
func (m *mcpTown) callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	require.NoError(t, err, name)
	m.noLeak(t, toolText(res))
	b, _ := json.Marshal(res.StructuredContent)
	m.noLeak(t, string(b))
	return res
}

// ok calls a tool that must succeed and decodes its structured result.
func (m *mcpTown) ok(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, out any) string {
	t.Helper()
	res := m.callTool(t, cs, name, args)
	require.False(t, res.IsError, "%s: %s", name, toolText(res))
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		require.NoError(t, json.Unmarshal(b, out), name)
	}
	return toolText(res)
}

// refused calls a tool that must fail with code and returns its text.
func (m *mcpTown) refused(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, code schemas.Code) string {
	t.Helper()
	res := m.callTool(t, cs, name, args)
	require.True(t, res.IsError, "%s must fail: %s", name, toolText(res))
	require.Contains(t, toolText(res), string(code), name)
	var te struct {
		Error struct {
			Code schemas.Code `json:"code"`
		} `json:"error"`
	}
	b, _ := json.Marshal(res.StructuredContent)
	require.NoError(t, json.Unmarshal(b, &te))
	require.Equal(t, code, te.Error.Code, name)
	return toolText(res)
}

func toolText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// listTools is tools/list, by name.
func listTools(t *testing.T, cs *mcp.ClientSession) map[string]*mcp.Tool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.ListTools(ctx, nil)
	require.NoError(t, err)
	out := map[string]*mcp.Tool{}
	for _, tool := range res.Tools {
		out[tool.Name] = tool
	}
	return out
}

// wireFields are each tool's input properties: the JSON names of its
// request type, less what the server fills in (the caller's identity,
// run and town).
var wireFields = map[string][]string{
	schemas.ToolPrime:          {},
	schemas.ToolBeadGet:        {"beadId"},
	schemas.ToolBeadClose:      {"beadId"},
	schemas.ToolDone:           {"branch", "summary", "prUrl"},
	schemas.ToolMailSend:       {"to", "subject", "body"},
	schemas.ToolMailCheck:      {},
	schemas.ToolEscalate:       {"title", "body", "beadId"},
	schemas.ToolCheckpoint:     {"note"},
	schemas.ToolRigsList:       {},
	schemas.ToolBeadsList:      {"status", "type"},
	schemas.ToolAgentsList:     {},
	schemas.ToolSling:          {"beadId", "rigId", "agentId"},
	schemas.ToolBeadUpdate:     {"beadId", "title", "body", "status"},
	schemas.ToolConvoyCreate:   {"title", "beads"},
	schemas.ToolConvoyStatus:   {"beadId"},
	schemas.ToolReviewComplete: {"beadId", "outcome", "note"},
	schemas.ToolTriageResolve:  {"action", "note"},
}

// TestMCPToolsPerRole: tools/list of a real `gastown mcp` process returns
// exactly the tools its role may call (schemas.ToolRoles, the table the
// coordinator enforces; ping aside), each described, with a valid input
// schema whose properties are the request's wire JSON names.
func TestMCPToolsPerRole(t *testing.T) {
	m := newMCPTown(t, coordinator.Config{})
	for _, role := range schemas.Roles {
		t.Run(role, func(t *testing.T) {
			cs := m.connect(t, role, "a-"+role, "app")
			tools := listTools(t, cs)
			require.ElementsMatch(t, schemas.AgentTools(role), slices.Collect(mapsKeys(tools)))
			require.NotContains(t, tools, schemas.ToolPing)
			for name, tool := range tools {
				require.NotEmpty(t, tool.Description, name)
				b, err := json.Marshal(tool.InputSchema)
				require.NoError(t, err)
				var sc jsonschema.Schema
				require.NoError(t, json.Unmarshal(b, &sc), name)
				_, err = sc.Resolve(nil)
				require.NoError(t, err, "%s's schema is a valid JSON Schema", name)
				require.Equal(t, "object", sc.Type, name)
				require.ElementsMatch(t, wireFields[name], slices.Collect(mapsKeys(sc.Properties)), name)
				for p, ps := range sc.Properties {
					require.NotEmpty(t, ps.Description, "%s.%s is described", name, p)
				}
			}
			if f := schemas.FinishingTool(role); f != "" {
				require.Contains(t, tools, f, "the tool that ends its work is listed")
			}
		})
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestMCPCallsReachTheCoordinator: every call of `gastown mcp` reaches a
// real coordinator, and its result or error comes back as the model sees
// it: the polecat primes (its briefing), works and finishes with done; the
// refinery merges with review.complete; the mayor uses its tools; a tool
// the role may not call is not listed and, forced, is refused. No token
// is in any result or log line.
func TestMCPCallsReachTheCoordinator(t *testing.T) {
	m := newMCPTown(t, coordinator.Config{})
	pc := m.connect(t, schemas.RolePolecat, m.polecat, "app")
	branch := schemas.PolecatBranch(m.polecat, "b-1")

	var prime struct {
		Hook struct {
			BeadID string `json:"beadId"`
		} `json:"hook"`
	}
	md := m.ok(t, pc, schemas.ToolPrime, nil, &prime)
	require.Equal(t, "b-1", prime.Hook.BeadID)
	for _, fact := range []string{m.polecat, "polecat", "town **M**", "rig **app**", "b-1", "Add login",
		"> With a form for the password.", "`" + branch + "`", "**`done`**", "escalate", "mail.send", "## Never"} {
		require.Contains(t, md, fact, "the polecat's briefing")
	}

	require.Contains(t, m.ok(t, pc, schemas.ToolBeadGet, map[string]any{"beadId": "b-1"}, nil), `"title": "Add login"`)
	m.refused(t, pc, schemas.ToolBeadGet, map[string]any{"beadId": "nope"}, schemas.CodeNotFound)
	require.Contains(t, m.refused(t, pc, schemas.ToolBeadGet, map[string]any{"id": "b-1"}, schemas.CodeInvalidArgument),
		"input schema", "arguments the schema refuses are a tool error saying so")
	m.ok(t, pc, schemas.ToolCheckpoint, map[string]any{"note": "half way"}, nil)
	m.ok(t, pc, schemas.ToolMailSend, map[string]any{"to": coordinator.MayorID, "subject": "hello", "body": "from the polecat"}, nil)
	var esc struct {
		Type string `json:"type"`
	}
	m.ok(t, pc, schemas.ToolEscalate, map[string]any{"title": "need a hand", "beadId": "b-1"}, &esc)
	require.Equal(t, "escalation", esc.Type)

	// Not listed, and forced through the MCP client: unknown to the server.
	require.NotContains(t, listTools(t, pc), schemas.ToolSling)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	forced, err := pc.CallTool(ctx, &mcp.CallToolParams{Name: schemas.ToolSling, Arguments: map[string]any{"beadId": "b-1"}})
	require.True(t, err != nil || forced.IsError, "a tool the role may not call is refused")
	// An agent whose environment claims another role gets that role's
	// list, and the coordinator, which knows the agent, refuses.
	liar := m.connect(t, schemas.RoleMayor, m.polecat, "app")
	require.Contains(t, m.refused(t, liar, schemas.ToolSling, map[string]any{"beadId": "b-1"}, schemas.CodePermissionDenied),
		"not yours to do", "the tool error says what to do")
	for method, args := range map[string]map[string]any{
		schemas.ToolRigsList: {}, schemas.ToolBeadsList: {}, schemas.ToolAgentsList: {},
		schemas.ToolBeadUpdate: {"beadId": "b-1"}, schemas.ToolConvoyCreate: {"title": "x", "beads": []string{"b-1"}},
		schemas.ToolConvoyStatus: {"beadId": "b-1"},
	} {
		require.False(t, schemas.MayCall(schemas.RolePolecat, method))
		m.refused(t, liar, method, args, schemas.CodePermissionDenied)
	}

	m.ok(t, pc, schemas.ToolDone, map[string]any{"branch": branch, "summary": "added the login page"}, nil)
	m.refused(t, pc, schemas.ToolDone, map[string]any{"branch": branch, "summary": "again"}, schemas.CodeConflict)

	// The refinery's hook is the merge request; its briefing names the
	// branch to merge and review.complete.
	ref := m.connect(t, schemas.RoleRefinery, "app-refinery", "app")
	var rp struct {
		Hook struct {
			BeadID string `json:"beadId"`
			Branch string `json:"branch"`
		} `json:"hook"`
	}
	require.Eventually(t, func() bool {
		res := m.callTool(t, ref, schemas.ToolPrime, nil)
		b, _ := json.Marshal(res.StructuredContent)
		return !res.IsError && json.Unmarshal(b, &rp) == nil && rp.Hook.BeadID != ""
	}, 20*time.Second, 50*time.Millisecond, "the merge request is hooked to the refinery")
	require.Equal(t, branch, rp.Hook.Branch)
	rmd := m.ok(t, ref, schemas.ToolPrime, nil, nil)
	for _, fact := range []string{"refinery", "`" + branch + "`", "**`review.complete`**", rp.Hook.BeadID, "merged", "conflict"} {
		require.Contains(t, rmd, fact, "the refinery's briefing")
	}
	m.refused(t, ref, schemas.ToolReviewComplete, map[string]any{"beadId": rp.Hook.BeadID, "outcome": "shipped"}, schemas.CodeInvalidArgument)
	m.ok(t, ref, schemas.ToolReviewComplete, map[string]any{"beadId": rp.Hook.BeadID, "outcome": "merged", "note": "clean"}, nil)

	mayor := m.connect(t, schemas.RoleMayor, coordinator.MayorID, coordinator.MayorRig)
	var b1 struct {
		Status string `json:"status"`
	}
	m.ok(t, mayor, schemas.ToolBeadGet, map[string]any{"beadId": "b-1"}, &b1)
	require.Equal(t, "closed", b1.Status, "the merged review closed the bead")
	require.Contains(t, m.ok(t, mayor, schemas.ToolMailCheck, nil, nil), "from the polecat")
	require.Contains(t, m.ok(t, mayor, schemas.ToolRigsList, nil, nil), `"rigId": "app"`)
	require.Contains(t, m.ok(t, mayor, schemas.ToolAgentsList, nil, nil), m.polecat)
	require.Contains(t, m.ok(t, mayor, schemas.ToolBeadsList, map[string]any{"type": "escalation"}, nil), "need a hand")
	var convoy struct {
		BeadID string `json:"beadId"`
	}
	m.ok(t, mayor, schemas.ToolConvoyCreate, map[string]any{"title": "Accounts", "beads": []string{"b-1"}}, &convoy)
	require.Contains(t, m.ok(t, mayor, schemas.ToolConvoyStatus, map[string]any{"beadId": convoy.BeadID}, nil), `"tracked": 1`)
	m.ok(t, mayor, schemas.ToolBeadUpdate, map[string]any{"beadId": convoy.BeadID, "title": "Accounts v2"}, nil)
	m.admin(t, schemas.AdminBeadCreate, schemas.BeadCreate{TownID: "M", BeadID: "b-2", RigID: "app", Title: "Add logout"}, nil)
	var slung schemas.SlingResult
	m.ok(t, mayor, schemas.ToolSling, map[string]any{"beadId": "b-2"}, &slung)
	require.Equal(t, "b-2", slung.BeadID)
	require.NotEmpty(t, slung.AgentID, "the mayor's sling hooked a polecat (its dispatch waits for a container)")
	require.Contains(t, m.ok(t, mayor, schemas.ToolPrime, nil, nil), "No tool ends your work")

	// A triage agent the town does not know is refused by the coordinator.
	tri := m.connect(t, schemas.RoleTriage, "t-1", "app")
	m.refused(t, tri, schemas.ToolTriageResolve, map[string]any{"action": "restart"}, schemas.CodePermissionDenied)

	for _, l := range m.logs {
		m.noLeak(t, l.String())
	}
	require.Contains(t, m.logs[0].String(), "tool call", "calls are logged at debug")
}

// TestMCPTokenRotation: a rotation between two calls changes nothing for
// the agent: the second call carries the token file's new token (no
// fresh token asked for), even once the first token has expired. A token
// the coordinator refuses (unauthenticated) is replaced by a fresh one
// and the call retried once, and succeeds.
func TestMCPTokenRotation(t *testing.T) {
	m := newMCPTown(t, coordinator.Config{})
	t1, c1, err := m.h.Issuer.MintContainer("M", "u", 3*time.Second)
	require.NoError(t, err)
	m.writeToken(t, t1)
	var gets atomic.Int64
	town, err := schemas.ForTown("M")
	require.NoError(t, err)
	sub, err := m.h.Conn().Subscribe(town.TokenGet(), func(*nats.Msg) { gets.Add(1) })
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, m.h.Conn().Flush())

	pc := m.connect(t, schemas.RolePolecat, m.polecat, "app")
	m.ok(t, pc, schemas.ToolCheckpoint, map[string]any{"note": "before"}, nil)

	m.writeToken(t, m.mint(t, 8*time.Hour)) // the container's rotation
	require.Eventually(t, func() bool { return time.Now().After(c1.Expires()) }, 20*time.Second, 20*time.Millisecond, "the first token expires")
	m.ok(t, pc, schemas.ToolCheckpoint, map[string]any{"note": "after"}, nil)
	require.Zero(t, gets.Load(), "the second call read the token file: no fresh token was needed")

	// A newer token in the file that the coordinator refuses (signed with
	// another secret): the call is refused once, a fresh token is
	// fetched, the call retried.
	bad, err := jwt.NewWithClaims(jwt.SigningMethodHS256, schemas.NewContainerClaims("M", "u", time.Now(), time.Hour)).
		SignedString([]byte("another-secret-another-secret-another-secret"))
	require.NoError(t, err)
	m.writeToken(t, bad)
	m.ok(t, pc, schemas.ToolCheckpoint, map[string]any{"note": "retried"}, nil)
	require.Equal(t, int64(1), gets.Load(), "unauthenticated: one fresh token, one retry")

	for _, l := range m.logs {
		m.noLeak(t, l.String())
	}
}

// TestMCPErrorsAModelCanActOn: resource_exhausted comes back as a tool
// error with its retry hint (Gastown-Retry-After) and what to do; an
// unreachable bus is unavailable, with the call not made.
func TestMCPErrorsAModelCanActOn(t *testing.T) {
	m := newMCPTown(t, coordinator.Config{Limits: coordinator.Limits{RPCRate: 0.05, RPCBurst: 1}})
	pc := m.connect(t, schemas.RolePolecat, m.polecat, "app", "--call-timeout", "300ms")
	m.ok(t, pc, schemas.ToolMailCheck, nil, nil)
	res := m.callTool(t, pc, schemas.ToolMailCheck, nil)
	require.True(t, res.IsError, toolText(res))
	var te struct {
		Error struct {
			Code         schemas.Code `json:"code"`
			RetryAfterMs int64        `json:"retryAfterMs"`
			Hint         string       `json:"hint"`
		} `json:"error"`
	}
	b, _ := json.Marshal(res.StructuredContent)
	require.NoError(t, json.Unmarshal(b, &te))
	require.Equal(t, schemas.CodeResourceExhausted, te.Error.Code)
	require.Greater(t, te.Error.RetryAfterMs, int64(1000), "the hint is when the next call may come")
	require.Contains(t, toolText(res), "Gastown-Retry-After")
	require.Contains(t, te.Error.Hint, "Wait the time given")

	m.h.Stop()
	down := m.connect(t, schemas.RolePolecat, m.polecat, "app")
	require.Contains(t, m.refused(t, down, schemas.ToolMailCheck, nil, schemas.CodeUnavailable), "not reachable")
}

// TestMCPRefusesABadEnvironment: gastown mcp outside an agent environment
// is a usage error naming what is missing.
func TestMCPRefusesABadEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"no role", map[string]string{}, agentclient.EnvAgentRole},
		{"bad role", map[string]string{agentclient.EnvAgentRole: "king"}, "king"},
		{"no agent", map[string]string{agentclient.EnvAgentRole: "polecat"}, agentclient.EnvAgentID},
		{"no token file", map[string]string{agentclient.EnvAgentRole: "polecat", agentclient.EnvAgentID: "p", agentclient.EnvRigID: "r"}, agentclient.EnvTokenFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.vars, "mcp")
			require.Error(t, err)
			require.Equal(t, 2, exitCode(err))
			require.Contains(t, printed(err), tc.want)
		})
	}
}
