package coordinator_test

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/coordinator/coordinatortest"
	"github.com/gastown/gastown/schemas"
)

// BenchmarkRPCPing is one tool call end to end, all in this process: the
// container's tool client (encode, headers, request, decode), the embedded
// server, and the coordinator's middleware (reply rule, token, limiter,
// metrics, the reply's encoding). allocs/op counts every side's
// allocations; the bench program's rpc rows measure the same call against
// plain request/reply. "parallel" runs 32 callers per CPU on the one
// connection, as the bench's 64 callers on two cores do.
func BenchmarkRPCPing(b *testing.B) {
	cfg := coordinator.Config{}
	cfg.Limits.RPCRate = 1e9 // charged on every call, never refusing (as in the bench program)
	h := coordinatortest.Start(b, cfg)
	src, err := agentclient.Start(context.Background(), agentclient.Config{
		URL: h.URL(), Token: h.ContainerToken("bench"), ContainerID: "c-bench", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(src.Close)
	client := agentclient.NewClient(src, "", "")
	ping := func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var out schemas.PingResult
		if err := client.Call(ctx, schemas.ToolPing, nil, &out); err != nil || out.TownID != "bench" {
			b.Errorf("ping: %v %+v", err, out)
		}
	}
	ping(b) // the subscription's interest and the token cache are warm
	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			ping(b)
		}
		reportCPU(b, cpu)
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32)
		cpu := processCPU()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ping(b)
			}
		})
		reportCPU(b, cpu)
	})
}

// reportCPU reports the process's CPU time since cpu per op: every side
// of the call (callers, servers, coordinators), steadier than ns/op on a
// shared machine.
func reportCPU(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the process's CPU time so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
