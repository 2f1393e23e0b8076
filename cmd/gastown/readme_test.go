package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// byHand is README.md's by-hand walk: the sh block after the paragraph that
// begins "By hand, after `make run`", as shell 1's and shell 2's commands.
func byHand(t *testing.T, readme string) (shell1, shell2 string) {
	t.Helper()
	i := strings.Index(readme, "By hand, after `make run`")
	require.GreaterOrEqual(t, i, 0, "README.md has no by-hand section")
	rest := readme[i:]
	start := strings.Index(rest, "```sh\n")
	require.GreaterOrEqual(t, start, 0)
	rest = rest[start+len("```sh\n"):]
	end := strings.Index(rest, "```")
	require.GreaterOrEqual(t, end, 0)
	block := rest[:end]
	a := strings.Index(block, "# shell 1")
	b := strings.Index(block, "# shell 2")
	require.True(t, a >= 0 && b > a, "the by-hand block names shell 1 and shell 2")
	return block[a:b], block[b:]
}

// shell runs script with sh in dir, in a process group of its own (killed
// with the test: the container it starts in the background too). Its
// output goes to a file (a pipe would be held open by what it leaves
// running in the background); output reads it.
func shell(t *testing.T, dir, script string, env []string) (cmd *exec.Cmd, output func() string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "shell-*.log")
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	cmd = exec.Command("sh", "-ec", script)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = cmd.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	return cmd, func() string { b, _ := os.ReadFile(f.Name()); return string(b) }
}

// TestReadmeByHand walks README.md's by-hand section exactly as written, in
// a fresh copy of the clone: shell 1 runs `make run`, shell 2 the commands
// after it. Two substitutions only: a free port for the well-known 4222
// (a test must not take it), and a real git repository for
// /path/to/repo.git. Then the slung bead is worked to a landed convoy.
func TestReadmeByHand(t *testing.T) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	shell1, shell2 := byHand(t, string(readme))

	// A fresh copy of the clone: its tracked files, nothing built.
	clone := t.TempDir()
	files, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	require.NoError(t, err, "the by-hand walk needs git")
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		require.NoError(t, err)
		fi, err := os.Stat(filepath.Join(root, f))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(clone, filepath.Dir(f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(clone, f), b, fi.Mode().Perm()))
	}

	// The repository the rig names.
	work := t.TempDir()
	repo := filepath.Join(work, "app.git")
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
	}
	git(work, "init", "-q", "--bare", "-b", "main", repo)
	git(work, "clone", "-q", repo, "seed")
	seed := filepath.Join(work, "seed")
	require.NoError(t, os.WriteFile(filepath.Join(seed, "README.md"), []byte("# app\n"), 0o644))
	git(seed, "add", "README.md")
	git(seed, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "initial")
	git(seed, "push", "-q", "origin", "HEAD:main")

	addr := freeAddr(t)
	sub := func(s string) string {
		s = strings.ReplaceAll(s, "127.0.0.1:4222", addr)
		return strings.ReplaceAll(s, "/path/to/repo.git", repo)
	}
	require.Contains(t, shell2, "/path/to/repo.git", "the README's by-hand walk changed: update this test's substitutions")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GOFLAGS=" + os.Getenv("GOFLAGS"),
		"GOCACHE=" + goEnv(t, "GOCACHE"), "GOMODCACHE=" + goEnv(t, "GOMODCACHE"), "GOPROXY=" + goEnv(t, "GOPROXY"),
		// The Makefile's listen address and the admin verbs' server, for
		// the port substituted above.
		"LISTEN=" + addr, "GASTOWN_SERVER=nats://" + addr}

	_, out1 := shell(t, clone, sub(shell1), env)
	require.Eventually(t, func() bool { return strings.Contains(out1(), "coordinator ready") }, 3*time.Minute, 50*time.Millisecond,
		"make run never said the coordinator is ready")

	sh2, out2 := shell(t, clone, sub(shell2), env)
	done := make(chan error, 1)
	go func() {
		st, err := sh2.Process.Wait()
		if err == nil && !st.Success() {
			err = errors.New(st.String())
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err, "shell 2 of the by-hand walk failed:\n%s\ncoordinator:\n%s", out2(), out1())
	case <-time.After(3 * time.Minute):
		t.Fatalf("shell 2 of the by-hand walk did not finish:\n%s", out2())
	}
	require.Contains(t, out2(), "demo", "gastown status shows the town")

	// The slung bead is worked and merged; the convoy lands.
	bin := filepath.Join(clone, "bin", "gastown")
	require.Eventually(t, func() bool {
		cmd := exec.Command(bin, "convoy", "list", "--town", "demo", "--json", "--server", "nats://"+addr)
		cmd.Env = append(env, "GASTOWN_ADMIN_PASSWORD="+adminPassword(shell1))
		b, err := cmd.Output()
		if err != nil {
			return false
		}
		var convoys []struct {
			Landed bool `json:"landed"`
		}
		return json.Unmarshal(b, &convoys) == nil && len(convoys) == 1 && convoys[0].Landed
	}, 2*time.Minute, 250*time.Millisecond, "the convoy of the by-hand walk never landed:\n%s", out1())
}

// adminPassword is the GASTOWN_ADMIN_PASSWORD shell 1 exports.
func adminPassword(shell1 string) string {
	for _, l := range strings.Split(shell1, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "export GASTOWN_ADMIN_PASSWORD="); ok {
			return strings.Fields(v)[0]
		}
	}
	return ""
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	b, err := exec.Command("go", "env", name).Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}
