// Command bench measures the coordinator end to end and prints a table of
// results, each next to a baseline measured in the same process and run
// (these machines are shared and noisy: compare ratios, not wall clocks).
// It also writes the results as JSON, for comparison between runs.
//
//	go run ./bench -json bench.json [-duration 3s] [-cpuprofile cpu.out]
//
// Everything listens on and talks to 127.0.0.1 only, and the program stops
// by itself. See BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the command-line flags.
type options struct {
	duration     time.Duration
	rounds       int
	concurrency  int
	floodRate    int
	jsonPath     string
	cpuProfile   string
	profileOf    string
	rotProfile   string
	only         string
	rotTowns     int
	rotRounds    int
	rotInflight  int
	agentTowns   int
	agentsPer    int
	hbBenchtime  string
	startTowns   int
	startups     int
	startTimeout time.Duration
	// The cluster phase (cluster.go).
	clusterTowns      int
	clusterConnects   int
	leaseTTL          time.Duration
	failoverKills     int
	failoverEvery     time.Duration
	failoverTimeout   time.Duration
	natsServer        string
	clusterProfile    string
	clusterRotProfile string
}

// phases in the order they run.
var phases = []string{"rpc", "fairness", "rotation", "heartbeat", "memory", "startup", "cluster"}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measuring time of each RPC system at each concurrency")
	flag.IntVar(&o.rounds, "rounds", 3, "the RPC duration is split into this many slices, interleaved between the systems")
	flag.IntVar(&o.concurrency, "concurrency", 64, "concurrent callers of the concurrent RPC runs")
	flag.IntVar(&o.floodRate, "flood-rate", 10_000, "requests per second the flooding town of the fairness phase sends")
	flag.StringVar(&o.jsonPath, "json", "bench.json", "write the results as JSON to this file (empty: do not write)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of an extra authenticated RPC run (concurrent callers) to this file")
	flag.StringVar(&o.profileOf, "cpuprofile-system", "bus", "which RPC system -cpuprofile profiles: bus, plain or http (-cluster-cpuprofile: bus or plain; http profiles the bus there)")
	flag.StringVar(&o.rotProfile, "rotation-cpuprofile", "", "write a CPU profile of the rotation rounds to this file")
	flag.StringVar(&o.only, "only", strings.Join(phases, ","), "comma-separated phases to run: "+strings.Join(phases, ", "))
	flag.IntVar(&o.rotTowns, "rotation-towns", 1000, "towns, each with a connected container, in the rotation fan-out")
	flag.IntVar(&o.rotRounds, "rotation-rounds", 3, "forced rotations of every town (the median is reported)")
	flag.IntVar(&o.rotInflight, "rotation-inflight", 64, "token.rotate requests in flight at once")
	flag.IntVar(&o.agentTowns, "agent-towns", 100, "towns of the memory-per-agent measurement")
	flag.IntVar(&o.agentsPer, "agents-per-town", 100, "agents per town of the memory-per-agent measurement")
	flag.StringVar(&o.hbBenchtime, "heartbeat-benchtime", "200x", "-benchtime of BenchmarkHeartbeatIngestion")
	flag.IntVar(&o.startTowns, "startup-towns", 1000, "towns in the store of the start-up measurement")
	flag.IntVar(&o.startups, "startups", 3, "start-ups of each store (the median is reported)")
	flag.DurationVar(&o.startTimeout, "startup-timeout", time.Minute, "give up on a start-up after this long")
	flag.IntVar(&o.clusterTowns, "cluster-towns", 1000, "towns, each with a connected container, in the cluster phase's rotation and coordinator failover")
	flag.IntVar(&o.clusterConnects, "cluster-connects", 200, "connects of each kind (container token through the callout, nkey) in the cluster phase")
	flag.DurationVar(&o.leaseTTL, "cluster-lease-ttl", 3*time.Second, "lease TTL (--lease-ttl) of the coordinators in the cluster phase's coordinator failover (whole seconds, at least 2s)")
	flag.IntVar(&o.failoverKills, "failover-kills", 2, "SIGKILLs of a stream leader in the cluster phase's node failover (each killed node is restarted before the next)")
	flag.DurationVar(&o.failoverEvery, "failover-write-every", 10*time.Millisecond, "one KV write this often during the node failover")
	flag.DurationVar(&o.failoverTimeout, "failover-write-timeout", 500*time.Millisecond, "deadline of each KV write during the node failover")
	flag.StringVar(&o.natsServer, "nats-server", "bin/nats-server", "the nats-server binary of the node failover (real processes; $GASTOWN_NATS_SERVER wins)")
	flag.StringVar(&o.clusterProfile, "cluster-cpuprofile", "", "write a CPU profile of an extra authenticated RPC run across the cluster (concurrent callers) to this file")
	flag.StringVar(&o.clusterRotProfile, "cluster-rotation-cpuprofile", "", "write a CPU profile of extra rotation rounds on the cluster (after the measured ones) to this file")
	flag.BoolVar(&serveMetrics, "metrics", true, "daemons serve Prometheus metrics on a free loopback port, as --metrics-listen does (false: no instruments at all)")
	flag.Parse()
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	results, err := run(ctx, o)
	printTable(os.Stdout, results)
	if o.jsonPath != "" {
		if werr := writeJSON(o.jsonPath, results); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
			os.Exit(1)
		}
		fmt.Printf("\nwrote %d results to %s\n", len(results), o.jsonPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (o options) check() error {
	for _, p := range strings.Split(o.only, ",") {
		if !slices.Contains(phases, strings.TrimSpace(p)) {
			return fmt.Errorf("-only: unknown phase %q (phases: %s)", p, strings.Join(phases, ", "))
		}
	}
	switch {
	case !slices.Contains([]string{"bus", "plain", "http"}, o.profileOf):
		return fmt.Errorf("-cpuprofile-system must be bus, plain or http")
	case o.duration <= 0 || o.rounds < 1 || o.concurrency < 1 || o.floodRate < 1:
		return fmt.Errorf("-duration, -rounds, -concurrency and -flood-rate must be positive")
	case o.rotTowns < 1 || o.rotRounds < 1 || o.rotInflight < 1 || o.agentTowns < 1 || o.agentsPer < 1 || o.startTowns < 0 || o.startups < 1:
		return fmt.Errorf("counts must be positive")
	case o.clusterTowns < 2 || o.clusterConnects < 1 || o.failoverKills < 1:
		return fmt.Errorf("-cluster-towns must be at least 2 (two coordinators share them), -cluster-connects and -failover-kills at least 1")
	case o.leaseTTL < 2*time.Second || o.leaseTTL%time.Second != 0:
		return fmt.Errorf("-cluster-lease-ttl must be whole seconds, at least 2s (JetStream counts TTLs in seconds), not %s", o.leaseTTL)
	case o.failoverEvery <= 0 || o.failoverTimeout <= 0:
		return fmt.Errorf("-failover-write-every and -failover-write-timeout must be positive")
	}
	return nil
}

func (o options) wants(phase string) bool {
	for _, p := range strings.Split(o.only, ",") {
		if strings.TrimSpace(p) == phase {
			return true
		}
	}
	return false
}

// run runs the chosen phases in order. A failed phase is reported and the
// others still run; the results so far are always returned.
func run(ctx context.Context, o options) ([]Result, error) {
	type phase struct {
		name string
		f    func(context.Context, options) ([]Result, error)
	}
	all := []phase{
		{"rpc", benchRPC},
		{"fairness", benchFairness},
		{"rotation", benchRotation},
		{"heartbeat", benchHeartbeat},
		{"memory", benchMemory},
		{"startup", benchStartup},
		{"cluster", benchClusterPhase},
	}
	results := []Result{loadResult("env.loadavg.start"), {Name: "env.cpus", Value: float64(runtime.NumCPU()), Unit: "cpus",
		Note: fmt.Sprintf("GOMAXPROCS %d, %s", runtime.GOMAXPROCS(0), runtime.Version())}}
	var failed []string
	for _, p := range all {
		if !o.wants(p.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		progress("== %s", p.name)
		rs, err := p.f(ctx, o)
		results = append(results, rs...)
		if err != nil {
			progress("%s failed: %v", p.name, err)
			failed = append(failed, p.name)
		}
		progress("== %s done in %s", p.name, time.Since(start).Round(time.Millisecond))
	}
	results = append(results, loadResult("env.loadavg.end"))
	if len(failed) > 0 {
		return results, fmt.Errorf("phases failed: %s", strings.Join(failed, ", "))
	}
	return results, ctx.Err()
}

// loadResult reports the machine's 1-minute load average: above the number
// of cores, other processes were competing for them.
func loadResult(name string) Result {
	r := Result{Name: name, Unit: "load", Note: "1-minute load average from /proc/loadavg; above env.cpus, other processes competed for the cores"}
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		r.Note = "no /proc/loadavg: " + err.Error()
		return r
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		r.Value, _ = strconv.ParseFloat(f[0], 64)
	}
	return r
}

// progress prints what is happening to stderr, so stdout keeps the table.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// discard is the logger of every daemon, client and server started here.
var discard = slog.New(slog.DiscardHandler)

// Result is one measurement. Baseline and Ratio are null when there is no
// baseline; Ratio is Value/Baseline.
type Result struct {
	Name     string   `json:"name"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline"`
	Ratio    *float64 `json:"ratio"`
	Target   string   `json:"target"`
	// Status is PASS or MISS when there is a target, informational only.
	Status string `json:"status,omitempty"`
	Note   string `json:"note"`
}

// withBaseline sets the baseline and the ratio Value/baseline.
func (r Result) withBaseline(b float64) Result {
	r.Baseline = &b
	if b != 0 {
		q := r.Value / b
		r.Ratio = &q
	}
	return r
}

// judged sets the target and whether it was met.
func (r Result) judged(target string, met bool) Result {
	r.Target = target
	r.Status = "MISS"
	if met {
		r.Status = "PASS"
	}
	return r
}

func writeJSON(path string, rs []Result) error {
	if rs == nil {
		rs = []Result{}
	}
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func printTable(w io.Writer, rs []Result) {
	rows := [][]string{{"name", "value", "unit", "baseline", "ratio", "target"}}
	for _, r := range rs {
		base, ratio := "", ""
		if r.Baseline != nil {
			base = num(*r.Baseline)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		target := r.Target
		if r.Status != "" {
			target += " " + r.Status
		}
		rows = append(rows, []string{r.Name, num(r.Value), r.Unit, base, ratio, target})
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	fmt.Fprintln(w)
	for n, row := range rows {
		var sb strings.Builder
		for i, c := range row {
			if i == 1 || i == 3 || i == 4 { // numbers right-aligned
				fmt.Fprintf(&sb, "%*s  ", width[i], c)
			} else {
				fmt.Fprintf(&sb, "%-*s  ", width[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
		if n == 0 {
			total := len(width)*2 - 2
			for _, x := range width {
				total += x
			}
			fmt.Fprintln(w, strings.Repeat("-", total))
		}
	}
	var notes []string
	for _, r := range rs {
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("  %s: %s", r.Name, r.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

// num formats a number with sensible precision.
func num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a == 0:
		return "0"
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
