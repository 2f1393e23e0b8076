package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/schemas"
)

// Config configures the simulated agent.
type Config struct {
	// Work is how long the agent "works" before it reports.
	Work time.Duration
	// Fail makes the agent exit with an error instead of working (to
	// exercise failure paths and crash loops).
	Fail bool
	// Dir is the agent's workspace (its working directory).
	Dir string
	// RunID is the agent's run (GASTOWN_RUN_ID): done and review.complete
	// name it, so a run the coordinator gave up on cannot finish the work
	// of the run that replaced it.
	RunID  string
	Logger *slog.Logger
}

// primed is what the sim needs of prime's result.
type primed struct {
	AgentID string `json:"agentId"`
	Role    string `json:"role"`
	Hook    *struct {
		BeadID  string `json:"beadId"`
		Title   string `json:"title"`
		Branch  string `json:"branch"`
		RigID   string `json:"rigId"`
		Polecat string `json:"polecat"`
	} `json:"hook"`
}

// Run is an agent without an LLM: it primes, works for a while, and
// reports through the same tools a real agent uses — a polecat commits and
// pushes its branch and calls done; a refinery merges the branch on its
// hook and calls review.complete; a triage agent restarts the agent it
// triages; a mayor waits until it is stopped.
func Run(ctx context.Context, c *agentclient.Client, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Fail {
		return errors.New("simulated failure (--fail)")
	}
	var p primed
	if err := c.Call(ctx, schemas.ToolPrime, nil, &p); err != nil {
		return errors.Wrap(err, "prime")
	}
	log.Info("primed", "agent", p.AgentID, "role", p.Role, "hook", p.Hook != nil)
	if due, err := Work(ctx, p.Role, p.Hook != nil, cfg.Work, log); !due {
		return err
	}
	switch p.Role {
	case schemas.RolePolecat:
		branch, err := Commit(ctx, cfg.Dir, p.Hook.BeadID, p.Hook.Title, "")
		if err != nil {
			return err
		}
		var res json.RawMessage
		if err := c.Call(ctx, schemas.ToolDone, schemas.DoneRequest{Branch: branch, Summary: "simulated work on " + p.Hook.Title, RunID: cfg.RunID}, &res); err != nil {
			return errors.Wrap(err, "done")
		}
		log.Info("done", "branch", branch, "result", string(res))
	case schemas.RoleRefinery:
		outcome, note := Merge(ctx, cfg.Dir, p.Hook.Branch)
		if err := c.Call(ctx, schemas.ToolReviewComplete, schemas.ReviewComplete{BeadID: p.Hook.BeadID, Outcome: outcome, Note: note, RunID: cfg.RunID}, nil); err != nil {
			return errors.Wrap(err, "review.complete")
		}
		log.Info("review complete", "outcome", outcome)
	case schemas.RoleTriage:
		if err := c.Call(ctx, schemas.ToolTriageResolve, schemas.TriageResolve{Action: schemas.TriageRestart, Note: "simulated triage"}, nil); err != nil {
			return errors.Wrap(err, "triage.resolve")
		}
	}
	return nil
}

// Work is what a primed sim does before its role's last call, however it
// calls its tools: a mayor waits until it is stopped, an agent with nothing
// on its hook is done, and any other works for d. It reports whether the
// last call is due (false with ctx's error when stopped while it worked).
func Work(ctx context.Context, role string, hooked bool, d time.Duration, log *slog.Logger) (bool, error) {
	if role == schemas.RoleMayor {
		<-ctx.Done()
		return false, nil
	}
	if !hooked {
		log.Info("nothing on the hook; done")
		return false, nil
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(d):
		return true, nil
	}
}

// git runs a git command in dir as the sim's own author (its commits and
// merges say "Gastown Sim").
func git(ctx context.Context, dir string, args ...string) (string, error) {
	return agentclient.Git(ctx, dir, append([]string{"-c", "user.name=Gastown Sim", "-c", "user.email=sim@gastown.invalid"}, args...)...)
}

// Commit writes a file for the bead, commits it as the sim on the current
// branch and pushes the branch, which it returns. via, when not empty,
// names how the sim calls its tools other than through the tool client
// ("MCP"), in the commit message ("sim (mcp): <title>") and the file.
func Commit(ctx context.Context, dir, beadID, title, via string) (string, error) {
	branch, err := git(ctx, dir, "rev-parse", "--abbrev-ref", "HEAD")
	if err != nil {
		return "", err
	}
	msg, by := "sim: "+title, "Done by the simulated agent."
	if via != "" {
		msg, by = "sim ("+strings.ToLower(via)+"): "+title, "Done by the simulated agent, over "+via+"."
	}
	path := filepath.Join(dir, "work", beadID+".md")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", errors.Wrap(err, "writing work")
	}
	if err := os.WriteFile(path, fmt.Appendf(nil, "# %s\n\n%s\n", title, by), 0o644); err != nil {
		return "", errors.Wrap(err, "writing work")
	}
	if _, err := git(ctx, dir, "add", "work"); err != nil {
		return "", err
	}
	// A run again on the same bead (the last one's done was lost, say
	// while a node died) finds its work committed already: nothing to
	// commit is not a failure. The branch is the polecat's own, so the
	// push replaces what an earlier run in another workspace left there.
	staged, err := git(ctx, dir, "status", "--porcelain", "--", "work")
	if err != nil {
		return "", err
	}
	if staged != "" {
		if _, err := git(ctx, dir, "commit", "-m", msg); err != nil {
			return "", err
		}
	}
	if _, err := git(ctx, dir, "push", "origin", "+HEAD:refs/heads/"+branch); err != nil {
		return "", err
	}
	return branch, nil
}

// Merge merges branch into the workspace's branch and pushes it, as the
// sim: the outcome and note of review.complete.
func Merge(ctx context.Context, dir, branch string) (outcome, note string) {
	target, err := git(ctx, dir, "rev-parse", "--abbrev-ref", "HEAD")
	if err != nil {
		return schemas.ReviewFailed, err.Error()
	}
	if _, err := git(ctx, dir, "fetch", "origin", branch); err != nil {
		return schemas.ReviewFailed, err.Error()
	}
	if _, err := git(ctx, dir, "merge", "--no-ff", "-m", "Merge "+branch, "FETCH_HEAD"); err != nil {
		_, _ = git(ctx, dir, "merge", "--abort")
		return schemas.ReviewConflict, err.Error()
	}
	if _, err := git(ctx, dir, "push", "origin", "HEAD:refs/heads/"+target); err != nil {
		return schemas.ReviewFailed, err.Error()
	}
	return schemas.ReviewMerged, "merged " + branch + " into " + target
}
