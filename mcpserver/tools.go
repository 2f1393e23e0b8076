package mcpserver

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// toolDef is one coordinator tool as the MCP server offers it.
type toolDef struct {
	method string
	desc   string
	// schema derives the input schema from the method's request type.
	schema func() (*jsonschema.Schema, error)
	// handle makes the call with arguments args, valid against in.
	handle func(ctx context.Context, s *Server, in *jsonschema.Resolved, args json.RawMessage) *mcp.CallToolResult
}

// noBody is the input of tools that take no arguments.
type noBody struct{}

// define makes the toolDef of method, whose request type is In. fields
// describes In's properties for a model (every name must be one of In's
// JSON fields); hidden are the properties the server fills itself (the
// caller's identity, its run, its town), left out of the schema. fill,
// when not nil, sets them.
func define[In any](method, desc string, fields map[string]string, hidden []string, fill func(s *Server, town string, in *In)) toolDef {
	return toolDef{
		method: method,
		desc:   desc,
		schema: func() (*jsonschema.Schema, error) { return inputSchema[In](fields, hidden) },
		handle: func(ctx context.Context, s *Server, schema *jsonschema.Resolved, args json.RawMessage) *mcp.CallToolResult {
			in, err := decodeArgs[In](schema, args)
			if err != nil {
				return s.errorResult(method, err)
			}
			if fill != nil {
				fill(s, s.town(ctx), &in)
			}
			return s.call(ctx, method, in)
		},
	}
}

// decodeArgs checks a call's arguments against the tool's schema and
// decodes them: what does not fit is invalid_argument, saying why.
func decodeArgs[In any](schema *jsonschema.Resolved, args json.RawMessage) (In, error) {
	var in In
	if len(args) == 0 || string(args) == "null" {
		args = json.RawMessage("{}")
	}
	var v any
	if err := json.Unmarshal(args, &v); err != nil {
		return in, schemas.NewError(schemas.CodeInvalidArgument, "the arguments are not JSON")
	}
	if _, ok := v.(map[string]any); !ok {
		return in, schemas.NewError(schemas.CodeInvalidArgument, "the arguments must be a JSON object")
	}
	if err := schema.Validate(v); err != nil {
		return in, schemas.NewError(schemas.CodeInvalidArgument, "the arguments do not fit the tool's input schema: %v", err)
	}
	if err := json.Unmarshal(args, &in); err != nil {
		return in, schemas.NewError(schemas.CodeInvalidArgument, "the arguments do not fit the tool's input schema: %v", err)
	}
	return in, nil
}

// inputSchema is In's JSON Schema (its JSON field names, as the wire
// has them), without the hidden properties, with each property
// described.
func inputSchema[In any](fields map[string]string, hidden []string) (*jsonschema.Schema, error) {
	sc, err := jsonschema.For[In](nil)
	if err != nil {
		return nil, errors.Wrap(err, "deriving the input schema")
	}
	for _, h := range hidden {
		if _, ok := sc.Properties[h]; !ok {
			return nil, errors.Newf("hidden property %q is not a field of the request type", h)
		}
		delete(sc.Properties, h)
		sc.Required = slices.DeleteFunc(sc.Required, func(r string) bool { return r == h })
	}
	for name, d := range fields {
		p, ok := sc.Properties[name]
		if !ok {
			return nil, errors.Newf("described property %q is not a field of the request type", name)
		}
		p.Description = d
	}
	for name, p := range sc.Properties {
		if p.Description == "" {
			return nil, errors.Newf("property %q has no description", name)
		}
	}
	return sc, nil
}

// The fills. A run is named (GASTOWN_RUN_ID) so that a run the
// coordinator gave up on cannot finish the work of the one that replaced
// it; the identity fields are the caller's, so left out; sling's town is
// the caller's, which its request must name.
func fillDone(s *Server, _ string, in *schemas.DoneRequest)      { in.AgentID, in.RunID = "", s.runID }
func fillReview(s *Server, _ string, in *schemas.ReviewComplete) { in.RunID = s.runID }
func fillSling(_ *Server, town string, in *schemas.Sling)        { in.TownID = town }
func fillMail(_ *Server, _ string, in *schemas.MailSend)         { in.From = "" }
func fillCheckpoint(_ *Server, _ string, in *schemas.Checkpoint) { in.AgentID = "" }

// catalog is every tool an agent may be offered, by method. ping is left
// out: it proves a token, which is the container's business, not a
// model's.
var catalog = map[string]toolDef{
	schemas.ToolPrime: {
		method: schemas.ToolPrime,
		desc: "Your briefing, as markdown: who you are (agent, role, town, rig), the bead on your hook with its full text, " +
			"the branch to work on, the tools you have and the one that ends your work, how to ask for help, and what you must never do. " +
			"Call it first, and again whenever you are unsure what to do next.",
		schema: func() (*jsonschema.Schema, error) { return inputSchema[noBody](nil, nil) },
		handle: func(ctx context.Context, s *Server, schema *jsonschema.Resolved, args json.RawMessage) *mcp.CallToolResult {
			if _, err := decodeArgs[noBody](schema, args); err != nil {
				return s.errorResult(schemas.ToolPrime, err)
			}
			return s.prime(ctx)
		},
	},
	schemas.ToolBeadGet: define[schemas.BeadRef](schemas.ToolBeadGet,
		"Read one bead (an issue, a mail message, a merge request, a convoy or an escalation) of your town by its id: "+
			"its type, status, title, body and links. Returns the bead as JSON.",
		map[string]string{"beadId": "The bead's id, e.g. the id on your hook or one named in a mail."}, nil, nil),
	schemas.ToolBeadClose: define[schemas.BeadRef](schemas.ToolBeadClose,
		"Close a bead on your hook that needs no merge (for work that is finished without a branch). "+
			"A polecat whose work is on a branch calls done instead.",
		map[string]string{"beadId": "The id of the bead on your hook."}, nil, nil),
	schemas.ToolDone: define[schemas.DoneRequest](schemas.ToolDone,
		"Finish your work on the bead on your hook: call it once, after your commits are pushed to your branch. "+
			"It creates a merge request for the refinery, moves the bead to in_review and frees you; your run then ends.",
		map[string]string{
			"branch":  "The branch you pushed your work to: the one your briefing (prime) names.",
			"summary": "What you changed and why, in a few sentences, for the reviewer.",
			"prUrl":   "The URL of a pull request, if you opened one.",
		}, []string{"agentId", "runId"}, fillDone),
	schemas.ToolMailSend: define[schemas.MailSend](schemas.ToolMailSend,
		"Send a mail message to another agent of your town (e.g. the mayor). The recipient reads it with mail.check.",
		map[string]string{
			"to":      "The recipient's agent id (e.g. mayor).",
			"subject": "One line saying what the message is about.",
			"body":    "The message itself.",
		}, []string{"from"}, fillMail),
	schemas.ToolMailCheck: define[noBody](schemas.ToolMailCheck,
		"Read your unread mail, oldest first; what it returns is marked read. Returns a JSON array of message beads (from, title, body).",
		nil, nil, nil),
	schemas.ToolEscalate: define[schemas.Escalate](schemas.ToolEscalate,
		"Ask for help: raise an escalation the mayor sees. Use it when you are blocked, the task is unclear or impossible as written, "+
			"or a tool refuses something you need done. Say what you tried.",
		map[string]string{
			"title":  "One line: what is wrong.",
			"body":   "The details: what you tried, what you saw, what you need.",
			"beadId": "The bead this is about, usually the one on your hook.",
		}, nil, nil),
	schemas.ToolCheckpoint: define[schemas.Checkpoint](schemas.ToolCheckpoint,
		"Record a short progress note on yourself, so that whoever looks (or a restarted run of you) knows where the work stands.",
		map[string]string{"note": "Where the work stands, in a sentence or two."}, []string{"agentId"}, fillCheckpoint),
	schemas.ToolRigsList: define[noBody](schemas.ToolRigsList,
		"List the rigs (git repositories) of your town's owner: each rig's id, git URL and default branch.", nil, nil, nil),
	schemas.ToolBeadsList: define[schemas.BeadsList](schemas.ToolBeadsList,
		"List your town's beads, oldest first, optionally filtered by status and type.",
		map[string]string{
			"status": "Only beads with this status: open, in_progress, in_review, closed or failed.",
			"type":   "Only beads of this type: issue, message, merge_request, convoy or escalation.",
		}, nil, nil),
	schemas.ToolAgentsList: define[noBody](schemas.ToolAgentsList,
		"List your town's agents: id, role, rig, status (idle, working, stalled, dead) and the bead on each one's hook.", nil, nil, nil),
	schemas.ToolSling: define[schemas.Sling](schemas.ToolSling,
		"Hand a bead to a polecat: hook it to an idle polecat of its rig (or a new one) and dispatch it. Returns the polecat chosen "+
			"and whether it was dispatched yet (if not, it is retried).",
		map[string]string{
			"beadId":  "The id of the bead to work on.",
			"rigId":   "The rig to work in, when the bead names none.",
			"agentId": "A particular polecat to hook it to; leave it out to let the town choose.",
		}, []string{"townId"}, fillSling),
	schemas.ToolBeadUpdate: define[schemas.BeadUpdate](schemas.ToolBeadUpdate,
		"Change a bead's title, body or status. Closing a bead (status closed) also lands its convoy when it was the last one.",
		map[string]string{
			"beadId": "The id of the bead to change.",
			"title":  "The new title; leave it out to keep the old one.",
			"body":   "The new body; leave it out to keep the old one.",
			"status": "The new status: open, in_progress, in_review, closed or failed; leave it out to keep it.",
		}, nil, nil),
	schemas.ToolConvoyCreate: define[schemas.ConvoyCreate](schemas.ToolConvoyCreate,
		"Create a convoy: a group of beads that lands when every one of them is closed. Returns the convoy bead.",
		map[string]string{
			"title": "What the convoy delivers, in one line.",
			"beads": "The ids of the beads it tracks (at least one).",
		}, nil, nil),
	schemas.ToolConvoyStatus: define[schemas.BeadRef](schemas.ToolConvoyStatus,
		"A convoy's progress: how many beads it tracks, how many are closed, which are still open, and whether it landed.",
		map[string]string{"beadId": "The convoy's bead id."}, nil, nil),
	schemas.ToolReviewComplete: define[schemas.ReviewComplete](schemas.ToolReviewComplete,
		"Finish your review of the merge request on your hook: call it once, after you merged and pushed (merged), or gave up "+
			"(conflict, failed). merged closes the source bead; conflict and failed send the work back to a polecat.",
		map[string]string{
			"beadId":  "The merge request's bead id (the bead on your hook).",
			"outcome": "merged, conflict or failed.",
			"note":    "What you did, or why it did not merge.",
		}, []string{"runId"}, fillReview),
	schemas.ToolTriageResolve: define[schemas.TriageResolve](schemas.ToolTriageResolve,
		"Finish your triage of the crash-looping agent on your hook: restart clears its failures and dispatches it again; "+
			"fail fails its bead and unhooks it.",
		map[string]string{
			"action": "restart or fail.",
			"note":   "Why.",
		}, nil, nil),
}

// toolsFor is the MCP tools an agent of role is offered: every method
// schemas.ToolRoles lets it call, less ping (schemas.AgentTools).
func toolsFor(role string) []toolDef {
	var out []toolDef
	for _, m := range schemas.AgentTools(role) {
		if d, ok := catalog[m]; ok {
			out = append(out, d)
		}
	}
	return out
}

// jsonText is v as indented JSON text.
func jsonText(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "{}"
	}
	return string(b)
}
