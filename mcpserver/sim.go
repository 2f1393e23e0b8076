package mcpserver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient/sim"
	"github.com/gastown/gastown/briefing"
	"github.com/gastown/gastown/schemas"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// SimConfig configures the simulated agent's MCP path.
type SimConfig struct {
	// Work is how long the agent "works" before it reports.
	Work time.Duration
	// Dir is the agent's workspace.
	Dir    string
	Logger *slog.Logger
}

// Dial starts `<bin> mcp <args>` as a child process with env (the agent's
// own environment) and its stderr to stderr (when not nil), and connects
// to it as an MCP client, as a coding agent's CLI does. Closing the
// session stops the child.
func Dial(ctx context.Context, bin string, args, env []string, stderr io.Writer) (*mcp.ClientSession, error) {
	cmd := exec.Command(bin, append([]string{"mcp"}, args...)...)
	cmd.Env = env
	cmd.Stderr = stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "gastown-sim", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, errors.Wrapf(err, "starting %s mcp", bin)
	}
	return cs, nil
}

// CallTool calls a tool through cs and decodes its structured result into
// out (when not nil); a tool error comes back as an error with the text
// the server gave the model.
func CallTool(ctx context.Context, cs *mcp.ClientSession, name string, args map[string]any, out any) error {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return errors.Wrapf(err, "calling %s", name)
	}
	if res.IsError {
		return errors.Newf("%s", resultText(res))
	}
	if out == nil {
		return nil
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return errors.Wrapf(err, "reading %s's result", name)
	}
	return errors.Wrapf(json.Unmarshal(b, out), "decoding %s's result", name)
}

// resultText joins a result's text content.
func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// RunSim is the simulated agent (sim.Run's behaviour, from agentclient/sim) doing
// all its calls through an MCP session with `gastown mcp`, as a real
// coding agent would: it reads its briefing (prime), works a while, and
// finishes with its role's tool — a polecat commits and pushes its branch
// and calls done; a refinery merges the branch on its hook and calls
// review.complete; a triage agent restarts the agent it triages; a mayor
// waits until it is stopped.
func RunSim(ctx context.Context, cs *mcp.ClientSession, cfg SimConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var p briefing.Prime
	if err := CallTool(ctx, cs, schemas.ToolPrime, nil, &p); err != nil {
		return errors.Wrap(err, "prime")
	}
	log.Info("primed over mcp", "agent", p.AgentID, "role", p.Role, "hook", p.Hook != nil)
	if due, err := sim.Work(ctx, p.Role, p.Hook != nil, cfg.Work, log); !due {
		return err
	}
	switch p.Role {
	case schemas.RolePolecat:
		branch, err := sim.Commit(ctx, cfg.Dir, p.Hook.BeadID, p.Hook.Title, "MCP")
		if err != nil {
			return err
		}
		if err := CallTool(ctx, cs, schemas.ToolDone, map[string]any{"branch": branch, "summary": "simulated work on " + p.Hook.Title}, nil); err != nil {
			return errors.Wrap(err, "done")
		}
		log.Info("done over mcp", "branch", branch)
	case schemas.RoleRefinery:
		outcome, note := sim.Merge(ctx, cfg.Dir, p.Hook.Branch)
		if err := CallTool(ctx, cs, schemas.ToolReviewComplete, map[string]any{"beadId": p.Hook.BeadID, "outcome": outcome, "note": note}, nil); err != nil {
			return errors.Wrap(err, "review.complete")
		}
		log.Info("review complete over mcp", "outcome", outcome)
	case schemas.RoleTriage:
		if err := CallTool(ctx, cs, schemas.ToolTriageResolve, map[string]any{"action": schemas.TriageRestart, "note": "simulated triage"}, nil); err != nil {
			return errors.Wrap(err, "triage.resolve")
		}
	}
	return nil
}
