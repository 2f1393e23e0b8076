package mcpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/briefing"
	"github.com/gastown/gastown/schemas"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// enums are the values some properties take, for the model to see.
var enums = map[string]map[string][]any{
	schemas.ToolReviewComplete: {"outcome": {schemas.ReviewMerged, schemas.ReviewConflict, schemas.ReviewFailed}},
	schemas.ToolTriageResolve:  {"action": {schemas.TriageRestart, schemas.TriageFail}},
	schemas.ToolBeadsList: {
		"status": {"open", "in_progress", "in_review", "closed", "failed"},
		"type":   {"issue", "message", "merge_request", "convoy", "escalation"},
	},
	schemas.ToolBeadUpdate: {"status": {"open", "in_progress", "in_review", "closed", "failed"}},
}

// applyEnums sets the values of method's properties that take a few.
func applyEnums(method string, sc *jsonschema.Schema) {
	for name, values := range enums[method] {
		if p, ok := sc.Properties[name]; ok {
			p.Enum = values
		}
	}
}

// call makes one tool call and turns its outcome into a tool result.
func (s *Server) call(ctx context.Context, method string, body any) *mcp.CallToolResult {
	var out json.RawMessage
	err := s.callInto(ctx, method, body, &out)
	if err != nil {
		return s.errorResult(method, err)
	}
	s.log.Debug("tool call", keyTool, method)
	res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: indent(out)}}}
	if len(out) > 0 && out[0] == '{' {
		res.StructuredContent = out
	}
	return res
}

func (s *Server) callInto(ctx context.Context, method string, body, out any) error {
	c, release, err := s.client(ctx)
	if err != nil {
		return err
	}
	defer release()
	// Client.Call reads the token at the call, and on unauthenticated
	// fetches a fresh token once and retries once.
	return c.Call(ctx, method, body, out)
}

// prime is the prime tool: the coordinator's prime rendered as the role's
// briefing, with prime's JSON as the structured result.
func (s *Server) prime(ctx context.Context) *mcp.CallToolResult {
	var raw json.RawMessage
	if err := s.callInto(ctx, schemas.ToolPrime, nil, &raw); err != nil {
		return s.errorResult(schemas.ToolPrime, err)
	}
	var p briefing.Prime
	if err := json.Unmarshal(raw, &p); err != nil {
		return s.errorResult(schemas.ToolPrime, errors.Wrap(err, "decoding prime's result"))
	}
	md, err := briefing.Render(s.town(ctx), p)
	if err != nil {
		return s.errorResult(schemas.ToolPrime, err)
	}
	s.log.Debug("tool call", keyTool, schemas.ToolPrime)
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: md}}, StructuredContent: raw}
}

// toolError is the structured content of a failed call.
type toolError struct {
	Error struct {
		Code         schemas.Code `json:"code"`
		Message      string       `json:"message"`
		RetryAfterMs int64        `json:"retryAfterMs,omitempty"`
		Hint         string       `json:"hint,omitempty"`
	} `json:"error"`
}

// advice is what a model should do about each code.
var advice = map[schemas.Code]string{
	schemas.CodeUnauthenticated: "The container's token was refused even after fetching a fresh one: the town may have been revoked. " +
		"Do not retry; stop and report it.",
	schemas.CodePermissionDenied: "This is not yours to do (another role's tool, or another agent's bead). Do not retry; " +
		"call escalate if it must be done.",
	schemas.CodeInvalidArgument: "Fix the arguments (see the tool's input schema) and call again.",
	schemas.CodeNotFound:        "Check the id (prime shows your hook; bead.get reads a bead) and call again.",
	schemas.CodeConflict:        "The state changed under you: call prime to see where things stand before you retry.",
	schemas.CodeResourceExhausted: "The town is over a rate or a cap. Wait the time given, then call again; " +
		"with no time given, waiting will not help: escalate.",
	schemas.CodeUnavailable: "The coordinator or the bus is not reachable right now. Retry in a few seconds " +
		"(if the message says the call may have been handled, check with prime or bead.get first).",
	schemas.CodeInternal: "The coordinator failed; retry once, then escalate with the correlation id.",
}

// errorResult is err as a tool error (IsError) a model can act on: the
// code, the message, the retry hint, what to do. Error messages never
// hold a token (schemas.Error's rule, and agentclient's).
func (s *Server) errorResult(method string, err error) *mcp.CallToolResult {
	var te toolError
	var e *schemas.Error
	if errors.As(err, &e) {
		te.Error.Code, te.Error.Message = e.Code, e.Message
	} else {
		// Not a reply: the call could not be made or was not answered
		// (the bus lost, the call's time up), or the agent's environment
		// is broken (its token file unreadable).
		te.Error.Code, te.Error.Message = schemas.CodeUnavailable, err.Error()
		if c := schemas.CodeOf(err); c != schemas.CodeInternal {
			te.Error.Code = c
		}
	}
	if wait := schemas.RetryAfterOf(err); wait > 0 {
		te.Error.RetryAfterMs = int64((wait + time.Millisecond - 1) / time.Millisecond) // rounded up: never 0
	}
	hints := errors.FlattenHints(err)
	te.Error.Hint = strings.TrimSpace(strings.Join([]string{advice[te.Error.Code], hints}, " "))
	s.log.Info("tool call refused", keyTool, method, keyCode, string(te.Error.Code))

	var b strings.Builder
	fmt.Fprintf(&b, "%s failed: %s: %s", method, te.Error.Code, te.Error.Message)
	if te.Error.RetryAfterMs > 0 {
		fmt.Fprintf(&b, "\nRetry after %d ms (Gastown-Retry-After).", te.Error.RetryAfterMs)
	}
	if te.Error.Hint != "" {
		b.WriteString("\n" + te.Error.Hint)
	}
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: b.String()}}, StructuredContent: te}
}

// indent is a JSON result, indented for a model to read.
func indent(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	return jsonText(v)
}
