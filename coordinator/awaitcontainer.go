package coordinator

import (
	"context"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/gastown/gastown/schemas"
)

// reasonNoContainer is a dispatch that failed because nobody answers the
// town's …dispatch: no container of the town is connected.
const reasonNoContainer = "no container of the town is connected"

// containerArrived is called when a container of the town shows itself
// (it asks …token.get, or sends its first heartbeat after none): the
// agents waiting on the dispatch cooldown only because no container was
// connected are due at once, so patrol dispatches them on its next round
// instead of after the cooldown (the mayor of a town created before its
// container, first of all). The check is in memory; the writes, only when
// such agents exist, run on their own so the handler that called it is
// not held up. heard is the noContainer stamp of when it was heard from.
func (c *Coordinator) containerArrived(townID string, heard uint64) {
	c.noContainer.remove(townID, heard) // a dispatch failing for want of it warns again
	now := c.now()
	waiting := c.st.agents.List(func(_ string, a Agent) bool {
		return a.TownID == townID && a.AwaitsContainer && a.Status != AgentWorking && a.NextAttemptAt.After(now)
	})
	if len(waiting) == 0 {
		return
	}
	c.wg.Go(func() {
		ctx, cancel := context.WithTimeout(c.runCtx, c.cfg.RequestTimeout)
		defer cancel()
		for _, w := range waiting {
			_, err := c.st.agents.Update(ctx, schemas.Key(townID, w.AgentID), func(a *Agent) error {
				if !a.AwaitsContainer || a.Status == AgentWorking {
					return errNoChange
				}
				a.AwaitsContainer, a.NextAttemptAt, a.UpdatedAt = false, now, now
				return nil
			})
			switch {
			case err == nil:
				c.log.Info("container connected: agent due for dispatch", KeyTown, townID, KeyAgent, w.AgentID)
			case !errors.Is(err, errNoChange) && !errors.Is(err, kvstore.ErrKeyNotFound):
				c.log.Warn("making an agent due for dispatch", KeyTown, townID, KeyAgent, w.AgentID, KeyErr, err)
			}
		}
	})
}
