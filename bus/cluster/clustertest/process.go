package clustertest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// ServerEnv names the nats-server binary the real-process clusters run;
// without it, bin/nats-server at the repository's root (make nats-server).
const ServerEnv = "GASTOWN_NATS_SERVER"

// ServerBinary finds the nats-server binary: $GASTOWN_NATS_SERVER, else
// bin/nats-server at the root of the repository the test runs in. Without
// one, the test is skipped, saying how to build it.
func ServerBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(ServerEnv); p != "" {
		info, err := os.Stat(p)
		require.NoError(t, err, "%s=%s", ServerEnv, p)
		require.False(t, info.IsDir(), "%s=%s is a directory", ServerEnv, p)
		return p
	}
	root, err := repoRoot()
	if err == nil {
		p := filepath.Join(root, "bin", "nats-server")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skipf("no nats-server binary: run 'make nats-server' (it installs bin/nats-server), or set %s", ServerEnv)
	return ""
}

// repoRoot is the nearest directory up from the working directory whose
// go.mod declares the gastown module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			found := sc.Scan() && strings.TrimSpace(sc.Text()) == "module github.com/gastown/gastown"
			_ = f.Close()
			if found {
				return dir, nil
			}
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", os.ErrNotExist
		}
		dir = up
	}
}

// Start starts the cluster as real nats-server processes (ServerBinary)
// and waits until JetStream has a meta leader. Each node logs to
// node-<i>.log in Dir.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin := ServerBinary(t)
	c := prepare(t, o)
	c.bin = bin
	t.Cleanup(c.shutdown)
	for i := range c.nodes {
		var n node
		if slices.Contains(o.Later, i) {
			never := &process{done: make(chan struct{})}
			close(never.done)
			n = never
		} else {
			n = c.startProcess(i)
		}
		c.mu.Lock()
		c.nodes[i] = n
		c.mu.Unlock()
	}
	c.WaitReady()
	return c
}

// process is a nats-server child, in its own process group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (c *Cluster) startProcess(i int) *process {
	c.t.Helper()
	log, err := os.OpenFile(c.logFile(i), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	require.NoError(c.t, err)
	cmd := exec.Command(c.bin, "-c", c.confs[i])
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(c.t, cmd.Start(), "starting %s for node %d", c.bin, i+1)
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM (graceful) or SIGKILL to the process group and waits
// for the process to end.
func (p *process) stop(graceful bool) {
	sig := syscall.SIGKILL
	if graceful {
		sig = syscall.SIGTERM
	}
	if p.running() {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
	<-p.done
}

// Kill sends SIGKILL to node i and waits until it is gone (real
// processes only).
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	_, ok := n.(*process)
	require.True(c.t, ok, "Kill needs a real-process cluster (clustertest.Start)")
	n.stop(false)
}
