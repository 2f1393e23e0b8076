package conformance

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/schemas"
)

// lostBusExitCode is the status the agent of checkExitKept exits with.
const lostBusExitCode = 7

// checkExitKept: a container keeps each exit in its heartbeats until one
// carrying it was published (PROTOCOL.md, Heartbeat). The kit cuts the
// container off the bus (every connection through the kit's proxy closed,
// new ones refused; its token stays good), makes an agent exit, lets a few
// heartbeat intervals pass and gives the bus back: a heartbeat after that
// must report the exit with its code.
func (k *kit) checkExitKept(ctx context.Context) {
	k.check("an exit while the bus is away is reported once the container is back", func() error {
		run := k.nextRun()
		req := k.startReq("a7", run, schemas.RoleTriage, ModeExitLater)
		req.Env[EnvExitCode] = strconv.Itoa(lostBusExitCode)
		from := k.obs.numBeats()
		if _, err := k.dispatch(ctx, req); err != nil {
			return err
		}
		rep, err := k.report(ctx, run)
		if err != nil {
			return err
		}
		if err := k.listed(ctx, from, "a7", run); err != nil {
			return err
		}
		k.proxy.cut()
		cutAt := k.obs.numBeats()
		restored := false
		restore := func() {
			if !restored {
				k.proxy.restore()
				restored = true
			}
		}
		defer restore()
		// The exit must come with no connection of the container's open.
		if !waitFor(ctx, k.cfg.Timeout, func() bool {
			for _, c := range k.containerConns() {
				if c.Stop.IsZero() {
					return false
				}
			}
			return true
		}) {
			return errors.New("the kit cut the container off its bus, but the bus still has a connection of the container's open")
		}
		if err := os.WriteFile(filepath.Join(k.reports, run+".exit"), nil, 0o600); err != nil {
			return errors.Wrap(err, "telling the kit's agent to exit")
		}
		if !waitFor(ctx, k.cfg.Timeout, func() bool { return !alive(rep.PID) }) {
			return errors.Newf("the kit's agent (pid %d) did not exit, or the container did not reap it", rep.PID)
		}
		// The container heartbeats a few times with no bus to send on.
		idle := time.NewTimer(4 * k.cfg.HeartbeatInterval)
		select {
		case <-ctx.Done():
			idle.Stop()
			return ctx.Err()
		case <-idle.C:
		}
		for _, b := range k.obs.beatsSince(cutAt) {
			for _, e := range b.hb.Exits {
				if e.AgentID == "a7" && e.RunID == run {
					return errors.New("a heartbeat reported the exit while the kit had cut the container off the bus: the kit could not take the bus away")
				}
			}
		}
		back := k.obs.numBeats()
		restore()
		code, found := 0, false
		// The container backs off its reconnects: give it the timeout on
		// top of the time it was away.
		waitFor(ctx, k.cfg.Timeout, func() bool {
			for _, b := range k.obs.beatsSince(back) {
				for _, e := range b.hb.Exits {
					if e.AgentID == "a7" && e.RunID == run {
						code, found = e.ExitCode, true
						return true
					}
				}
			}
			return false
		})
		switch {
		case !found && k.obs.numBeats() == back:
			return errors.Newf("no heartbeat within %s of the bus coming back: does the container reconnect?", k.cfg.Timeout)
		case !found:
			return errors.Newf("the heartbeats after the bus came back do not report the exit of agent a7 run %s: an exit must stay in heartbeats until one carrying it was published", run)
		case code != lostBusExitCode:
			return errors.Newf("the exit code is %d, not %d", code, lostBusExitCode)
		}
		return nil
	})
}
