package bustest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NatsCLI returns the path of the `nats` command-line tool: the one `make
// tools` installs in <repo root>/bin, or else one on PATH. When there is
// none the test is skipped with a hint, or fails when CI is set, so that a
// CI run never passes without having run the CLI tests.
func NatsCLI(t testing.TB) string {
	t.Helper()
	if root, ok := repoRoot(); ok {
		p := filepath.Join(root, "bin", "nats")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	const msg = "the nats CLI is not installed: run `make tools` (it goes to <repo root>/bin/nats)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// NatsCommand builds a `nats` command with args, bound to ctx. Its
// environment has only PATH and a fresh HOME, so no NATS_* variable or saved
// CLI context of the machine changes what it does.
func NatsCommand(ctx context.Context, t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cli := NatsCLI(t)
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
	}
	return cmd
}

// repoRoot walks up from the working directory to the directory that holds
// go.mod.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !fi.IsDir() {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
