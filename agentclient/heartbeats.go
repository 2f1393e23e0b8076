package agentclient

import (
	"context"
	"time"

	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
)

// DefaultHeartbeatInterval is how often a container reports its agents.
const DefaultHeartbeatInterval = 30 * time.Second

// RunHeartbeats publishes one Heartbeat at once and then every interval
// until ctx is done, listing every agent of the runner and its exits. The
// interval is the newest one the coordinator sent in a TokenRotation
// (PROTOCOL.md, The heartbeat interval); interval (DefaultHeartbeatInterval
// when not positive) only until it has sent one. It sends on the source's
// newest connection; exits whose heartbeat could not be sent go out with
// the next one. The runner's clock times them.
func RunHeartbeats(ctx context.Context, src *TokenSource, runner *Runner, containerID string, interval time.Duration, now func() time.Time) {
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	if now == nil {
		now = time.Now
	}
	every := func() time.Duration {
		if d := src.HeartbeatInterval(); d > 0 {
			return d
		}
		return interval
	}
	cur := every()
	t := runner.cfg.Clock.NewTicker(cur)
	defer t.Stop()
	for {
		sendHeartbeat(ctx, src, runner, containerID, now)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-src.HeartbeatIntervalChanged():
			if d := every(); d != cur {
				cur = d
				t.Reset(cur)
			}
		}
	}
}

func sendHeartbeat(ctx context.Context, src *TokenSource, runner *Runner, containerID string, now func() time.Time) {
	agents, exits := runner.Beat()
	hb := &schemas.Heartbeat{TownID: src.Town().ID(), ContainerID: containerID, SentAt: now().UTC(), Agents: agents, Exits: exits}
	data, err := schemas.Encode(hb)
	if err == nil {
		err = src.Do(ctx, func(_ context.Context, nc *nats.Conn) error { return nc.Publish(src.Town().Heartbeat(), data) })
	}
	if err != nil {
		runner.requeue(exits)
		src.log.Warn("heartbeat not sent; its exits go with the next one", keyErr, err)
	}
}
