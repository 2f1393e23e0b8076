package conformance

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// releaseMarker is the file only the kit repository's release branch has.
const releaseMarker = "RELEASE-MARKER"

// kitRepo is the kit's git remote: main, release (with releaseMarker) and
// other, which is the remote's HEAD so that a clone left on the remote's
// default branch is on neither of the branches a dispatch asks for.
type kitRepo struct {
	url           string
	main, release string // their commits
}

// makeKitRepo makes the kit's remote with git in the work directory.
func (k *kit) makeKitRepo(ctx context.Context) (kitRepo, error) {
	src, bare := filepath.Join(k.work, "git-src"), filepath.Join(k.work, "remote.git")
	git := func(args ...string) (string, error) {
		args = append([]string{"-c", "user.name=conformance", "-c", "user.email=conformance@example.invalid",
			"-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)
		out, err := exec.CommandContext(ctx, "git", args...).CombinedOutput()
		if err != nil {
			return "", errors.Wrapf(err, "making the kit's repository: git %s: %s", strings.Join(args[8:], " "), strings.TrimSpace(string(out)))
		}
		return strings.TrimSpace(string(out)), nil
	}
	steps := [][]string{
		{"init", "-q", src},
		{"-C", src, "checkout", "-q", "-b", "main"},
		{"-C", src, "commit", "-q", "--allow-empty", "-m", "main"},
		{"-C", src, "checkout", "-q", "-b", "release"},
	}
	for _, s := range steps {
		if _, err := git(s...); err != nil {
			return kitRepo{}, err
		}
	}
	if err := os.WriteFile(filepath.Join(src, releaseMarker), []byte("release\n"), 0o600); err != nil {
		return kitRepo{}, errors.Wrap(err, "making the kit's repository")
	}
	for _, s := range [][]string{
		{"-C", src, "add", releaseMarker},
		{"-C", src, "commit", "-q", "-m", "release"},
		{"-C", src, "checkout", "-q", "-b", "other", "main"},
		{"-C", src, "commit", "-q", "--allow-empty", "-m", "other"},
		{"init", "-q", "--bare", bare},
		{"-C", src, "push", "-q", bare, "main", "release", "other"},
		{"-C", bare, "symbolic-ref", "HEAD", "refs/heads/other"},
	} {
		if _, err := git(s...); err != nil {
			return kitRepo{}, err
		}
	}
	r := kitRepo{url: bare}
	var err error
	if r.main, err = git("-C", src, "rev-parse", "main"); err != nil {
		return r, err
	}
	r.release, err = git("-C", src, "rev-parse", "release")
	return r, err
}

// checkGitWorkspace: kind git is a fresh clone of gitUrl in a directory of
// its own for the run, on branch, created from defaultBranch when the
// remote has no such branch; a refinery's branch is the existing branch
// it merges into (PROTOCOL.md, Workspace).
func (k *kit) checkGitWorkspace(ctx context.Context) {
	var repo kitRepo
	if !k.check("the kit makes its git repository (git on the PATH)", func() error {
		if _, err := exec.LookPath("git"); err != nil {
			return errors.WithHint(errors.New("git is not on the PATH: the git workspace checks cannot run"),
				"install git where the kit runs (and where the container runs its agents)")
		}
		var err error
		repo, err = k.makeKitRepo(ctx)
		return err
	}) {
		return
	}
	var polecat Report
	k.check("workspace kind git: a clone on a new branch, made from defaultBranch", func() error {
		run := k.nextRun()
		req := k.startReq("a4", run, schemas.RolePolecat, ModeExit)
		req.Workspace = schemas.Workspace{Kind: schemas.WorkspaceGit, GitURL: repo.url, Branch: "polecat/a4/new", DefaultBranch: "main"}
		if _, err := k.dispatch(ctx, req); err != nil {
			return err
		}
		var err error
		if polecat, err = k.report(ctx, run); err != nil {
			return err
		}
		return gitCheckout(polecat, req.Workspace.Branch, repo.main, "main")
	})
	k.check("workspace kind git for a refinery: a clone on the existing branch it merges into", func() error {
		run := k.nextRun()
		req := k.startReq("a6", run, schemas.RoleRefinery, ModeExit)
		req.Workspace = schemas.Workspace{Kind: schemas.WorkspaceGit, GitURL: repo.url, Branch: "release", DefaultBranch: "main"}
		if _, err := k.dispatch(ctx, req); err != nil {
			return err
		}
		rep, err := k.report(ctx, run)
		if err != nil {
			return err
		}
		if err := gitCheckout(rep, "release", repo.release, "release"); err != nil {
			return err
		}
		if !slices.Contains(rep.Entries, releaseMarker) {
			return errors.Newf("the checkout lacks %s, which branch release has", releaseMarker)
		}
		if polecat.Cwd != "" && rep.Cwd == polecat.Cwd {
			return errors.New("the refinery's clone is the polecat's directory: each run gets a directory of its own")
		}
		return nil
	})
}

// gitCheckout checks that rep's workspace is a clone on branch at commit
// head (the commit of from).
func gitCheckout(rep Report, branch, head, from string) error {
	switch {
	case !slices.Contains(rep.Entries, ".git"):
		return errors.New("the workspace is not a git clone")
	case rep.Branch != branch:
		return errors.Newf("the clone is on %q, not %q", rep.Branch, branch)
	case rep.Head != head:
		return errors.Newf("the branch is at %.12s, not at %s's commit %.12s", rep.Head, from, head)
	}
	return nil
}
