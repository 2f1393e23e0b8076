package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// Result is how a run of the kit went.
type Result struct {
	Passed, Failed int
}

// ErrFailed marks the error of a run in which a check failed.
var ErrFailed = errors.New("conformance checks failed")

// kit is one run: its coordinator, the container under test and what the
// kit has seen of it.
type kit struct {
	cfg    Config
	town   schemas.Town
	work   string
	d      *coordinator.Daemon
	issuer *token.Issuer
	// kc sends what the coordinator would (dispatches, stops, pushes) and
	// watches the town; admin calls admin methods.
	kc, admin *nats.Conn
	bootstrap string
	// bootstrapExp is when the bootstrap token expires.
	bootstrapExp time.Time
	tokenFile    string
	reports      string
	decoys       map[string]string
	obs          *observer
	// proxy is the container's way to the bus, which the kit can cut.
	proxy  *busProxy
	proc   *exec.Cmd
	exited chan struct{}
	res    Result
	// ctx ends the run early (Ctrl-C): no check is reported after it.
	ctx context.Context
	// runs numbers the kit's run ids.
	runs int
}

// Run runs the kit: it starts its coordinator and the container, runs
// every check, prints a line per check and the summary to cfg.Out, and
// stops it all. The error is ErrFailed when a check failed, or why the kit
// itself could not run.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	k := &kit{cfg: cfg, decoys: map[string]string{}, ctx: ctx}
	if k.town, err = schemas.ForTown(cfg.Town); err != nil {
		return Result{}, err
	}
	if k.work = cfg.WorkDir; k.work == "" {
		if k.work, err = os.MkdirTemp("", "gastown-conformance-"); err != nil {
			return Result{}, errors.Wrap(err, "making a work directory")
		}
		defer func() { _ = os.RemoveAll(k.work) }()
	}
	if k.work, err = filepath.Abs(k.work); err != nil {
		return Result{}, errors.Wrap(err, "work directory")
	}
	for _, d := range []string{"store", "tokens", "container", "reports"} {
		if err := os.MkdirAll(filepath.Join(k.work, d), 0o700); err != nil {
			return Result{}, errors.WithHint(errors.Wrapf(err, "making %s", d), "give a writable --work-dir")
		}
	}
	k.tokenFile = filepath.Join(k.work, "tokens", "token")
	k.reports = filepath.Join(k.work, "reports")
	err = k.startCoordinator(ctx)
	defer k.closeCoordinator()
	if err != nil {
		return Result{}, err
	}
	if err := k.startContainer(); err != nil {
		return Result{}, err
	}
	defer k.stopContainer()
	k.runChecks(ctx)
	if err := ctx.Err(); err != nil {
		return k.res, errors.Wrap(err, "the conformance run was interrupted")
	}
	fmt.Fprintf(cfg.Out, "%d passed, %d failed\n", k.res.Passed, k.res.Failed)
	if k.res.Failed > 0 {
		if cfg.WorkDir != "" {
			fmt.Fprintf(cfg.Out, "the container's output is in %s\n", filepath.Join(k.work, "container.log"))
		} else {
			fmt.Fprintln(cfg.Out, "run with --work-dir to keep the container's output and the agents' reports")
		}
		return k.res, errors.Mark(errors.Newf("%d of %d conformance checks failed", k.res.Failed, k.res.Failed+k.res.Passed), ErrFailed)
	}
	return k.res, nil
}

// startCoordinator starts the kit's own coordinator on a free loopback
// port, with a fresh secret and a store in the work directory, and the
// kit's connections to it.
func (k *kit) startCoordinator(ctx context.Context) error {
	secret, err := randomHex(32)
	if err != nil {
		return err
	}
	key, err := token.NewKey([]byte(secret))
	if err != nil {
		return err
	}
	k.issuer = token.NewIssuer(token.NewKeyRing(key), nil)
	k.d, err = coordinator.StartDaemon(ctx, k.issuer, coordinator.DaemonConfig{
		Config: coordinator.Config{
			TokenTTL: k.cfg.TokenTTL, RefreshInterval: k.cfg.RefreshInterval, RefreshJitter: k.cfg.RefreshInterval / 10,
			HeartbeatInterval: k.cfg.HeartbeatInterval, RequestTimeout: k.cfg.Timeout, DispatchTimeout: k.cfg.Timeout,
			Logger: k.cfg.Logger,
		},
		Bus: bus.Config{Listen: "127.0.0.1:0", DataDir: filepath.Join(k.work, "store"), Logger: k.cfg.Logger},
	})
	if err != nil {
		return errors.Wrap(err, "starting the kit's coordinator")
	}
	if k.kc, err = k.d.Server().Connect("conformance-kit", nats.CustomInboxPrefix(schemas.CoordinatorInbox)); err != nil {
		return err
	}
	if k.admin, err = k.d.Server().Connect("conformance-admin", nats.CustomInboxPrefix(schemas.AdminInbox)); err != nil {
		return err
	}
	if k.obs, err = observe(k.kc, k.town); err != nil {
		return err
	}
	k.proxy, err = startProxy(k.d.Server().Addr().String())
	return err
}

// closeCoordinator closes the kit's connections and its coordinator.
func (k *kit) closeCoordinator() {
	for _, nc := range []*nats.Conn{k.kc, k.admin} {
		if nc != nil {
			nc.Close()
		}
	}
	if k.proxy != nil {
		k.proxy.Close()
	}
	if k.d != nil {
		k.d.Close()
	}
}

// startContainer runs the container under test with the settings of
// PROTOCOL.md (Running a container), a few of the kit's variables, and
// decoy secrets no agent may ever see.
func (k *kit) startContainer() error {
	tok, claims, err := k.issuer.MintContainer(k.town.ID(), "", k.cfg.TokenTTL)
	if err != nil {
		return err
	}
	k.bootstrap, k.bootstrapExp = tok, claims.Expires()
	for _, name := range []string{"GASTOWN_JWT_SECRET", "GASTOWN_ADMIN_PASSWORD", "CONFORMANCE_DECOY_SECRET"} {
		v, err := randomHex(16)
		if err != nil {
			return err
		}
		k.decoys[name] = "decoy-" + v
	}
	env := []string{
		agentclient.EnvContainerToken + "=" + tok,
		agentclient.EnvNatsURL + "=" + k.proxy.url(),
		agentclient.EnvContainerID + "=" + DefaultContainerID,
		agentclient.EnvTokenFile + "=" + k.tokenFile,
		agentclient.EnvAgentCommand + "=" + k.cfg.AgentCommand,
	}
	for name, v := range k.decoys {
		env = append(env, name+"="+v)
	}
	for _, name := range append(append([]string{}, agentclient.AgentEnvAllowed...), k.cfg.ContainerEnv...) {
		if v := k.cfg.Getenv(name); v != "" {
			env = append(env, name+"="+v)
		}
	}
	out, err := os.OpenFile(filepath.Join(k.work, "container.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return errors.Wrap(err, "opening the container's log")
	}
	k.proc = exec.Command(k.cfg.Command[0], k.cfg.Command[1:]...)
	k.proc.Env, k.proc.Dir, k.proc.Stdout, k.proc.Stderr = env, filepath.Join(k.work, "container"), out, out
	k.proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.proc.Start(); err != nil {
		_ = out.Close()
		return errors.WithHint(errors.Wrapf(err, "starting %s", k.cfg.Command[0]), "is the container's command right, and on the PATH?")
	}
	k.exited = make(chan struct{})
	go func() {
		_ = k.proc.Wait()
		_ = out.Close()
		close(k.exited)
	}()
	return nil
}

// stopContainer ends the container and its agents: SIGTERM to its process
// group, SIGKILL after the stop wait.
func (k *kit) stopContainer() {
	pgid := k.proc.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(k.cfg.StopWait)
	defer t.Stop()
	select {
	case <-k.exited:
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-k.exited
	}
	// Agents it left behind go too: its process group, and every agent
	// that reported its pid.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	reports, _ := filepath.Glob(filepath.Join(k.reports, "*.json"))
	for _, path := range reports {
		var rep Report
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &rep) == nil && alive(rep.PID) {
			_ = syscall.Kill(rep.PID, syscall.SIGKILL)
		}
	}
}

// check runs one check and prints its line.
func (k *kit) check(name string, f func() error) bool {
	if k.ctx.Err() != nil {
		return false
	}
	err := f()
	if k.ctx.Err() != nil {
		return false
	}
	if err != nil {
		k.res.Failed++
		fmt.Fprintf(k.cfg.Out, "FAIL %s: %v\n", name, err)
		return false
	}
	k.res.Passed++
	fmt.Fprintf(k.cfg.Out, "PASS %s\n", name)
	return true
}

// skip prints a check that could not run here, counted neither way.
func (k *kit) skip(name, why string) {
	fmt.Fprintf(k.cfg.Out, "SKIP %s: %s\n", name, why)
}

// runChecks runs the checks in order; the ones that need a connected
// container are not run without one.
func (k *kit) runChecks(ctx context.Context) {
	if !k.checkConnect(ctx) {
		if ctx.Err() != nil {
			return
		}
		k.res.Failed++
		fmt.Fprintf(k.cfg.Out, "FAIL the remaining checks: not run, since the container never connected\n")
		return
	}
	k.checkHeartbeats(ctx)
	k.checkDispatch(ctx)
	k.checkRotations(ctx)
	k.checkHostile(ctx)
	k.checkExitKept(ctx)
	k.checkNoTokenOnTheWire()
	k.checkRevocation(ctx)
}

// waitFor polls cond every 10 ms until it holds or d has passed, and
// reports whether it held.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// nextRun is a fresh run id.
func (k *kit) nextRun() string {
	k.runs++
	return fmt.Sprintf("run%d", k.runs)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", errors.Wrap(err, "reading random bytes")
	}
	return hex.EncodeToString(b), nil
}

// observer records what the kit hears of the town: heartbeats and token
// requests, with when they arrived.
type observer struct {
	mu    sync.Mutex
	beats []beat
	gets  []tokenGet
	// replies are the raw answers to the kit's requests.
	replies [][]byte
}

// reply records a raw answer to one of the kit's requests.
func (o *observer) reply(b []byte) {
	o.mu.Lock()
	o.replies = append(o.replies, b)
	o.mu.Unlock()
}

type beat struct {
	at  time.Time
	hb  schemas.Heartbeat
	err error
	raw []byte
}

type tokenGet struct {
	reply string
	req   schemas.TokenRequest
	err   error
}

func observe(nc *nats.Conn, town schemas.Town) (*observer, error) {
	o := &observer{}
	if _, err := nc.Subscribe(town.Heartbeat(), func(m *nats.Msg) {
		b := beat{at: time.Now(), raw: m.Data}
		b.err = schemas.Decode(m.Data, &b.hb)
		o.mu.Lock()
		o.beats = append(o.beats, b)
		o.mu.Unlock()
	}); err != nil {
		return nil, errors.Wrap(err, "watching heartbeats")
	}
	if _, err := nc.Subscribe(town.TokenGet(), func(m *nats.Msg) {
		g := tokenGet{reply: m.Reply}
		g.err = schemas.Decode(m.Data, &g.req)
		o.mu.Lock()
		o.gets = append(o.gets, g)
		o.mu.Unlock()
	}); err != nil {
		return nil, errors.Wrap(err, "watching token requests")
	}
	return o, errors.Wrap(nc.Flush(), "watching the town")
}

// beatsSince is a copy of the heartbeats that arrived from index i on.
func (o *observer) beatsSince(i int) []beat {
	o.mu.Lock()
	defer o.mu.Unlock()
	if i > len(o.beats) {
		return nil
	}
	return append([]beat(nil), o.beats[i:]...)
}

func (o *observer) numBeats() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.beats)
}

func (o *observer) tokenGets() []tokenGet {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]tokenGet(nil), o.gets...)
}
