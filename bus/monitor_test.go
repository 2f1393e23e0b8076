package bus_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// monitorGet fetches path from the server's monitoring endpoint.
func monitorGet(t *testing.T, srv *bus.Server, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.MonitorURL()+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, b)
	return string(b)
}

// TestMonitoringOff: without MonitorListen there is no endpoint.
func TestMonitoringOff(t *testing.T) {
	f := newFixture(t, token.AuthConfig{})
	f.embeddedOnly(t)
	require.Empty(t, f.srv.MonitorURL())
}

// TestMonitoringShowsNoSecret: the HTTP monitoring endpoint serves
// /varz, /connz, /subsz, /jsz and the rest, and with a container
// connected by its token, ops and admin by their passwords, requests
// made, state written and a wrong password refused, no page shows the
// token, a password, the signing secret or the in-process secret.
func TestMonitoringShowsNoSecret(t *testing.T) {
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{OpsPassword: opsPassword, AdminPassword: adminPassword,
		MonitorListen: "127.0.0.1:0"})
	f.embeddedOnly(t)
	require.True(t, strings.HasPrefix(f.srv.MonitorURL(), "http://127.0.0.1:"), f.srv.MonitorURL())
	tok := f.mint(t, "alpha", time.Hour)
	town, err := schemas.ForTown("alpha")
	require.NoError(t, err)

	// The coordinator's side answers a tool call and an admin call.
	ping, err := town.RPC("ping")
	require.NoError(t, err)
	status, err := schemas.Admin("status")
	require.NoError(t, err)
	for _, subj := range []string{ping, status} {
		sub, err := f.nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	require.NoError(t, f.nc.Flush())

	c := f.connectTown(t, "alpha", tok)
	m := nats.NewMsg(ping)
	m.Header.Set(schemas.AuthorizationHeader, schemas.BearerPrefix+tok)
	m.Data = []byte(`{}`)
	_, err = c.nc.RequestMsg(m, waitFor)
	require.NoError(t, err)
	_, err = c.nc.QueueSubscribeSync(town.Token(), schemas.ContainerQueue)
	require.NoError(t, err)
	require.NoError(t, c.nc.Flush())
	c.requireNoErrors(t)
	admin := f.connect(t, nats.UserInfo(bus.AdminUser, adminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))
	_, err = admin.nc.Request(status, []byte(`{"townId":"alpha"}`), waitFor)
	require.NoError(t, err)
	ops := f.connect(t, nats.UserInfo(bus.OpsUser, opsPassword), nats.CustomInboxPrefix(schemas.OpsInbox))
	_, err = ops.nc.SubscribeSync(town.Heartbeat())
	require.NoError(t, err)
	require.NoError(t, ops.nc.Flush())
	_, err = f.dial(nats.UserInfo(bus.AdminUser, "a wrong password"))
	require.ErrorIs(t, err, nats.ErrAuthorization)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	js, err := jetstream.New(bustestState(t, f))
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.BucketTowns})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "alpha", []byte(`{"townId":"alpha"}`))
	require.NoError(t, err)

	secrets := map[string]string{
		"the container token":           tok,
		"the token's signature":         tok[strings.LastIndex(tok, ".")+1:],
		"the ops password":              opsPassword,
		"the admin password":            adminPassword,
		"the signing secret":            string(f.secret),
		"the in-process secret":         f.srv.InternalSecret(),
		"the wrong password just tried": "a wrong password",
	}
	pages := map[string]string{}
	for _, path := range []string{
		"/varz", "/connz?auth=true&subs=true", "/connz?state=all&auth=true&subs=detail",
		"/subsz?subs=1", "/accountz", "/accountz?acc=GASTOWN", "/jsz?accounts=true&streams=true&consumers=true",
		"/routez", "/healthz",
	} {
		pages[path] = monitorGet(t, f.srv, path)
		for what, secret := range secrets {
			require.NotContains(t, pages[path], secret, "%s shows %s", path, what)
		}
	}
	// The pages are the real thing.
	require.Contains(t, pages["/varz"], `"server_name": "gastown"`)
	require.Contains(t, pages["/connz?auth=true&subs=true"], `"authorized_user": "town:alpha"`)
	require.Contains(t, pages["/connz?auth=true&subs=true"], `"authorized_user": "admin"`)
	require.Contains(t, pages["/connz?auth=true&subs=true"], `"authorized_user": "ops"`)
	require.Contains(t, pages["/jsz?accounts=true&streams=true&consumers=true"], "KV_"+schemas.BucketTowns)
	require.Contains(t, pages["/healthz"], "ok")
}

// bustestState is the coordinator's state connection, closed when the
// test ends.
func bustestState(t *testing.T, f *fixture) *nats.Conn {
	t.Helper()
	nc, err := f.srv.ConnectState(t.Name())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}
