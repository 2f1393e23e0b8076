package bus_test

import (
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// calloutAtOnce is how many authorization requests one coordinator
// decides at once (CalloutConfig's doc: a connect storm is decided in
// parallel, and a flood cannot take more).
const calloutAtOnce = 32

// heldTokens is a TokenAuthorizer that holds every decision until
// released, counting how many it holds at once.
type heldTokens struct {
	mu       sync.Mutex
	now, max int
	seen     int
	release  chan struct{}
	once     sync.Once
}

// open lets every decision held, and every one to come, through.
func (h *heldTokens) open() { h.once.Do(func() { close(h.release) }) }

func (h *heldTokens) AuthorizeConnection(string) (bus.Grant, error) {
	h.mu.Lock()
	h.now++
	h.seen++
	h.max = max(h.max, h.now)
	h.mu.Unlock()
	<-h.release
	h.mu.Lock()
	h.now--
	h.mu.Unlock()
	return bus.Grant{TownID: "alpha", Deadline: time.Now().Add(time.Hour), IssuedAt: time.Now()}, nil
}

func (h *heldTokens) counts() (now, most, seen int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now, h.max, h.seen
}

// TestCalloutDecidesABoundedNumberAtOnce: a connect storm of more
// containers than the bound is decided that many at once, never more:
// the rest wait until a decision ends (and the server's timeout refuses
// those that wait too long, as it would a slow answer).
func TestCalloutDecidesABoundedNumberAtOnce(t *testing.T) {
	held := &heldTokens{release: make(chan struct{})}
	f := newCalloutFixtureWith(t, held)
	t.Cleanup(held.open) // before the callout's Close, which waits for its decisions
	// Every request the servers send, seen from the side.
	spy := nkeyConn(t, f.url, f.creds.Auth)
	asked, err := spy.SubscribeSync(bus.AuthCalloutSubject)
	require.NoError(t, err)
	require.NoError(t, spy.Flush())

	const storm = calloutAtOnce + 8
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for range storm {
		wg.Go(func() {
			nc, err := nats.Connect(f.url, nats.Token("any"), nats.NoReconnect())
			if err == nil {
				nc.Close()
			}
		})
	}
	for range storm {
		_, err := asked.NextMsg(time.Minute)
		require.NoError(t, err, "the server asks the callout for every connection")
	}
	require.Eventually(t, func() bool { now, _, _ := held.counts(); return now >= calloutAtOnce },
		time.Minute, 5*time.Millisecond, "the callout decides %d at once", calloutAtOnce)
	require.Never(t, func() bool { _, most, _ := held.counts(); return most > calloutAtOnce },
		500*time.Millisecond, 5*time.Millisecond, "the callout decided more than %d at once", calloutAtOnce)
	held.open()
	require.Eventually(t, func() bool { _, _, seen := held.counts(); return seen == storm },
		time.Minute, 5*time.Millisecond, "the waiting requests are decided once others end")
	_, most, _ := held.counts()
	require.Equal(t, calloutAtOnce, most)
}

// TestClusterKickerWaitsForEveryServer: a server slower to answer CONNZ
// than the others (loaded) is still heard, so its connections of the
// revoked town are closed too. The slow server is the test's own
// responder in the system account, answering for a server "SLOW" some
// 350 ms after the real one: past the quiet moment the kicker waits once
// every server it knows of has answered, within the sweep's bound.
func TestClusterKickerWaitsForEveryServer(t *testing.T) {
	f := newCalloutFixture(t)
	// The kicker's connection knows of two servers: the real one, and an
	// address where nobody listens (standing for the slow one's).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gone := "nats://" + l.Addr().String()
	require.NoError(t, l.Close())
	kp := f.creds.System
	sys, err := nats.Connect(f.url+","+gone, nats.Nkey(pub(t, kp), kp.Sign), nats.DontRandomize())
	require.NoError(t, err)
	t.Cleanup(sys.Close)
	require.Len(t, sys.Servers(), 2)

	slow := nkeyConn(t, f.url, f.creds.System)
	iat := time.Now().Add(-time.Minute).UnixNano()
	var answer sync.WaitGroup
	t.Cleanup(answer.Wait)
	_, err = slow.Subscribe("$SYS.REQ.SERVER.PING.CONNZ", func(m *nats.Msg) {
		answer.Go(func() {
			time.Sleep(350 * time.Millisecond) // the slow server (the fault, not a wait of the test)
			reply, _ := json.Marshal(map[string]any{
				"server": map[string]any{"id": "SLOW"},
				"data": map[string]any{"total": 1, "connections": []map[string]any{
					{"cid": 7, "authorized_user": "town:alpha;iat=" + strconv.FormatInt(iat, 10)},
				}},
			})
			_ = m.Respond(reply)
		})
	})
	require.NoError(t, err)
	kicked := make(chan []byte, 4)
	_, err = slow.Subscribe("$SYS.REQ.SERVER.SLOW.KICK", func(m *nats.Msg) {
		kicked <- m.Data
		_ = m.Respond([]byte("{}"))
	})
	require.NoError(t, err)
	require.NoError(t, slow.Flush())

	k := bus.NewClusterKicker(sys, nil)
	t.Cleanup(k.Close)
	require.Equal(t, 1, k.Kick("alpha", time.Now()), "the slow server's connection is closed")
	select {
	case body := <-kicked:
		require.JSONEq(t, `{"cid":7}`, string(body))
	default:
		t.Fatal("the slow server was not asked to close its connection")
	}
}
