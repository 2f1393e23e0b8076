package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

// Both spellings print the version, the commit and the Go version; with no
// stamp at all the commit says how to get one.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			require.NoError(t, Run(context.Background(), args, Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errOut}))
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			require.True(t, strings.HasPrefix(lines[0], "gastown "), out.String())
			require.Contains(t, out.String(), "\ncommit  ")
			require.Contains(t, out.String(), "\ngo      "+runtime.Version()+"\n")
			require.Empty(t, errOut.String())
		})
	}
	t.Run("stray argument", func(t *testing.T) {
		err := Run(context.Background(), []string{"version", "now"}, Env{Getenv: func(string) string { return "" }, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
		require.True(t, errors.Is(err, ErrUsage), "%v", err)
	})
}

// What -ldflags sets wins over the toolchain's stamp.
func TestVersionFromLinkerFlags(t *testing.T) {
	saved := [3]string{version, commit, commitTime}
	t.Cleanup(func() { version, commit, commitTime = saved[0], saved[1], saved[2] })
	version, commit, commitTime = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-12-01T20:00:00Z"
	var out bytes.Buffer
	readBuildInfo().write(&out)
	require.Equal(t, "gastown v1.2.3\ncommit  0123456789abcdef0123456789abcdef01234567\ntime    2026-12-01T20:00:00Z\ngo      "+runtime.Version()+"\n", out.String())
}

// A binary built the way `make build` builds it reports what was passed.
func TestVersionOfBuiltBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gastown")
	build := exec.Command("go", "build", "-buildvcs=false",
		"-ldflags", "-X main.version=v9.8.7-test -X main.commit=feedface -X main.commitTime=2026-12-01T21:00:00Z", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, arg := range []string{"version", "--version"} {
		got, err := exec.Command(bin, arg).Output()
		require.NoError(t, err)
		require.Equal(t, "gastown v9.8.7-test\ncommit  feedface\ntime    2026-12-01T21:00:00Z\ngo      "+runtime.Version()+"\n", string(got))
	}
}
