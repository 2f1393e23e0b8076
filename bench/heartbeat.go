package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
)

// The fleet the heartbeat numbers are judged against: 10,000 agents, 100
// per container, one heartbeat per container every 30 s.
const (
	fleetAgents       = 10000
	fleetPerContainer = 100
)

// goCommand runs the go tool in the module's root directory.
func goCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == "/dev/null" {
		return nil, fmt.Errorf("run bench from inside the module (go run ./bench)")
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(gomod)
	return cmd, nil
}

// benchHeartbeat runs BenchmarkHeartbeatIngestion (10,000 working agents
// in 100 towns; one op is one container's heartbeat, fenced and stored) in
// a subprocess and reads its metrics.
func benchHeartbeat(ctx context.Context, o options) ([]Result, error) {
	cmd, err := goCommand(ctx, "test", "-run", "^$", "-bench", "^BenchmarkHeartbeatIngestion$",
		"-benchtime", o.hbBenchtime, "-count", "1", "./coordinator")
	if err != nil {
		return nil, err
	}
	progress("heartbeat: %s", strings.Join(cmd.Args, " "))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	took := time.Since(start)
	metrics, err := parseBenchLine(out, "BenchmarkHeartbeatIngestion")
	if err != nil {
		return nil, err
	}
	need := float64(fleetAgents/fleetPerContainer) / coordinator.DefaultHeartbeatInterval.Seconds()
	hbs, lines, cpu := metrics["heartbeats/s"], metrics["agent-lines/s"], metrics["cpu-ms/1000-heartbeats"]
	if hbs == 0 || lines == 0 {
		return nil, fmt.Errorf("no heartbeats/s or agent-lines/s in:\n%s", out)
	}
	// CPU at the fleet's rate, as a share of one core.
	coreShare := cpu / 1000 * need / 1000 * 100
	note := fmt.Sprintf("go test -bench BenchmarkHeartbeatIngestion -benchtime %s in a subprocess (%s with the build); baseline: what %d agents at %d per container send, one heartbeat per %s",
		o.hbBenchtime, took.Round(time.Second), fleetAgents, fleetPerContainer, coordinator.DefaultHeartbeatInterval)
	rHB := Result{Name: "heartbeat.ingest", Value: hbs, Unit: "heartbeats/s", Note: note}.withBaseline(need)
	rLines := Result{Name: "heartbeat.ingest.agent-lines", Value: lines, Unit: "agent-lines/s"}.withBaseline(need * fleetPerContainer)
	return []Result{
		rHB.judged(">= 1x needed", *rHB.Ratio >= 1),
		rLines.judged(">= 1x needed", *rLines.Ratio >= 1),
		{Name: "heartbeat.cpu", Value: cpu, Unit: "cpu-ms/1000-hb",
			Note: "process CPU (user+system, all goroutines) per 1,000 heartbeats of 100 agents each"},
		{Name: "heartbeat.cpu-at-10k-agents", Value: coreShare, Unit: "% of a core",
			Note: fmt.Sprintf("heartbeat.cpu at %.2f heartbeats/s", need)},
		{Name: "heartbeat.per-op", Value: metrics["ns/op"] / 1000, Unit: "µs/heartbeat"},
	}, nil
}

// parseBenchLine reads the metrics (value unit pairs) of benchmark name
// from go test output.
func parseBenchLine(out []byte, name string) (map[string]float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || (f[0] != name && !strings.HasPrefix(f[0], name+"-")) {
			continue
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("parsing %q: %w", sc.Text(), err)
			}
			m[f[i+1]] = v
		}
		return m, nil
	}
	return nil, fmt.Errorf("no %s line in the output:\n%s", name, out)
}

// heapAlloc is the live heap after two collections.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchMemory loads agents into a fresh daemon through the admin API and
// measures the live heap they add: towns and rigs first, then one bead per
// agent, then a sling per bead to a named polecat, which creates the agent
// and hooks the bead (its dispatch fails: no container is connected).
func benchMemory(ctx context.Context, o options) ([]Result, error) {
	d, err := startDaemon(ctx, newSecret(), "")
	if err != nil {
		return nil, err
	}
	defer d.close()
	nc := d.Conn()
	towns, per := o.agentTowns, o.agentsPer
	n := towns * per
	town := func(i int) string { return fmt.Sprintf("m%03d", i) }
	progress("memory: %d towns with a rig each", towns)
	if err := createTowns(ctx, nc, towns, town); err != nil {
		return nil, fmt.Errorf("creating towns: %w", err)
	}
	if _, err := parallel(ctx, towns, 64, func(i int) error {
		return admin(ctx, nc, schemas.AdminRigAdd, schemas.RigAdd{TownID: town(i), RigID: "r", GitURL: "https://git.invalid/bench.git"}, nil)
	}); err != nil {
		return nil, fmt.Errorf("adding rigs: %w", err)
	}
	h0 := heapAlloc()

	progress("memory: %d beads", n)
	t0 := time.Now()
	if _, err := parallel(ctx, n, 64, func(i int) error {
		return admin(ctx, nc, schemas.AdminBeadCreate, schemas.BeadCreate{
			TownID: town(i / per), BeadID: fmt.Sprintf("b%04d", i%per), RigID: "r", Title: "benchmark bead",
		}, nil)
	}); err != nil {
		return nil, fmt.Errorf("creating beads: %w", err)
	}
	beadTime := time.Since(t0)
	h1 := heapAlloc()

	progress("memory: %d agents (sling)", n)
	t0 = time.Now()
	if _, err := parallel(ctx, n, 64, func(i int) error {
		var res schemas.SlingResult
		return admin(ctx, nc, schemas.AdminSling, schemas.Sling{
			TownID: town(i / per), BeadID: fmt.Sprintf("b%04d", i%per), RigID: "r", AgentID: fmt.Sprintf("p%04d", i%per),
		}, &res)
	}); err != nil {
		return nil, fmt.Errorf("slinging: %w", err)
	}
	slingTime := time.Since(t0)
	h2 := heapAlloc()

	// Every agent must be there, hooked.
	if _, err := parallel(ctx, towns, 16, func(i int) error {
		var st coordinator.TownStatus
		if err := admin(ctx, nc, schemas.AdminStatus, schemas.TownRequest{TownID: town(i)}, &st); err != nil {
			return err
		}
		c := 0
		for _, a := range st.Agents {
			if a.Role == schemas.RolePolecat && a.Hook != "" {
				c++
			}
		}
		if c != per {
			return fmt.Errorf("town %s has %d hooked polecats, not %d", town(i), c, per)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("checking agents: %w", err)
	}

	per1 := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	src := fmt.Sprintf("%d towns x %d agents through the admin API; runtime.MemStats.HeapAlloc after runtime.GC(), whole process (coordinator caches and the embedded NATS/JetStream server's share)", towns, per)
	return []Result{
		{Name: "memory.per-agent", Value: per1(h1, h2), Unit: "bytes/agent",
			Note: "heap added by slinging: the agent record, the bead's assignee, the failed dispatch; " + src},
		{Name: "memory.per-bead", Value: per1(h0, h1), Unit: "bytes/bead"},
		{Name: "memory.per-working-agent", Value: per1(h0, h2), Unit: "bytes/agent", Note: "an agent with the bead on its hook"},
		{Name: "memory.total", Value: (float64(h2) - float64(h0)) / (1 << 20), Unit: "MiB", Note: fmt.Sprintf("for %d hooked agents and their beads", n)},
		{Name: "memory.load.beads", Value: float64(n) / beadTime.Seconds(), Unit: "beads/s", Note: "admin bead.create, 64 in flight"},
		{Name: "memory.load.agents", Value: float64(n) / slingTime.Seconds(), Unit: "agents/s", Note: "admin sling (hook + failed dispatch), 64 in flight"},
	}, nil
}
