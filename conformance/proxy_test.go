package conformance

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestProxyCutsAndRestoresTheBus: through the kit's proxy a client talks
// to a real NATS server; a cut closes its connection and refuses new ones
// (its publications do not arrive), a restore lets it reconnect, and
// Close is safe twice.
func TestProxyCutsAndRestoresTheBus(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(10*time.Second))
	p, err := startProxy(ns.Addr().String())
	require.NoError(t, err)
	t.Cleanup(p.Close)

	watch, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(watch.Close)
	got := make(chan string, 16)
	_, err = watch.Subscribe("s", func(m *nats.Msg) { got <- string(m.Data) })
	require.NoError(t, err)
	require.NoError(t, watch.Flush())

	down, back := make(chan struct{}, 1), make(chan struct{}, 1)
	nc, err := nats.Connect(p.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectBufSize(-1), // a publication while cut fails rather than waits
		nats.DisconnectErrHandler(func(*nats.Conn, error) { down <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { back <- struct{}{} }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, nc.Publish("s", []byte("before")))
	require.NoError(t, nc.Flush())
	require.Equal(t, "before", <-got)

	p.cut()
	<-down
	require.Error(t, nc.Publish("s", []byte("while cut")), "no connection while the bus is cut")
	require.False(t, nc.IsConnected())

	p.restore()
	<-back
	require.NoError(t, nc.Publish("s", []byte("after")))
	require.NoError(t, nc.Flush())
	require.Equal(t, "after", <-got, "nothing from the cut arrived")

	p.Close()
	p.Close()
}
