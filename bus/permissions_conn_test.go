package bus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gastown/gastown/coordinator/token"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A container's connection may publish heartbeats, RPC requests and token
// requests, and hear its token pushes, dispatches, control requests and its
// own inbox (PROTOCOL.md, Connecting).
func TestContainerAllowed(t *testing.T) {
	f := newFixture(t, token.AuthConfig{})
	tok := f.mint(t, "A", time.Hour)

	t.Run("publish", func(t *testing.T) {
		for _, subject := range []string{
			"gastown.town.A.heartbeat",
			"gastown.town.A.rpc.x.y",
			"gastown.town.A.token.get",
		} {
			t.Run(subject, func(t *testing.T) {
				sub, err := f.nc.SubscribeSync(subject)
				require.NoError(t, err)
				t.Cleanup(func() { _ = sub.Unsubscribe() })
				require.NoError(t, f.nc.Flush())

				c := f.connectTown(t, "A", tok)
				require.NoError(t, c.nc.Publish(subject, []byte("from A")))
				require.NoError(t, c.nc.Flush())
				requireMsg(t, sub, "from A")
				c.requireNoErrors(t)
			})
		}
	})

	t.Run("subscribe", func(t *testing.T) {
		for _, tc := range []struct{ subscribe, queue, publish string }{
			{"gastown.town.A.token", "container", "gastown.town.A.token"},
			{"gastown.town.A.dispatch", "container", "gastown.town.A.dispatch"},
			{"gastown.town.A.control.stop", "container", "gastown.town.A.control.stop"},
			{"gastown.town.A.control.>", "container", "gastown.town.A.control.stop"},
			{"_INBOX.gastown.A.>", "", "_INBOX.gastown.A.xyz"},
		} {
			t.Run(tc.subscribe, func(t *testing.T) {
				c := f.connectTown(t, "A", tok)
				sub, err := c.nc.QueueSubscribeSync(tc.subscribe, tc.queue)
				require.NoError(t, err)
				require.NoError(t, c.nc.Flush())
				c.requireNoErrors(t)

				require.NoError(t, f.nc.Publish(tc.publish, []byte("to A")))
				require.NoError(t, f.nc.Flush())
				requireMsg(t, sub, "to A")
			})
		}
	})

	t.Run("queue subscribe in the container group", func(t *testing.T) {
		c := f.connectTown(t, "A", tok)
		sub, err := c.nc.QueueSubscribeSync("gastown.town.A.dispatch", "container")
		require.NoError(t, err)
		require.NoError(t, c.nc.Flush())
		c.requireNoErrors(t)
		require.NoError(t, f.nc.Publish("gastown.town.A.dispatch", []byte("start")))
		require.NoError(t, f.nc.Flush())
		requireMsg(t, sub, "start")
	})

	t.Run("reply to a token push", func(t *testing.T) {
		c := f.connectTown(t, "A", tok)
		sub, err := c.nc.QueueSubscribeSync("gastown.town.A.token", "container")
		require.NoError(t, err)
		require.NoError(t, c.nc.Flush())

		done := make(chan error, 1)
		go func() {
			m, err := f.nc.Request("gastown.town.A.token", []byte("new token"), waitFor)
			if err == nil && string(m.Data) != "ack" {
				err = fmt.Errorf("reply %q, want ack", m.Data)
			}
			done <- err
		}()
		m := requireMsg(t, sub, "new token")
		require.NoError(t, m.Respond([]byte("ack")))
		require.NoError(t, <-done)

		// The response permission is for one reply only.
		require.NoError(t, m.Respond([]byte("again")))
		require.NoError(t, c.nc.Flush())
		c.requireViolation(t, "Publish", m.Reply)
	})

	t.Run("request a token and hear the reply on its inbox", func(t *testing.T) {
		resp, err := f.nc.Subscribe("gastown.town.A.token.get", func(m *nats.Msg) { _ = m.Respond([]byte("token")) })
		require.NoError(t, err)
		t.Cleanup(func() { _ = resp.Unsubscribe() })
		require.NoError(t, f.nc.Flush())

		c := f.connectTown(t, "A", tok)
		m, err := c.nc.Request("gastown.town.A.token.get", []byte("give"), waitFor)
		require.NoError(t, err)
		require.Equal(t, "token", string(m.Data))
		require.Regexp(t, `^_INBOX\.gastown\.A\.`, m.Subject)
		c.requireNoErrors(t)
	})
}

// Anything else is a permissions violation, and nothing crosses.
func TestContainerDenied(t *testing.T) {
	f := newFixture(t, token.AuthConfig{})
	tok := f.mint(t, "A", time.Hour)

	t.Run("subscribe", func(t *testing.T) {
		for _, tc := range []struct{ subscribe, sample string }{
			{"gastown.town.B.token", "gastown.town.B.token"},
			{"gastown.town.B.dispatch", "gastown.town.B.dispatch"},
			{"_INBOX.>", "_INBOX.gastown.B.xyz"},
			{"gastown.>", "gastown.town.B.token"},
			{"_INBOX.gastown.B.>", "_INBOX.gastown.B.xyz"},
			{"gastown.town.A.rpc.>", "gastown.town.A.rpc.bead.get"},
			{"gastown.town.*.token", "gastown.town.B.token"},
			{"gastown.town.A.heartbeat", "gastown.town.A.heartbeat"},
			{"gastown.town.A.events", "gastown.town.A.events"},
			{"gastown.town.A.token.get", "gastown.town.A.token.get"},
			{"gastown.admin.>", "gastown.admin.token.rotate"},
			{"_INBOX.gastown_admin.>", "_INBOX.gastown_admin.xyz"},
			{"_INBOX.gastown_coordinator.>", "_INBOX.gastown_coordinator.xyz"},
			{">", "gastown.town.B.token"},
			// Its own pushes only in the container queue group: a plain
			// subscriber (a thief's second connection) would hear every one.
			{"gastown.town.A.token", "gastown.town.A.token"},
			{"gastown.town.A.dispatch", "gastown.town.A.dispatch"},
			{"gastown.town.A.control.>", "gastown.town.A.control.stop"},
		} {
			t.Run(tc.subscribe, func(t *testing.T) {
				c := f.connectTown(t, "A", tok)
				sub, err := c.nc.SubscribeSync(tc.subscribe)
				require.NoError(t, err)
				require.NoError(t, c.nc.Flush())
				c.requireViolation(t, "Subscription", tc.subscribe)

				require.NoError(t, f.nc.Publish(tc.sample, []byte("secret")))
				require.NoError(t, f.nc.Flush())
				require.NoError(t, c.nc.Flush())
				requireNoMsg(t, sub)
			})
		}
	})

	t.Run("publish", func(t *testing.T) {
		for _, subject := range []string{
			"gastown.town.B.heartbeat",
			"gastown.town.B.rpc.bead.get",
			"gastown.town.B.token.get",
			"gastown.town.A.events",
			"gastown.admin.token.rotate",
			"gastown.town.A.token",
			"gastown.town.A.dispatch",
			"gastown.town.A.control.stop",
			"_INBOX.gastown_coordinator.xyz",
			"_INBOX.gastown.B.xyz",
			"$JS.API.INFO",
			"$SYS.REQ.SERVER.PING.CONNZ",
			"$SYS.REQ.USER.INFO",
		} {
			t.Run(subject, func(t *testing.T) {
				sub, err := f.nc.SubscribeSync(subject)
				require.NoError(t, err)
				t.Cleanup(func() { _ = sub.Unsubscribe() })
				require.NoError(t, f.nc.Flush())

				c := f.connectTown(t, "A", tok)
				require.NoError(t, c.nc.Publish(subject, []byte("forged")))
				require.NoError(t, c.nc.Flush())
				c.requireViolation(t, "Publish", subject)
				require.NoError(t, f.nc.Flush())
				requireNoMsg(t, sub)
			})
		}
	})

	t.Run("a violation does not close the connection", func(t *testing.T) {
		c := f.connectTown(t, "A", tok)
		require.NoError(t, c.nc.Publish("gastown.town.B.heartbeat", nil))
		require.NoError(t, c.nc.Flush())
		c.requireViolation(t, "Publish", "gastown.town.B.heartbeat")
		require.True(t, c.nc.IsConnected())
	})
}
