package agentclient

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// workspace prepares the run's directory: a git clone on the requested
// branch, or an empty directory.
func (r *Runner) workspace(ctx context.Context, req schemas.StartAgent) (string, error) {
	dir := filepath.Join(r.cfg.WorkDir, "workspaces", req.AgentID, req.RunID)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", err
	}
	if req.Workspace.Kind != schemas.WorkspaceGit {
		return dir, os.MkdirAll(dir, 0o700)
	}
	w := req.Workspace
	if _, err := Git(ctx, filepath.Dir(dir), "clone", "--quiet", "--", w.GitURL, dir); err != nil {
		return "", err
	}
	if w.Branch == "" || w.Branch == w.DefaultBranch {
		if w.DefaultBranch != "" {
			if _, err := Git(ctx, dir, "checkout", "--quiet", w.DefaultBranch); err != nil {
				return "", err
			}
		}
		return dir, nil
	}
	if _, err := Git(ctx, dir, "checkout", "--quiet", w.Branch); err == nil {
		return dir, nil
	}
	base := "HEAD"
	if w.DefaultBranch != "" {
		base = "origin/" + w.DefaultBranch
	}
	_, err := Git(ctx, dir, "checkout", "--quiet", "-b", w.Branch, base)
	return dir, err
}

// Git runs a git command in dir and returns its trimmed output. It sets no
// author identity (the container only clones and checks out; an agent
// that commits brings its own, e.g. with -c user.name=…) and never waits
// on a credential prompt. Its error carries git's own words.
func Git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), errors.Wrapf(err, "git %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}
