package main

import (
	"github.com/cockroachdb/errors"
	"github.com/gastown/gastown/agentclient"
	"github.com/gastown/gastown/bus"
)

// tlsFlags are a client's TLS files: the CA that signs the bus's
// certificate and, for a bus that requires one, a client certificate.
// Each defaults to its GASTOWN_NATS_* variable.
type tlsFlags struct{ ca, cert, key *string }

func addTLSFlags(fs interface {
	String(name, value, usage string) *string
}) tlsFlags {
	return tlsFlags{
		ca: fs.String("tls-ca", "", "CA file (PEM) that signs the bus's TLS certificate, for a tls:// URL "+
			"(default: "+agentclient.EnvNatsCA+"; with neither, the system's CAs)"),
		cert: fs.String("tls-cert", "", "client certificate (PEM), for a bus that requires one (default: "+agentclient.EnvNatsCert+")"),
		key:  fs.String("tls-key", "", "the client certificate's private key (PEM) (default: "+agentclient.EnvNatsKey+")"),
	}
}

// resolve is the flags over the environment, checked.
func (f tlsFlags) resolve(env Env) (bus.ClientTLS, error) {
	c := agentclient.TLSFromEnv(env.Getenv)
	for _, p := range [][2]*string{{&c.CAFile, f.ca}, {&c.CertFile, f.cert}, {&c.KeyFile, f.key}} {
		if *p[1] != "" {
			*p[0] = *p[1]
		}
	}
	if err := c.Validate(); err != nil {
		return c, errors.Mark(err, ErrUsage)
	}
	return c, nil
}
