package bus

import (
	"net"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats-server/v2/server"
)

// DefaultTLSTimeout bounds a client's TLS handshake on the embedded server.
const DefaultTLSTimeout = 2 * time.Second

// TLS configures TLS on the embedded server's client port. With CertFile
// and KeyFile set every client connection (but the in-process ones) must
// speak TLS; with CAFile too, every client must also present a
// certificate signed by a CA in it (mutual TLS).
type TLS struct {
	// CertFile and KeyFile are the server's certificate (PEM, with any
	// intermediates) and its private key.
	CertFile string
	KeyFile  string
	// CAFile, when set, holds the CAs (PEM) that sign client certificates,
	// and makes a client certificate required.
	CAFile string
	// Timeout bounds a client's handshake; zero means DefaultTLSTimeout.
	Timeout time.Duration
}

// Enabled says whether the client port is to speak TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// apply sets TLS on the server's options, loading the files now so that a
// missing or bad one stops the start with what to do.
func (t TLS) apply(opts *server.Options) error {
	if !t.Enabled() {
		return nil
	}
	switch {
	case t.CertFile == "" || t.KeyFile == "":
		return errors.WithHint(errors.New("TLS needs both a certificate and its key"),
			"give --tls-cert and --tls-key together (and --tls-ca only with them)")
	case t.Timeout < 0:
		return errors.WithHint(errors.Newf("TLS handshake timeout %s is negative", t.Timeout), "give a positive --tls-timeout, e.g. 2s")
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTLSTimeout
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.CAFile, Verify: t.CAFile != "",
		Timeout: t.Timeout.Seconds(),
	})
	if err == nil && tc == nil {
		// GenTLSConfig returns nothing for an empty CA file.
		err = errors.Newf("CA file %s is empty", t.CAFile)
	}
	if err != nil {
		return errors.WithHint(errors.Wrapf(err, "loading TLS files (certificate %s, key %s, CA %q)", t.CertFile, t.KeyFile, t.CAFile),
			"check that --tls-cert and --tls-key name a readable PEM certificate and its private key, and --tls-ca a PEM CA bundle")
	}
	opts.TLSConfig = tc
	opts.TLS = true
	opts.TLSVerify = t.CAFile != ""
	opts.TLSTimeout = t.Timeout.Seconds()
	return nil
}

// networkOptions are the server options TLS and monitoring set, loaded
// before the server is made.
type networkOptions struct{ o server.Options }

func (n *networkOptions) load(cfg Config) error {
	if err := cfg.TLS.apply(&n.o); err != nil {
		return err
	}
	return monitorOptions(&n.o, cfg.MonitorListen)
}

func (n *networkOptions) applyTo(opts *server.Options) {
	opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = n.o.TLSConfig, n.o.TLS, n.o.TLSVerify, n.o.TLSTimeout
	opts.HTTPHost, opts.HTTPPort = n.o.HTTPHost, n.o.HTTPPort
}

// monitorOptions sets the server's HTTP monitoring endpoint (/varz,
// /connz, /subsz, /jsz, ...) on listen, host:port (port 0 picks a free
// one); empty leaves it off.
func monitorOptions(opts *server.Options, listen string) error {
	if listen == "" {
		return nil
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return errors.WithHint(errors.Wrapf(err, "monitoring address %q", listen), "give host:port, e.g. 127.0.0.1:8222")
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return errors.WithHint(errors.Newf("monitoring address %q has a bad port", listen), "give host:port, e.g. 127.0.0.1:8222")
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	opts.HTTPHost, opts.HTTPPort = host, port
	return nil
}

// isLoopback says whether host (an IP address or a name) is only
// reachable from this machine. An empty host listens everywhere.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// warnExposure says loudly what is exposed on a network: a client port
// without TLS carries bearer tokens and passwords in clear text, and the
// monitoring endpoint has no authentication at all.
func (s *Server) warnExposure(cfg Config, host string) {
	if !cfg.TLS.Enabled() && !isLoopback(host) {
		s.log.Warn("NO TLS ON A NETWORK ADDRESS: the embedded NATS server listens on "+cfg.Listen+
			" without TLS, so container tokens and the ops and admin passwords cross the network in clear text; "+
			"give --tls-cert and --tls-key (and --tls-ca for client certificates), or listen on 127.0.0.1",
			KeyListen, s.Addr().String())
	}
	if addr := s.ns.MonitorAddr(); addr != nil {
		s.log.Info("NATS monitoring endpoint ready", KeyURL, s.MonitorURL())
		if !addr.IP.IsLoopback() {
			s.log.Warn("the NATS monitoring endpoint listens on a network address and has no authentication: anyone who reaches it "+
				"sees every connection, subscription and account; keep it on 127.0.0.1 or behind a firewall",
				KeyListen, addr.String())
		}
	}
}

// MonitorURL is the base URL of the HTTP monitoring endpoint (e.g.
// http://127.0.0.1:8222), or "" when it is off.
func (s *Server) MonitorURL() string {
	addr := s.ns.MonitorAddr()
	if addr == nil {
		return ""
	}
	return "http://" + addr.String()
}
