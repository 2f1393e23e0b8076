package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// The fairness phase: a quiet town's tool calls while another town floods
// the coordinator, against the same calls while nobody floods, in the same
// run, on a coordinator with the default limits.
const (
	floodTown = "flood"
	quietTown = "quiet"
	// quietEvery paces the quiet town's calls: 25 a second, well within
	// its own write rate.
	quietEvery   = 40 * time.Millisecond
	floodWorkers = 16
	// fairnessTarget: the quiet town's p99 during a flood within this many
	// times its idle p99, and no call failed.
	fairnessTarget = 5.0
)

// townClient is a town's connection over TCP with its container token and
// inbox, calling tools as the town's mayor.
type townClient struct {
	nc    *nats.Conn
	town  string
	token string
}

func connectTown(d *daemon, town string) (*townClient, error) {
	tok, err := d.containerToken(town)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(d.URL(), nats.Token(tok), nats.Name("bench-"+town), nats.CustomInboxPrefix(mustTown(town).Inbox()))
	if err != nil {
		return nil, fmt.Errorf("connecting town %s: %w", town, err)
	}
	return &townClient{nc: nc, town: town, token: tok}, nil
}

// checkpoint is the mayor's checkpoint call: a state write.
func (c *townClient) checkpoint(note string) *nats.Msg {
	subject, _ := mustTown(c.town).RPC(schemas.ToolCheckpoint)
	m := nats.NewMsg(subject)
	m.Data, _ = json.Marshal(schemas.Checkpoint{Note: note})
	m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+c.token)
	m.Header.Set(schemas.AgentIDHeader, coordinator.MayorID)
	m.Header.Set(schemas.RigIDHeader, coordinator.MayorRig)
	return m
}

// paced calls the quiet town's checkpoint every quietEvery for dur and
// returns the latencies of the calls that succeeded, sorted, and the
// failures.
func (c *townClient) paced(ctx context.Context, dur time.Duration) (lat []time.Duration, failed int, first error) {
	tick := time.NewTicker(quietEvery)
	defer tick.Stop()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t0 := time.Now()
		err := bus.Call(cctx, c.nc, c.checkpoint(fmt.Sprintf("quiet %d", i)), nil)
		d := time.Since(t0)
		cancel()
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		} else {
			lat = append(lat, d)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	slices.Sort(lat)
	return lat, failed, first
}

// floodStats is what the flooding town's requests got.
type floodStats struct {
	sent, ok, refused, other atomic.Int64
}

// flood publishes checkpoint requests from floodWorkers goroutines at rate
// a second until ctx is done, each answered on the town's inbox, where
// the answers are counted.
func (c *townClient) flood(ctx context.Context, rate int, st *floodStats) error {
	inbox := mustTown(c.town).Inbox() + ".flood"
	sub, err := c.nc.Subscribe(inbox+".>", func(m *nats.Msg) {
		switch m.Header.Get(schemas.ErrorHeader) {
		case "":
			st.ok.Add(1)
		case string(schemas.CodeResourceExhausted):
			st.refused.Add(1)
		default:
			st.other.Add(1)
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range floodWorkers {
		wg.Go(func() {
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var mine int64
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-tick.C:
					for owed := int64(now.Sub(start).Seconds() * float64(rate) / floodWorkers); mine < owed; mine++ {
						m := c.checkpoint("flood")
						m.Reply = fmt.Sprintf("%s.%d.%d", inbox, w, mine)
						if c.nc.PublishMsg(m) != nil {
							return
						}
						st.sent.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	return c.nc.Flush()
}

// benchFairness measures the quiet town's checkpoint p99 and failures
// idle, then while the flooding town sends -flood-rate checkpoints a
// second (and for a while after, when a backlog would show), each for
// -duration.
func benchFairness(ctx context.Context, o options) ([]Result, error) {
	d, err := startDaemon(ctx, newSecret(), "")
	if err != nil {
		return nil, fmt.Errorf("starting the coordinator: %w", err)
	}
	defer d.close()
	for _, town := range []string{floodTown, quietTown} {
		if err := admin(ctx, d.Conn(), "town.create", map[string]string{"townId": town}, nil); err != nil {
			return nil, fmt.Errorf("creating town %s: %w", town, err)
		}
	}
	quiet, err := connectTown(d, quietTown)
	if err != nil {
		return nil, err
	}
	defer quiet.nc.Close()
	flooder, err := connectTown(d, floodTown)
	if err != nil {
		return nil, err
	}
	defer flooder.nc.Close()

	progress("fairness: the quiet town alone for %s", o.duration)
	idle, idleFailed, idleErr := quiet.paced(ctx, o.duration)
	if len(idle) == 0 {
		return nil, fmt.Errorf("fairness: no idle call succeeded: %v", idleErr)
	}

	progress("fairness: the quiet town while the other floods %d/s for %s, and %s after", o.floodRate, o.duration, o.duration/2)
	var st floodStats
	fctx, stop := context.WithTimeout(ctx, o.duration)
	defer stop()
	floodStart := time.Now()
	floodErr := make(chan error, 1)
	go func() { floodErr <- flooder.flood(fctx, o.floodRate, &st) }()
	busy, busyFailed, busyErr := quiet.paced(ctx, o.duration+o.duration/2)
	if err := <-floodErr; err != nil {
		return nil, fmt.Errorf("fairness: flooding: %w", err)
	}
	floodFor := min(time.Since(floodStart), o.duration)
	if len(busy) == 0 {
		return nil, fmt.Errorf("fairness: no call succeeded during the flood: %v", busyErr)
	}

	p99 := func(lat []time.Duration) float64 {
		return float64(lat[min(len(lat)-1, len(lat)*99/100)].Nanoseconds()) / 1000
	}
	failNote := func(n int, first error) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprintf("; first failure: %v", first)
	}
	idleP99, busyP99 := p99(idle), p99(busy)
	tail := Result{Name: "fairness.quiet.p99", Value: busyP99, Unit: "µs",
		Note: fmt.Sprintf("the quiet town's checkpoint (a state write) p99 while another town floods %.0f checkpoints/s and for half as long after, %d calls (one every %s); baseline: the same calls with nobody flooding, %d calls, %d failed%s",
			float64(st.sent.Load())/floodFor.Seconds(), len(busy)+busyFailed, quietEvery, len(idle)+idleFailed, idleFailed, failNote(idleFailed, idleErr))}.
		withBaseline(idleP99)
	tail = tail.judged(fmt.Sprintf("<= %.0fx idle", fairnessTarget), *tail.Ratio <= fairnessTarget)
	fails := Result{Name: "fairness.quiet.failures", Value: float64(busyFailed), Unit: "calls",
		Note: "the quiet town's calls that failed during and after the flood (10 s timeout each)" + failNote(busyFailed, busyErr)}.
		judged("0", busyFailed == 0)
	return []Result{
		{Name: "fairness.quiet.p99.idle", Value: idleP99, Unit: "µs"},
		tail,
		fails,
		{Name: "fairness.flood.rate", Value: float64(st.sent.Load()) / floodFor.Seconds(), Unit: "req/s",
			Note: fmt.Sprintf("checkpoint requests the flooding town sent, from %d goroutines, not waiting for answers", floodWorkers)},
		{Name: "fairness.flood.admitted", Value: float64(st.ok.Load()), Unit: "calls",
			Note: fmt.Sprintf("of %d sent; the town's write rate is %d/s with a burst of %d", st.sent.Load(), coordinator.DefaultWriteRate, 2*coordinator.DefaultWriteRate)},
		{Name: "fairness.flood.refused", Value: float64(st.refused.Load()), Unit: "calls",
			Note: fmt.Sprintf("answered resource_exhausted at once, with a retry hint; %d other errors, %d unanswered when measured", st.other.Load(), st.sent.Load()-st.ok.Load()-st.refused.Load()-st.other.Load())},
	}, nil
}
