package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// rotationTarget is the target for a rotation of every town.
const rotationTarget = time.Second

func townName(i int) string { return fmt.Sprintf("t%04d", i) }

// benchRotation connects one container per town and times forced
// rotations of every town (o.rotInflight requests at a time, from the
// daemon's own connection), each of which its container must acknowledge;
// then the same with bare containers that only acknowledge.
func benchRotation(ctx context.Context, o options) ([]Result, error) {
	d, err := startDaemon(ctx, newSecret(), "")
	if err != nil {
		return nil, err
	}
	defer d.close()
	n := o.rotTowns
	progress("rotation: creating %d towns", n) // token.rotate and token.revoke refuse unknown towns
	if err := createTowns(ctx, d.Conn(), n, townName); err != nil {
		return nil, fmt.Errorf("creating towns: %w", err)
	}

	progress("rotation: connecting %d containers", n)
	srcs := make([]*agentclient.TokenSource, n) // each index written by one goroutine
	defer func() {
		// Close them all at once: each Close waits for its connection.
		var wg sync.WaitGroup
		for _, s := range srcs {
			if s != nil {
				wg.Go(s.Close)
			}
		}
		wg.Wait()
	}()
	t0 := time.Now()
	if _, err := parallel(ctx, n, 32, func(i int) error {
		tok, err := d.containerToken(townName(i))
		if err != nil {
			return err
		}
		s, err := agentclient.Start(ctx, agentclient.Config{URL: d.URL(), Token: tok, ContainerID: "c-" + townName(i), Logger: discard})
		if err != nil {
			return err
		}
		srcs[i] = s
		return nil
	}); err != nil {
		return nil, fmt.Errorf("connecting containers: %w", err)
	}
	connect := time.Since(t0)
	if err := settle(ctx, d, n); err != nil {
		return nil, err
	}

	if o.rotProfile != "" {
		f, err := os.Create(o.rotProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	// A rotation costs a container an acknowledgement: its connection moves
	// to the newest token at half its life, not per rotation.
	times, err := rotateAll(ctx, d.Conn(), o, "agentclient", func() (func() error, error) {
		return func() error { return settle(ctx, d, n) }, nil
	})
	if err != nil {
		return nil, err
	}
	if s := switches(srcs); s != 0 {
		return nil, fmt.Errorf("containers reconnected %d times during rotations; they should not", s)
	}

	// A revocation of every town is final: every container's connection
	// is closed before the revocation answers, and nothing is pushed.
	progress("rotation: revoking the tokens of all %d towns", n)
	revoked, err := revokeAll(ctx, d, o, n)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for i, s := range srcs {
		wg.Go(s.Close)
		srcs[i] = nil
	}
	wg.Wait()
	if err := settleAt(ctx, d, d.base); err != nil {
		return nil, err
	}

	// The same with bare containers that store nothing and never switch
	// connections: what the coordinator and the bus alone take, without
	// the containers' reconnections competing for this machine's cores.
	// Their tokens are minted after the revocation.
	progress("rotation: replacing the containers with %d bare ones that only acknowledge", n)
	bare := make([]*nats.Conn, n)
	defer func() {
		for _, nc := range bare {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	ack, err := schemas.Encode(&schemas.Ack{OK: true})
	if err != nil {
		return nil, err
	}
	if _, err := parallel(ctx, n, 32, func(i int) error {
		t := mustTown(townName(i))
		tok, err := d.containerToken(t.ID())
		if err != nil {
			return err
		}
		nc, err := nats.Connect(d.URL(), nats.Token(tok), nats.CustomInboxPrefix(t.Inbox()), nats.Name("bare-"+t.ID()))
		if err != nil {
			return err
		}
		bare[i] = nc
		if _, err := nc.QueueSubscribe(t.Token(), schemas.ContainerQueue, func(m *nats.Msg) {
			var rot schemas.TokenRotation
			if err := schemas.Decode(m.Data, &rot); err != nil || rot.TownID != t.ID() {
				_ = bus.Respond(m, &schemas.Ack{Error: "bad rotation"})
				return
			}
			_ = m.Respond(ack)
		}); err != nil {
			return err
		}
		return nc.Flush()
	}); err != nil {
		return nil, fmt.Errorf("connecting bare containers: %w", err)
	}
	if err := settle(ctx, d, n); err != nil {
		return nil, err
	}
	bareTimes, err := rotateAll(ctx, d.Conn(), o, "bare", func() (func() error, error) { return func() error { return nil }, nil })
	if err != nil {
		return nil, err
	}

	med, all := medianMS(times.each)
	bmed, ball := medianMS(bareTimes.each)
	rot := Result{Name: "rotation.fanout", Value: med, Unit: "ms",
		Note: fmt.Sprintf("median of %d forced rotations of all %d towns, each container an agentclient.TokenSource in this process (it stores the token and acknowledges; its connection moves to the newest token only at half its life, and no container reconnected during the rounds); token.rotate from Daemon.Conn(), %d in flight, every one acknowledged; rounds (ms): %v; the process kept %.2f of %d cores busy during the rounds",
			len(times.each), n, o.rotInflight, all, times.cores(), runtime.NumCPU())}
	bareRot := Result{Name: "rotation.fanout.bare", Value: bmed, Unit: "ms",
		Note: fmt.Sprintf("the same with bare containers (a plain connection that acknowledges and never reconnects); rounds (ms): %v; %.2f of %d cores busy", ball, bareTimes.cores(), runtime.NumCPU())}
	target := fmt.Sprintf("< %s", rotationTarget)
	return []Result{
		rot.judged(target, med < ms(rotationTarget)),
		bareRot.judged(target, bmed < ms(rotationTarget)),
		{Name: "rotation.revoke.closed", Value: ms(revoked), Unit: "ms",
			Note: fmt.Sprintf("token.revoke of all %d towns, %d in flight: each revocation saved and every connection using a revoked token closed before it answers (nothing pushed)", n, o.rotInflight)},
		{Name: "rotation.connect", Value: ms(connect), Unit: "ms",
			Note: fmt.Sprintf("agentclient.Start of %d containers, 32 at a time (connect + token.get each)", n)},
	}, nil
}

// switches counts the connection moves of every source.
func switches(srcs []*agentclient.TokenSource) int64 {
	var n int64
	for _, s := range srcs {
		n += s.Switches()
	}
	return n
}

// revokeAll revokes every town's tokens, o.rotInflight at a time, and
// times how long until every revocation was answered: each is saved and
// has closed every connection using a revoked token before it answers.
func revokeAll(ctx context.Context, d *daemon, o options, n int) (time.Duration, error) {
	start := time.Now()
	if _, err := parallel(ctx, n, o.rotInflight, func(i int) error {
		var res schemas.RevokeResult
		if err := admin(ctx, d.Conn(), schemas.AdminTokenRevoke, schemas.TownRequest{TownID: townName(i)}, &res); err != nil {
			return err
		}
		if res.Closed < 1 {
			return fmt.Errorf("town %s: the revocation closed no connection", townName(i))
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("revoking: %w", err)
	}
	return time.Since(start), nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// medianMS is the median of ds in milliseconds, and all of them.
func medianMS(ds []time.Duration) (float64, []string) {
	var all []string
	for _, t := range ds {
		all = append(all, fmt.Sprintf("%.0f", ms(t)))
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return ms(sorted[len(sorted)/2]), all
}

// rounds are the times of rotation rounds, and the process CPU they used.
type rounds struct {
	each      []time.Duration
	wall, cpu time.Duration
}

// cores is how many cores the process kept busy on average.
func (r rounds) cores() float64 { return r.cpu.Seconds() / r.wall.Seconds() }

// cpuTime is the process's CPU time so far (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rotateAll forces o.rotRounds rotations of every town through the admin
// connection nc and times each round. prepare runs before a round and
// returns what to wait for after it.
func rotateAll(ctx context.Context, nc *nats.Conn, o options, kind string, prepare func() (func() error, error)) (rounds, error) {
	n := o.rotTowns
	var times rounds
	for r := range o.rotRounds {
		after, err := prepare()
		if err != nil {
			return times, err
		}
		var acked, idle, failed int
		var firstErr error
		var mu sync.Mutex
		cpu0 := cpuTime()
		start := time.Now()
		_, err = parallel(ctx, n, o.rotInflight, func(i int) error {
			var res schemas.RotateResult
			err := admin(ctx, nc, schemas.AdminTokenRotate, schemas.TownRequest{TownID: townName(i)}, &res)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
			case res.Acknowledged:
				acked++
			case res.Idle:
				idle++
				err = fmt.Errorf("town %s idle", res.TownID)
			default:
				failed++
				err = fmt.Errorf("town %s: %s", res.TownID, res.Error)
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			return err
		})
		took := time.Since(start)
		times.cpu += cpuTime() - cpu0
		times.wall += took
		progress("rotation (%s) round %d/%d: %d of %d acknowledged in %s", kind, r+1, o.rotRounds, acked, n, took.Round(time.Millisecond))
		if err != nil || acked != n {
			return times, fmt.Errorf("rotation (%s) round %d: %d acknowledged, %d idle, %d failed of %d: %v", kind, r+1, acked, idle, failed, n, firstErr)
		}
		times.each = append(times.each, took)
		if err := after(); err != nil {
			return times, err
		}
	}
	return times, nil
}

// settle waits until the server counts exactly n containers plus the
// coordinator's own connection, for 200 ms in a row: old connections of
// the containers are closed.
func settle(ctx context.Context, d *daemon, n int) error { return settleAt(ctx, d, n+d.base) }

// settleAt waits until the server counts exactly want connections, for
// 200 ms in a row.
func settleAt(ctx context.Context, d *daemon, want int) error {
	var since time.Time
	err := waitFor(ctx, 60*time.Second, func() bool {
		if d.Server().NumClients() != want {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= 200*time.Millisecond
	})
	if err != nil {
		return fmt.Errorf("waiting for %d connections (have %d): %w", want, d.Server().NumClients(), err)
	}
	return nil
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
