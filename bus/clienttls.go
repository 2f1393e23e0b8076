package bus

import (
	"path/filepath"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// ClientTLS is what a client needs to reach a server that speaks TLS: the
// CAs it trusts for the server's certificate and, for mutual TLS, its own
// certificate and key. The zero value adds nothing (a tls:// URL then
// trusts the system's CAs).
type ClientTLS struct {
	// CAFile holds the CAs (PEM) that sign the server's certificate.
	CAFile string
	// CertFile and KeyFile are the client's certificate and private key,
	// for a server that requires client certificates.
	CertFile string
	KeyFile  string
}

// Enabled says whether any TLS file is set.
func (c ClientTLS) Enabled() bool { return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" }

// Validate says what is wrong with the combination of files.
func (c ClientTLS) Validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.WithHint(errors.New("a client certificate needs its key, and a key its certificate"),
			"give --tls-cert and --tls-key together (GASTOWN_NATS_CERT and GASTOWN_NATS_KEY)")
	}
	return nil
}

// Abs is c with every path made absolute, for a process that runs in
// another directory.
func (c ClientTLS) Abs() (ClientTLS, error) {
	for _, p := range []*string{&c.CAFile, &c.CertFile, &c.KeyFile} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return c, errors.Wrapf(err, "TLS file %s", *p)
		}
		*p = abs
	}
	return c, nil
}

// Options are the nats.go options that use the files. With any file set
// the connection requires TLS, whatever its URL's scheme.
func (c ClientTLS) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	if len(opts) > 0 {
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}

// Option is Options as one nats.Option, to add to a nats.Connect call;
// a bad combination of files is its error at connect.
func (c ClientTLS) Option() nats.Option {
	return func(o *nats.Options) error {
		opts, err := c.Options()
		if err != nil {
			return err
		}
		for _, apply := range opts {
			if err := apply(o); err != nil {
				return errors.WithHint(errors.Wrap(err, "TLS"), "check the CA file (--tls-ca, GASTOWN_NATS_CA) and the client certificate and key")
			}
		}
		return nil
	}
}
