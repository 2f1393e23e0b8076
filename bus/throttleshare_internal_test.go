package bus

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// A throttle reports every failure it counts and every right password
// that forgot failures, and nothing else; what it hears from the others
// counts as its own, but is not reported again.
func TestThrottleReports(t *testing.T) {
	th := testThrottle(100)
	type report struct {
		key    string
		failed bool
	}
	var got []report
	th.report = func(key string, failed bool) { got = append(got, report{key, failed}) }
	now := time.Unix(1_000_000, 0)
	const src = "192.0.2.1"
	require.Equal(t, admitted, th.attempt(src, now, true))
	require.Empty(t, got, "a right password with nothing to forget")
	require.Equal(t, wrong, th.attempt(src, now, false))
	require.Equal(t, admitted, th.attempt(src, now, true))
	require.Equal(t, []report{{src, true}, {src, false}}, got)

	// Heard from another coordinator: counted, not reported.
	got = nil
	for range 5 {
		th.record(src, now, false)
	}
	require.Equal(t, lockedOut, th.attempt(src, now, true), "the others' failures lock the source out here")
	require.Empty(t, got)
	// A right password heard of does not lift a lockout here.
	th.record(src, now, true)
	require.Equal(t, lockedOut, th.attempt(src, now, true))
	require.Empty(t, got, "a locked-out attempt is not counted, so not reported")
}

func TestValidSourceKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"": true, "192.0.2.1": true, "2001:db8::/64": true,
		"192.0.2.1/64": false, "2001:db8::": true, "example.com": false, "192.0.2.1:4222": false, "2001:db8::/48": false,
	} {
		require.Equal(t, ok, validSourceKey(key), key)
	}
}

// Two throttles shared over NATS count each other's failures, and ignore
// their own echo and events they cannot read.
func TestThrottleShare(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(10*time.Second))
	conn := func() *nats.Conn {
		nc, err := nats.Connect(srv.ClientURL())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	now := func() time.Time { return time.Unix(1_000_000, 0) }
	log := NewRateLog(slog.New(slog.DiscardHandler), 0, nil)
	a, b := testThrottle(100), testThrottle(100)
	sa, err := startThrottleShare(conn(), a, now, log)
	require.NoError(t, err)
	defer sa.close()
	sb, err := startThrottleShare(conn(), b, now, log)
	require.NoError(t, err)
	defer sb.close()
	require.NoError(t, sb.nc.Flush())

	// Garbage on the subject changes nothing.
	other := conn()
	for _, bad := range []string{"not json", `{"source":"example.com","failed":true}`, `{"source":"` + string(make([]byte, 300)) + `"}`} {
		require.NoError(t, other.Publish(ThrottleSubject, []byte(bad)))
	}
	const src = "192.0.2.7"
	for range 4 {
		require.Equal(t, wrong, a.attempt(src, now(), false))
	}
	require.Equal(t, wrong, b.attempt(src, now(), false), "the fifth failure, on the other")
	require.Eventually(t, func() bool { return failuresOf(a, src) == 5 }, 5*time.Second, 10*time.Millisecond, "a hears b's failure")
	require.Eventually(t, func() bool { return failuresOf(b, src) == 5 }, 5*time.Second, 10*time.Millisecond, "b hears a's four")
	require.Equal(t, lockedOut, a.attempt(src, now(), true))
	require.Equal(t, lockedOut, b.attempt(src, now(), true))
	require.Equal(t, 1, a.len(), "only the source, no garbage")

	// Its own echo is not counted twice.
	c := testThrottle(100)
	sc, err := startThrottleShare(conn(), c, now, log)
	require.NoError(t, err)
	defer sc.close()
	require.NoError(t, sc.nc.Flush())
	require.Equal(t, wrong, c.attempt("192.0.2.8", now(), false))
	mark, err := json.Marshal(throttleEvent{From: "marker", Source: "192.0.2.9", Failed: true})
	require.NoError(t, err)
	require.NoError(t, sc.nc.Publish(ThrottleSubject, mark))
	require.Eventually(t, func() bool { return c.len() == 2 }, 5*time.Second, 10*time.Millisecond, "the marker heard after the echo")
	require.Equal(t, 1, failuresOf(c, "192.0.2.8"), "its own event counted once")
}

// failuresOf is how many failures th has counted of key.
func failuresOf(th *throttle, key string) int {
	th.mu.Lock()
	defer th.mu.Unlock()
	if e := th.sources[key]; e != nil {
		return e.Value.(*source).failures
	}
	return 0
}
