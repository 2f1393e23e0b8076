package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// startTimes is what one start of the binary took.
type startTimes struct {
	accept time.Duration // exec to the NATS INFO line on a TCP connection
	ready  time.Duration // exec to a container token accepted and token.get answered
	stop   time.Duration // SIGINT to exit
}

// benchStartup builds the binary and times `gastown coordinator` from exec
// to accepting connections, on a store holding o.startTowns towns and, as
// the baseline, on a store holding none (both made by an in-process daemon
// first, so both have their buckets). The two are started alternately.
func benchStartup(ctx context.Context, o options) ([]Result, error) {
	tmp, err := os.MkdirTemp("", "gastown-bench-startup-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "gastown")
	build, err := goCommand(ctx, "build", "-o", bin, "./cmd/gastown")
	if err != nil {
		return nil, err
	}
	progress("startup: %s", strings.Join(build.Args, " "))
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building: %w\n%s", err, out)
	}

	secret := newSecret()
	key, err := token.NewKey([]byte(secret))
	if err != nil {
		return nil, err
	}
	issuer := token.NewIssuer(token.NewKeyRing(key), time.Now)
	type store struct {
		name, dir, town string
		towns           int
		times           []startTimes
	}
	stores := []*store{
		{name: "empty", dir: filepath.Join(tmp, "empty"), town: "probe", towns: 0},
		{name: fmt.Sprintf("%d-towns", o.startTowns), dir: filepath.Join(tmp, "full"), town: townName(0), towns: o.startTowns},
	}
	for _, s := range stores {
		progress("startup: populating a store with %d towns", s.towns)
		d, err := startDaemon(ctx, secret, s.dir)
		if err != nil {
			return nil, err
		}
		err = createTowns(ctx, d.Conn(), s.towns, townName)
		d.close()
		if err != nil {
			return nil, fmt.Errorf("populating: %w", err)
		}
	}
	for i := range o.startups {
		for _, s := range stores {
			progress("startup %d/%d: %s store", i+1, o.startups, s.name)
			st, err := startOnce(ctx, bin, secret, s.dir, s.town, issuer, o.startTimeout)
			if err != nil {
				return nil, fmt.Errorf("start-up on the %s store: %w", s.name, err)
			}
			s.times = append(s.times, st)
		}
	}
	median := func(s *store, f func(startTimes) time.Duration) float64 {
		var ds []time.Duration
		for _, t := range s.times {
			ds = append(ds, f(t))
		}
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	accept := func(t startTimes) time.Duration { return t.accept }
	ready := func(t startTimes) time.Duration { return t.ready }
	stop := func(t startTimes) time.Duration { return t.stop }
	empty, full := stores[0], stores[1]
	return []Result{
		Result{Name: "startup.accept." + full.name, Value: median(full, accept), Unit: "ms",
			Note: fmt.Sprintf("median of %d: exec of `gastown coordinator` to the NATS INFO line on a TCP connect (the embedded server listens before the coordinator has loaded its state); baseline: an empty store", o.startups)}.
			withBaseline(median(empty, accept)),
		Result{Name: "startup.ready." + full.name, Value: median(full, ready), Unit: "ms",
			Note: "exec to a container token accepted at connect and token.get answered (state loaded, handlers subscribed); baseline: an empty store"}.
			withBaseline(median(empty, ready)),
		Result{Name: "startup.stop." + full.name, Value: median(full, stop), Unit: "ms", Note: "SIGINT to exit; baseline: an empty store"}.
			withBaseline(median(empty, stop)),
	}, nil
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail keeps the last bytes written to it (the daemon's stderr, for errors).
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// startOnce starts the binary on dir, times it, and stops it with SIGINT.
func startOnce(ctx context.Context, bin, secret, dir, town string, issuer *token.Issuer, timeout time.Duration) (st startTimes, err error) {
	addr, err := freeAddr()
	if err != nil {
		return st, err
	}
	cmd := exec.Command(bin, "coordinator", "--listen", addr, "--data-dir", dir, "--log-level", "error")
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GASTOWN_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, "GASTOWN_JWT_SECRET="+secret)
	stderr := &tail{}
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return st, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := start.Add(timeout)
	// poll tries f until it succeeds, the process exits or time runs out.
	poll := func(what string, every time.Duration, f func() error) (time.Duration, error) {
		for {
			lastErr := f()
			if lastErr == nil {
				return time.Since(start), nil
			}
			select {
			case <-exited:
				return 0, fmt.Errorf("coordinator exited (%v) before %s: %s", waitErr, what, stderr)
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(every):
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("no %s after %s (last: %v): %s", what, timeout, lastErr, stderr)
			}
		}
	}
	if st.accept, err = poll("INFO line", time.Millisecond, func() error { return natsInfo(addr) }); err != nil {
		return st, err
	}
	tok, _, err := issuer.MintContainer(town, "", time.Hour)
	if err != nil {
		return st, err
	}
	if st.ready, err = poll("token.get answer", 2*time.Millisecond, func() error { return tokenGet(ctx, addr, town, tok) }); err != nil {
		return st, err
	}
	t0 := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		return st, err
	}
	select {
	case <-exited:
		stopped = true
		st.stop = time.Since(t0)
	case <-time.After(30 * time.Second):
		return st, fmt.Errorf("coordinator did not stop within 30 s of SIGINT: %s", stderr)
	}
	if waitErr != nil {
		return st, fmt.Errorf("coordinator exited with %v after SIGINT: %s", waitErr, stderr)
	}
	return st, nil
}

// natsInfo connects to addr and reads the server's INFO line.
func natsInfo(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "INFO ") {
		return errors.New("first line is not INFO")
	}
	return nil
}

// tokenGet connects as town's container and asks for a fresh token.
func tokenGet(ctx context.Context, addr, town, tok string) error {
	t, err := schemas.ForTown(town)
	if err != nil {
		return err
	}
	nc, err := nats.Connect("nats://"+addr, nats.Token(tok), nats.CustomInboxPrefix(t.Inbox()),
		nats.Timeout(time.Second), nats.NoReconnect(), nats.Name("startup-probe"))
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var rot schemas.TokenRotation
	if err := bus.Request(ctx, nc, t.TokenGet(), &schemas.TokenRequest{TownID: town, ContainerID: "startup-probe"}, &rot); err != nil {
		return err
	}
	if rot.TownID != town || rot.Token == "" {
		return errors.New("token.get answered without a token for the town")
	}
	return nil
}
