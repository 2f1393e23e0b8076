package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/bus/cluster"
	"github.com/gastown/gastown/bus/cluster/clustertest"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// clusterInit runs 'gastown cluster init' into a new directory, on a block
// of free ports; it returns the directory and the block's base.
func clusterInit(t *testing.T, vars map[string]string, extra ...string) (dir string, base int, stdout, stderr string) {
	t.Helper()
	base = clustertest.FreePortBlock(t)
	dir = filepath.Join(t.TempDir(), "cluster")
	args := append([]string{"cluster", "init", "--dir", dir,
		"--client-base", strconv.Itoa(base), "--cluster-base", strconv.Itoa(base + 16), "--monitor-base", strconv.Itoa(base + 32)}, extra...)
	stdout, stderr, err := run(t, vars, args...)
	require.NoError(t, err, "%s", stderr)
	return dir, base, stdout, stderr
}

func TestClusterInit(t *testing.T) {
	const opsPassword = "an-ops-password-never-printed"
	dir, base, stdout, _ := clusterInit(t, map[string]string{"GASTOWN_OPS_PASSWORD": opsPassword})

	for _, f := range []string{"cluster.json", "node-1.conf", "node-2.conf", "node-3.conf", "coordinator/issuer.nk", "coordinator/xkey.nk", "coordinator/control.nk", "ops.nk"} {
		info, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), f)
	}
	info, err := os.Stat(filepath.Join(dir, "coordinator"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	urls := "nats://127.0.0.1:" + strconv.Itoa(base) + ",nats://127.0.0.1:" + strconv.Itoa(base+1) + ",nats://127.0.0.1:" + strconv.Itoa(base+2)
	for i := 1; i <= 3; i++ {
		require.Contains(t, stdout, "nats-server -c "+filepath.Join(dir, "node-"+strconv.Itoa(i)+".conf"))
	}
	require.Contains(t, stdout, "GASTOWN_JWT_SECRET=… gastown coordinator --nats-url "+urls+" --cluster-creds "+filepath.Join(dir, "coordinator")+" --replicas 3 --metrics-listen 127.0.0.1:9464")
	require.Contains(t, stdout, "--metrics-listen 127.0.0.1:9465")
	require.Contains(t, stdout, "gastown cluster up --dir "+dir)
	require.Contains(t, stdout, "its password is the coordinators' GASTOWN_OPS_PASSWORD")
	require.Contains(t, stdout, "gastown ops context --nkey "+filepath.Join(dir, "ops.nk")+" --server "+urls)
	plan, err := cluster.ReadPlan(dir)
	require.NoError(t, err)
	// No secret on the terminal: the ops password, the route password, a
	// seed.
	require.NotContains(t, stdout, opsPassword)
	require.NotContains(t, stdout, plan.RoutePassword)
	require.NotRegexp(t, `S[AUX][A-Z2-7]{50,}`, stdout)
	require.Empty(t, cluster.Check(dir))
	// The ops password is in no file: the coordinators check it.
	for _, f := range []string{"cluster.json", "node-1.conf", "node-2.conf", "node-3.conf"} {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		require.NotContains(t, string(raw), opsPassword, f)
		require.NotContains(t, string(raw), `user: "ops"`, f)
		require.NotContains(t, string(raw), "$2a$", f)
	}

	t.Run("an existing directory is refused and left alone", func(t *testing.T) {
		before, err := os.ReadFile(filepath.Join(dir, "node-1.conf"))
		require.NoError(t, err)
		_, _, err = run(t, nil, "cluster", "init", "--dir", dir)
		require.Error(t, err)
		require.Contains(t, err.Error(), "already exists and is not empty")
		after, err := os.ReadFile(filepath.Join(dir, "node-1.conf"))
		require.NoError(t, err)
		require.Equal(t, before, after)
	})
	t.Run("two nodes", func(t *testing.T) {
		_, _, stdout, _ := clusterInit(t, nil, "--nodes", "2")
		require.Contains(t, stdout, "--replicas 2")
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"cluster", "init"}, "cluster init needs --dir"},
			{[]string{"cluster", "init", "--dir", filepath.Join(t.TempDir(), "x"), "--nodes", "0"}, "at least 2 nodes"},
			// nats-server refuses to start a JetStream cluster of one node.
			{[]string{"cluster", "init", "--dir", filepath.Join(t.TempDir(), "x"), "--nodes", "1"}, "at least 2 nodes"},
			{[]string{"cluster", "init", "--dir", filepath.Join(t.TempDir(), "x"), "--client-base", "6222"}, "overlap"},
		} {
			_, _, err := run(t, nil, tc.args...)
			require.Equal(t, 2, exitCode(err), "%v", err)
			require.Contains(t, err.Error(), tc.want)
		}
	})
}

func TestClusterCheckCLI(t *testing.T) {
	dir, _, _, _ := clusterInit(t, nil)
	stdout, _, err := run(t, nil, "cluster", "check", "--dir", dir)
	require.NoError(t, err)
	require.Equal(t, dir+": ok\n", stdout)

	path := filepath.Join(dir, "node-2.conf")
	conf, err := os.ReadFile(path)
	require.NoError(t, err)
	edited := strings.Replace(string(conf), "  GASTOWN {\n    users: [\n", "  GASTOWN {\n    users: [\n      {user: \"backdoor\", password: \"x\"}\n", 1)
	require.NotEqual(t, string(conf), edited)
	require.NoError(t, os.WriteFile(path, []byte(edited), 0o600))
	_, stderr, err := run(t, nil, "cluster", "check", "--dir", dir)
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	require.Contains(t, stderr, "problem: "+path+`: account GASTOWN has a user "backdoor"`)
	require.Contains(t, err.Error(), "1 problem(s)")
}

// fakeCoordinator is a script standing in for the coordinator binary:
// it runs an embedded-server coordinator that serves /readyz where
// 'cluster up' asks (--metrics-listen), ignoring the cluster flags.
func fakeCoordinator(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "coordinator.sh")
	body := `#!/bin/sh
m=""
while [ $# -gt 0 ]; do
  case "$1" in --metrics-listen) m="$2"; shift ;; esac
  shift
done
exec ` + shellQuote(binary(t)) + ` coordinator --listen 127.0.0.1:0 --data-dir ` + shellQuote(dir) + `/"$m" --metrics-listen "$m"
`
	require.NoError(t, os.WriteFile(script, []byte(body), 0o700))
	return script
}

// clusterUp runs 'gastown cluster up' as a process, and returns once it
// printed its ready line; stop sends it SIGTERM and returns its exit
// status.
func clusterUp(t *testing.T, dir string, base int, vars map[string]string, extra ...string) (readyLine string, stop func() int) {
	t.Helper()
	args := append([]string{"cluster", "up", "--dir", dir, "--nats-server", clustertest.ServerBinary(t),
		"--metrics-base", strconv.Itoa(base + 48)}, extra...)
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), "GASTOWN_JWT_SECRET="+testSecret)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan int, 1)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitExit := func() int {
		_ = cmd.Wait()
		return cmd.ProcessState.ExitCode()
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	})
	line, ok := <-lines
	require.True(t, ok, "cluster up printed no ready line; stderr:\n%s", stderr.String())
	go func() {
		for range lines {
		}
	}()
	return line, func() int {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		code := waitExit()
		exited <- code
		t.Logf("cluster up stderr:\n%s", stderr.String())
		return code
	}
}

// refused is whether nothing listens on addr any more.
func refused(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

// 'cluster up' starts the nodes and the coordinators, prints one ready
// line once every coordinator is ready, and on SIGTERM stops them all and
// exits 0.
func TestClusterUpSupervises(t *testing.T) {
	dir, base, _, _ := clusterInit(t, nil)
	line, stop := clusterUp(t, dir, base, nil, "--coordinator-bin", fakeCoordinator(t))
	plan, err := cluster.ReadPlan(dir)
	require.NoError(t, err)
	require.Equal(t, "cluster ready: "+strings.Join(plan.ClientURLs(), ","), line)

	// Every coordinator is ready, every node up.
	for n := range 2 {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(base+48+n) + "/readyz")
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	creds, err := cluster.LoadCreds(filepath.Join(dir, "coordinator"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, cluster.WaitReady(ctx, plan.ClientURLs(), creds, 3))

	require.Equal(t, 0, stop())
	for i := range 3 {
		require.True(t, refused(plan.ClientAddr(i)), "node %d still listens", i+1)
	}
	for n := range 2 {
		require.True(t, refused("127.0.0.1:"+strconv.Itoa(base+48+n)), "coordinator %d still listens", n+1)
	}
	for _, f := range []string{"node-1.log", "coordinator-1.log", "coordinator-2.log"} {
		_, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
	}
}

// 'cluster up' refuses a directory that check refuses, and starts
// nothing.
func TestClusterUpChecksFirst(t *testing.T) {
	dir, base, _, _ := clusterInit(t, nil)
	path := filepath.Join(dir, "node-1.conf")
	conf, err := os.ReadFile(path)
	require.NoError(t, err)
	plan, err := cluster.ReadPlan(dir)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(conf), `xkey: "`+plan.Keys.XKey+`"`, "", 1)), 0o600))
	_, stderr, err := run(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret}, "cluster", "up", "--dir", dir, "--nats-server", "/bin/true", "--metrics-base", strconv.Itoa(base+48))
	require.Error(t, err)
	require.Contains(t, stderr, "auth_callout has no xkey")
	require.True(t, refused(plan.ClientAddr(0)))
	_, err = os.Stat(filepath.Join(dir, "node-1.log"))
	require.ErrorIs(t, err, os.ErrNotExist)

	_, _, err = run(t, nil, "cluster", "up", "--dir", dir)
	require.ErrorContains(t, err, "GASTOWN_JWT_SECRET is not set")
}

// 'cluster up' with the real coordinators: the admin works through one
// node, a container token connects through the callout on another, ops
// with its password on a third; SIGTERM stops it all with status 0.
func TestClusterUpRealCoordinators(t *testing.T) {
	const adminPassword, opsPassword = "admin-password-for-the-test", "ops-password-for-the-test"
	dir, base, _, _ := clusterInit(t, map[string]string{"GASTOWN_OPS_PASSWORD": opsPassword})
	_, stop := clusterUp(t, dir, base, map[string]string{"GASTOWN_ADMIN_PASSWORD": adminPassword, "GASTOWN_OPS_PASSWORD": opsPassword})
	plan, err := cluster.ReadPlan(dir)
	require.NoError(t, err)
	urls := plan.ClientURLs()

	_, stderr, err := run(t, map[string]string{"GASTOWN_ADMIN_PASSWORD": adminPassword}, "town", "create", "--server", urls[2], "--town", "demo")
	require.NoError(t, err, "%s", stderr)
	token, _, err := run(t, map[string]string{"GASTOWN_JWT_SECRET": testSecret}, "token", "mint", "--town", "demo")
	require.NoError(t, err)
	nc, err := natsConnect(urls[0], strings.TrimSpace(token), "demo")
	require.NoError(t, err)
	nc.Close()
	_, err = natsConnect(urls[1], "not-a-token", "demo")
	require.ErrorContains(t, err, "Authorization Violation")
	ops, err := nats.Connect(urls[1], nats.UserInfo(cluster.OpsUser, opsPassword), nats.CustomInboxPrefix(schemas.OpsInbox))
	require.NoError(t, err)
	ops.Close()

	require.Equal(t, 0, stop())
	for i := range 3 {
		require.True(t, refused(plan.ClientAddr(i)), "node %d still listens", i+1)
	}
}

// With no coordinator running, an operator inspects the cluster with the
// break-glass ops key: `gastown ops context --nkey D/ops.nk` writes a nats
// CLI context naming the seed file (no password), and the real nats CLI
// with it watches the towns' events, through any node.
func TestOpsContextForTheBreakGlassKey(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	config := t.TempDir()
	vars := map[string]string{"XDG_CONFIG_HOME": config}
	stdout, _, err := run(t, vars, "ops", "context", "--nkey", c.OpsKeyFile(), "--server", c.URL())
	require.NoError(t, err)
	path := filepath.Join(config, "nats", "context", "gastown-ops.json")
	require.Contains(t, stdout, path)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var nctx map[string]string
	require.NoError(t, json.Unmarshal(raw, &nctx))
	require.Equal(t, c.OpsKeyFile(), nctx["nkey"])
	require.Empty(t, nctx["user"])
	require.Empty(t, nctx["password"])
	require.Equal(t, schemas.OpsInbox, nctx["inbox_prefix"])
	seed, err := os.ReadFile(c.OpsKeyFile())
	require.NoError(t, err)
	require.NotContains(t, string(raw), strings.TrimSpace(string(seed)), "the context names the seed's file, not the seed")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := bustest.NatsCommand(ctx, t, "--context", "gastown-ops", "sub", "gastown.town.*.events", "--count", "1", "--raw")
	cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "XDG_CONFIG_HOME="+config)
	var out strings.Builder // written by the command's copier only until Wait returns
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	control := c.Connect(c.Creds().Control)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case err := <-done:
			require.NoError(t, err, "%s", out.String())
			waiting = false
		case <-tick.C:
			require.NoError(t, control.Publish("gastown.town.alpha.events", []byte(`{"kind":"seen"}`)))
		}
	}
	require.Contains(t, out.String(), `{"kind":"seen"}`)

	t.Run("bad key files", func(t *testing.T) {
		loose := filepath.Join(t.TempDir(), "ops.nk")
		require.NoError(t, os.WriteFile(loose, seed, 0o644))
		notUser := filepath.Join(t.TempDir(), "issuer.nk")
		issuer, err := os.ReadFile(filepath.Join(c.CredsDir(), "issuer.nk"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(notUser, issuer, 0o600))
		for file, want := range map[string]string{
			filepath.Join(t.TempDir(), "missing.nk"): "is missing",
			loose:                                    "others may read the seed",
			notUser:                                  "does not hold a user nkey seed",
		} {
			dir := t.TempDir()
			_, _, err := run(t, vars, "ops", "context", "--nkey", file, "--dir", dir)
			require.ErrorContains(t, err, want)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, entries, "nothing written")
		}
	})
}
