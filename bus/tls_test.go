package bus_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/bus"
	"github.com/gastown/gastown/bus/bustest"
	"github.com/gastown/gastown/coordinator/token"
	"github.com/gastown/gastown/schemas"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// tlsOpts are a client's options for certs (CA, and the client
// certificate when withCert).
func tlsOpts(t *testing.T, certs bustest.Certs, withCert bool) []nats.Option {
	t.Helper()
	ct := certs.ClientTLS()
	if !withCert {
		ct.CertFile, ct.KeyFile = "", ""
	}
	opts, err := ct.Options()
	require.NoError(t, err)
	return opts
}

// TestTLSClientPort: with a certificate the client port speaks TLS only.
// Containers, admin and ops connect over tls:// with the CA and get their
// usual permissions; a client without the CA, or one that does not speak
// TLS at all, is refused; the in-process connections are untouched.
func TestTLSClientPort(t *testing.T) {
	certs := bustest.NewCerts(t)
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{OpsPassword: opsPassword, AdminPassword: adminPassword,
		TLS: certs.ServerTLS(false)})
	f.embeddedOnly(t) // the cluster fixture serves no TLS
	require.True(t, strings.HasPrefix(f.url, "tls://127.0.0.1:"), f.url)

	// A container over TLS, answered by the in-process side.
	town, err := schemas.ForTown("alpha")
	require.NoError(t, err)
	ping, err := town.RPC("ping")
	require.NoError(t, err)
	sub, err := f.nc.Subscribe(ping, func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	require.NoError(t, err)
	require.NoError(t, f.nc.Flush())
	defer func() { _ = sub.Unsubscribe() }()
	c := f.connect(t, append(tlsOpts(t, certs, false), nats.Token(f.mint(t, "alpha", time.Hour)), nats.CustomInboxPrefix(inbox("alpha")))...)
	require.True(t, c.nc.TLSRequired())
	cs, err := c.nc.TLSConnectionState()
	require.NoError(t, err)
	require.True(t, cs.HandshakeComplete)
	reply, err := c.nc.Request(ping, []byte(`{}`), waitFor)
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":true}`, string(reply.Data))
	// Its permissions are the container's, TLS or not.
	_, err = c.nc.SubscribeSync("gastown.town.beta.token")
	require.NoError(t, err)
	require.NoError(t, c.nc.Flush())
	c.requireViolation(t, "Subscription", "gastown.town.beta.token")

	// admin and ops, with their passwords, over TLS.
	admin := f.connect(t, append(tlsOpts(t, certs, false), nats.UserInfo(bus.AdminUser, adminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))...)
	require.NoError(t, admin.nc.Flush())
	ops := f.connect(t, append(tlsOpts(t, certs, false), nats.UserInfo(bus.OpsUser, opsPassword), nats.CustomInboxPrefix(schemas.OpsInbox))...)
	require.NoError(t, ops.nc.Flush())

	// Without the CA, the server's certificate is not trusted.
	_, err = f.dial(nats.Token(f.mint(t, "alpha", time.Hour)))
	require.Error(t, err)
	var unknown x509.UnknownAuthorityError
	require.True(t, errors.As(err, &unknown), "refused for the unknown CA: %v", err)

	// A client that speaks plain NATS on the TLS port gets no further
	// than the INFO line, which says TLS is required.
	requirePlainRefused(t, f.url)
}

// requirePlainRefused speaks plain NATS to the server at url: it reads the
// INFO, sends CONNECT and PING in clear text, and checks that the server
// closes the connection without a PONG.
func requirePlainRefused(t *testing.T, url string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "tls://"), waitFor)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(waitFor)))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, info, `"tls_required":true`)
	_, err = conn.Write([]byte("CONNECT {\"verbose\":false,\"user\":\"ops\",\"pass\":\"" + opsPassword + "\"}\r\nPING\r\n"))
	require.NoError(t, err)
	rest, err := readAll(r)
	require.NotContains(t, rest, "PONG", "a plain client got an answer")
	require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the server closes a plain connection")
}

// readAll reads until the connection closes or its deadline.
func readAll(r *bufio.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String(), err
		}
	}
}

// TestMutualTLS: with a CA for clients, only a client whose certificate
// that CA signed gets through, whatever its credentials; one with the
// right certificate still needs them.
func TestMutualTLS(t *testing.T) {
	certs := bustest.NewCerts(t)
	f := newFixtureWith(t, token.AuthConfig{}, bus.Config{OpsPassword: opsPassword, AdminPassword: adminPassword,
		TLS: certs.ServerTLS(true)})
	f.embeddedOnly(t) // the cluster fixture serves no TLS
	tok := f.mint(t, "alpha", time.Hour)
	town := []nats.Option{nats.Token(tok), nats.CustomInboxPrefix(inbox("alpha"))}

	c := f.connect(t, append(tlsOpts(t, certs, true), town...)...)
	require.NoError(t, c.nc.Flush())
	cs, err := c.nc.TLSConnectionState()
	require.NoError(t, err)
	require.NotEmpty(t, cs.PeerCertificates)
	admin := f.connect(t, append(tlsOpts(t, certs, true), nats.UserInfo(bus.AdminUser, adminPassword), nats.CustomInboxPrefix(schemas.AdminInbox))...)
	require.NoError(t, admin.nc.Flush())

	t.Run("no client certificate", func(t *testing.T) {
		_, err := f.dial(append(tlsOpts(t, certs, false), town...)...)
		// "certificate required", or the server's close, by who wins the race.
		require.ErrorContains(t, err, "tls")
	})
	t.Run("a certificate from another CA", func(t *testing.T) {
		opts, err := bus.ClientTLS{CAFile: certs.CAFile, CertFile: certs.StrangerCert, KeyFile: certs.StrangerKey}.Options()
		require.NoError(t, err)
		_, err = f.dial(append(opts, town...)...)
		// Go's client does not even offer a certificate the server's CA
		// list does not name; either way the server refuses.
		require.ErrorContains(t, err, "tls")
	})
	t.Run("the right certificate, a wrong password", func(t *testing.T) {
		_, err := f.dial(append(tlsOpts(t, certs, true), nats.UserInfo(bus.AdminUser, "wrong"))...)
		require.ErrorIs(t, err, nats.ErrAuthorization)
	})
	t.Run("plain", func(t *testing.T) { requirePlainRefused(t, f.url) })
	// The in-process connections need no certificate.
	require.NoError(t, f.nc.Flush())
}

// TestTLSConfigRefused: a TLS configuration that cannot work stops the
// start with what to do, before anything is made on disk.
func TestTLSConfigRefused(t *testing.T) {
	certs := bustest.NewCerts(t)
	empty := filepath.Join(t.TempDir(), "empty.pem")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	for _, tc := range []struct {
		name string
		tls  bus.TLS
		want string
	}{
		{"certificate without key", bus.TLS{CertFile: certs.ServerCert}, "both a certificate and its key"},
		{"key without certificate", bus.TLS{KeyFile: certs.ServerKey}, "both a certificate and its key"},
		{"CA alone", bus.TLS{CAFile: certs.CAFile}, "both a certificate and its key"},
		{"missing certificate", bus.TLS{CertFile: certs.ServerCert + ".gone", KeyFile: certs.ServerKey}, "no such file"},
		{"key of another certificate", bus.TLS{CertFile: certs.ServerCert, KeyFile: certs.ClientKey}, "private key does not match"},
		{"empty CA", bus.TLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: empty}, "parse root ca"},
		{"negative timeout", bus.TLS{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, Timeout: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			_, err := bus.Start(context.Background(), bus.Config{Listen: "127.0.0.1:0", DataDir: dir, TLS: tc.tls})
			require.True(t, errors.Is(err, bus.ErrStart), "not marked ErrStart: %+v", err)
			require.Contains(t, err.Error(), tc.want)
			require.NotEmpty(t, errors.GetAllHints(err))
			require.NoDirExists(t, dir)
		})
	}
}

// TestNoTLSOnNetworkWarns: the server says loudly when bearer tokens
// would cross a network in clear text, and only then.
func TestNoTLSOnNetworkWarns(t *testing.T) {
	certs := bustest.NewCerts(t)
	for _, tc := range []struct {
		name   string
		listen string
		tls    bus.TLS
		warns  bool
	}{
		{"every address, no TLS", "0.0.0.0:0", bus.TLS{}, true},
		{"every address, TLS", "0.0.0.0:0", certs.ServerTLS(false), false},
		{"loopback, no TLS", "127.0.0.1:0", bus.TLS{}, false},
		{"localhost, no TLS", "localhost:0", bus.TLS{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := bustest.NewRecords(slog.LevelInfo)
			bustest.Start(t, bus.Config{Listen: tc.listen, TLS: tc.tls, Logger: recs.Logger()})
			warned := recs.Lines(func(r bustest.Record) bool { return strings.Contains(r.Message, "NO TLS") })
			if !tc.warns {
				require.Empty(t, warned)
				return
			}
			require.Len(t, warned, 1)
			require.Equal(t, slog.LevelWarn, warned[0].Level)
			require.Contains(t, warned[0].Message, "clear text")
		})
	}
}
