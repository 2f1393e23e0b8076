package kvstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/coordinator/internal/kvstore"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// cutter is a dialer whose connection, once armed, lets the first write
// carrying a marker (a publish's subject) through to the server and then
// closes, refusing to dial again until released: the write reaches the
// server, and its answer never comes back. The client's request times out
// for real, as a write does whose stream leader died before answering.
type cutter struct {
	mu     sync.Mutex
	marker []byte        // armed while not nil
	cut    chan struct{} // closed once the marked write went through
	reply  string        // the marked publish's reply subject
	down   bool          // dials refused
}

func (c *cutter) replySubject() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reply
}

func (c *cutter) arm(marker string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marker, c.cut = []byte(marker), make(chan struct{})
	return c.cut
}

func (c *cutter) release() {
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
}

func (c *cutter) Dial(network, address string) (net.Conn, error) {
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	if down {
		return nil, errors.New("cutter: the link is cut")
	}
	conn, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: conn, c: c}, nil
}

type cutConn struct {
	net.Conn
	c    *cutter
	dead atomic.Bool // the marked write is going out: read nothing more
}

// Read drops whatever comes once the marked write is going out: the
// server may answer before the link is closed.
func (cc *cutConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	if cc.dead.Load() {
		return 0, net.ErrClosed
	}
	return n, err
}

func (cc *cutConn) Write(p []byte) (int, error) {
	cc.c.mu.Lock()
	i := -1
	if cc.c.marker != nil {
		i = bytes.Index(p, cc.c.marker)
	}
	hit := i >= 0
	if hit {
		// PUB <subject> <reply> …: the reply follows the marker.
		rest := p[i+len(cc.c.marker):]
		if j := bytes.IndexByte(rest, ' '); j > 0 {
			cc.c.reply = string(rest[:j])
		}
		cc.c.marker, cc.c.down = nil, true
		cc.dead.Store(true)
	}
	cc.c.mu.Unlock()
	n, err := cc.Conn.Write(p)
	if hit {
		_ = cc.Conn.Close()
		close(cc.c.cut)
	}
	return n, err
}

// cuttableJetStream runs a plain JetStream server and returns a
// JetStream on a connection through a cutter (requests time out after a
// second), and one on a connection of its own, to look at the store.
func cuttableJetStream(t *testing.T) (jetstream.JetStream, *cutter, jetstream.JetStream) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	require.NoError(t, err)
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	require.True(t, s.ReadyForConnections(30*time.Second))

	c := &cutter{}
	nc, err := nats.Connect(s.ClientURL(), nats.SetCustomDialer(c), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(time.Second))
	require.NoError(t, err)

	look, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	t.Cleanup(look.Close)
	ljs, err := jetstream.New(look)
	require.NoError(t, err)
	return js, c, ljs
}

// stored waits until the store holds n at key (through its own
// connection), and returns its revision.
func stored(t *testing.T, js jetstream.JetStream, key string, n int) uint64 {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), "kvstore_test")
	require.NoError(t, err)
	var rev uint64
	require.Eventually(t, func() bool {
		e, err := kv.Get(t.Context(), key)
		if err != nil {
			return false
		}
		var c counter
		rev = e.Revision()
		return json.Unmarshal(e.Value(), &c) == nil && c.N == n
	}, time.Minute, 5*time.Millisecond, "the store holds %s = %d", key, n)
	return rev
}

// TestWriteWithLostAnswerIsReadBack: a write that reached the store but
// whose answer was lost (the client's request timed out) is reported as
// done, and done once: Create does not call its own key "already exists"
// or fail, Update does not fail nor apply its change twice, whether the
// read-back right after the timeout finds the write (landed) or the store
// stays silent until Update reads the key again (it recognises its own
// value).
func TestWriteWithLostAnswerIsReadBack(t *testing.T) {
	incr := func(c *counter) error { c.N++; return nil }
	for _, tc := range []struct {
		name string
		// noReadBack: landed does not read the key back at all.
		noReadBack bool
		// write calls arm right before the write whose answer is lost.
		write func(ctx context.Context, b *kvstore.Bucket[counter], arm func()) (counter, error)
		want  int
	}{
		{name: "create", want: 1, write: func(ctx context.Context, b *kvstore.Bucket[counter], arm func()) (counter, error) {
			arm()
			return counter{N: 1}, b.Create(ctx, "k", counter{N: 1})
		}},
		{name: "update", want: 2, write: func(ctx context.Context, b *kvstore.Bucket[counter], arm func()) (counter, error) {
			if err := b.Create(ctx, "k", counter{N: 1}); err != nil {
				return counter{}, err
			}
			arm()
			return b.Update(ctx, "k", incr)
		}},
		{name: "update recognises its own write", noReadBack: true, want: 2, write: func(ctx context.Context, b *kvstore.Bucket[counter], arm func()) (counter, error) {
			if err := b.Create(ctx, "k", counter{N: 1}); err != nil {
				return counter{}, err
			}
			arm()
			return b.Update(ctx, "k", incr)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.noReadBack {
				kvstore.SetLandedTries(t, 0)
			}
			js, cut, look := cuttableJetStream(t)
			b := open(t, js)
			ctx := t.Context()
			armed := make(chan (<-chan struct{}), 1)
			arm := func() { armed <- cut.arm("PUB $KV.kvstore_test.k ") }
			type result struct {
				v   counter
				err error
			}
			done := make(chan result, 1)
			// Every answer to a request, seen from the side: once the
			// store has answered the write, on a link that is down, the
			// answer is gone for good; then let the link back.
			answers, err := look.Conn().SubscribeSync("_INBOX.>")
			require.NoError(t, err)
			require.NoError(t, look.Conn().Flush())
			go func() {
				v, err := tc.write(ctx, b, arm)
				done <- result{v, err}
			}()
			<-<-armed
			reply := cut.replySubject()
			require.NotEmpty(t, reply)
			for {
				m, err := answers.NextMsg(time.Minute)
				require.NoError(t, err, "the store answers the write")
				if m.Subject == reply {
					break
				}
			}
			cut.release()
			rev := stored(t, look, "k", tc.want)

			res := <-done
			require.NoError(t, res.err, "the write landed: it is no failure")
			require.Equal(t, tc.want, res.v.N)
			kv, err := look.KeyValue(ctx, "kvstore_test")
			require.NoError(t, err)
			e, err := kv.Get(ctx, "k")
			require.NoError(t, err)
			require.Equal(t, rev, e.Revision(), "nothing was written after it: the change was applied once")
			require.Eventually(t, func() bool { got, ok := b.Get("k"); return ok && got.N == tc.want },
				time.Minute, 5*time.Millisecond, "the view shows the write")
			require.Zero(t, b.WriteErrors())
		})
	}
}
