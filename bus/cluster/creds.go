package cluster

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nkeys"
)

// Accounts of a cluster beside bus.ControlAccount and bus.OpsAccount.
const (
	// StateAccount holds the JetStream state buckets; only the
	// coordinator's state connection connects there (the embedded
	// server's global account).
	StateAccount = "GASTOWN_STATE"
	// AuthAccount is where the servers send auth callout requests, and
	// where the coordinators' callout responders connect.
	AuthAccount = "GASTOWN_AUTH"
	// SystemAccount is the servers' system account (CONNZ, KICK).
	SystemAccount = "SYS"
)

// Creds are the coordinator's keys for a cluster. The seeds are secrets:
// they live in files of mode 0600 in a directory of mode 0700, and are
// never printed or logged.
type Creds struct {
	Issuer  nkeys.KeyPair // account key (SA…): signs the callout's user JWTs; file issuer.nk
	XKey    nkeys.KeyPair // curve key (SX…): callout requests are sealed to it; file xkey.nk
	Auth    nkeys.KeyPair // user (SU…) in AuthAccount: answers $SYS.REQ.USER.AUTH; auth.nk
	Control nkeys.KeyPair // user in bus.ControlAccount (GASTOWN): handlers, pushes; control.nk
	State   nkeys.KeyPair // user in StateAccount: JetStream state; state.nk
	OpsCopy nkeys.KeyPair // user in bus.OpsAccount: writes the ops copies; ops-copy.nk
	System  nkeys.KeyPair // user in SystemAccount: CONNZ and KICK; system.nk
}

// credFile is one key of Creds: its file and the kind of seed it holds.
type credFile struct {
	name   string
	what   string
	prefix nkeys.PrefixByte
	key    func(c *Creds) *nkeys.KeyPair
}

var credFiles = []credFile{
	{"issuer.nk", "the callout issuer (account key)", nkeys.PrefixByteAccount, func(c *Creds) *nkeys.KeyPair { return &c.Issuer }},
	{"xkey.nk", "the callout xkey (curve key)", nkeys.PrefixByteCurve, func(c *Creds) *nkeys.KeyPair { return &c.XKey }},
	{"auth.nk", "the callout responder's user", nkeys.PrefixByteUser, func(c *Creds) *nkeys.KeyPair { return &c.Auth }},
	{"control.nk", "the control connection's user", nkeys.PrefixByteUser, func(c *Creds) *nkeys.KeyPair { return &c.Control }},
	{"state.nk", "the state connection's user", nkeys.PrefixByteUser, func(c *Creds) *nkeys.KeyPair { return &c.State }},
	{"ops-copy.nk", "the ops copier's user", nkeys.PrefixByteUser, func(c *Creds) *nkeys.KeyPair { return &c.OpsCopy }},
	{"system.nk", "the system account's user", nkeys.PrefixByteUser, func(c *Creds) *nkeys.KeyPair { return &c.System }},
}

// NewCreds makes a fresh set of keys.
func NewCreds() (*Creds, error) {
	c := &Creds{}
	for _, f := range credFiles {
		var kp nkeys.KeyPair
		var err error
		switch f.prefix {
		case nkeys.PrefixByteAccount:
			kp, err = nkeys.CreateAccount()
		case nkeys.PrefixByteCurve:
			kp, err = nkeys.CreateCurveKeys()
		default:
			kp, err = nkeys.CreateUser()
		}
		if err != nil {
			return nil, errors.Wrapf(err, "creating %s", f.what)
		}
		*f.key(c) = kp
	}
	return c, nil
}

// Write writes each seed into its own file in dir, made with mode 0700
// when absent; each file gets mode 0600. It refuses to overwrite any
// existing file, and then writes nothing.
func (c *Creds) Write(dir string) error {
	for _, f := range credFiles {
		if *f.key(c) == nil {
			return errors.Newf("the credentials lack %s", f.what)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return errors.Wrapf(err, "creating the credentials directory %s", dir)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return errors.Wrapf(err, "restricting the credentials directory %s to its owner", dir)
	}
	for _, f := range credFiles {
		path := filepath.Join(dir, f.name)
		if _, err := os.Lstat(path); err == nil {
			return errors.WithHint(errors.Newf("%s already exists: refusing to overwrite credentials", path),
				"credentials are made once per cluster; to start over, remove the directory (and re-create the node configs with it)")
		}
	}
	for _, f := range credFiles {
		seed, err := (*f.key(c)).Seed()
		if err != nil {
			return errors.Wrapf(err, "reading the seed of %s", f.what)
		}
		path := filepath.Join(dir, f.name)
		file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return errors.Wrapf(err, "creating %s", path)
		}
		_, werr := file.Write(append(seed, '\n'))
		cerr := file.Close()
		if werr != nil || cerr != nil {
			return errors.Wrapf(errors.CombineErrors(werr, cerr), "writing %s", path)
		}
	}
	return nil
}

// LoadCreds reads the keys Write wrote. A missing file, a file anyone but
// its owner may read, or a seed of the wrong kind (a user seed where the
// issuer's account seed belongs, say) is an error naming the file.
func LoadCreds(dir string) (*Creds, error) {
	c := &Creds{}
	for _, f := range credFiles {
		path := filepath.Join(dir, f.name)
		kp, prefix, err := readSeed(path, "credentials file "+path, "give the coordinator directory that 'gastown cluster init' wrote (D/coordinator)")
		if err != nil {
			return nil, err
		}
		if prefix != f.prefix {
			return nil, errors.WithHint(errors.Newf("credentials file %s holds a %s seed where %s belongs (a %s seed)", path, prefix, f.what, f.prefix),
				"the files of one 'gastown cluster init' must not be swapped")
		}
		*f.key(c) = kp
	}
	return c, nil
}

// PublicKeys are the public halves of Creds: what the node configs name,
// and all that checking them needs.
type PublicKeys struct {
	Issuer  string `json:"issuer"`
	XKey    string `json:"xkey"`
	Auth    string `json:"auth"`
	Control string `json:"control"`
	State   string `json:"state"`
	OpsCopy string `json:"opsCopy"`
	System  string `json:"system"`
}

// Public returns the public halves of the keys.
func (c *Creds) Public() (PublicKeys, error) {
	var p PublicKeys
	dst := []*string{&p.Issuer, &p.XKey, &p.Auth, &p.Control, &p.State, &p.OpsCopy, &p.System}
	for i, f := range credFiles {
		pub, err := (*f.key(c)).PublicKey()
		if err != nil {
			return PublicKeys{}, errors.Wrapf(err, "reading the public key of %s", f.what)
		}
		*dst[i] = pub
	}
	return p, nil
}

// CoordinatorUsers are the coordinator's nkey users: they bypass the
// callout (auth_users).
func (p PublicKeys) CoordinatorUsers() []string {
	return []string{p.Auth, p.Control, p.State, p.OpsCopy, p.System}
}

// readSeed reads the one nkey seed in path, a file only its owner may
// read. name is how errors call the file; missing is the hint when it
// does not exist.
func readSeed(path, name, missing string) (nkeys.KeyPair, nkeys.PrefixByte, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, errors.WithHint(errors.Newf("%s is missing", name), missing)
	}
	if err != nil {
		return nil, 0, errors.Wrapf(err, "reading %s", name)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, 0, errors.WithHint(errors.Newf("%s has mode %v: others may read the seed", name, info.Mode().Perm()),
			"chmod 600 "+path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, errors.Wrapf(err, "reading %s", name)
	}
	seed := []byte(strings.TrimSpace(string(raw)))
	prefix, _, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, 0, errors.WithHint(errors.Newf("%s does not hold an nkey seed", name),
			"it must hold one seed as 'gastown cluster init' wrote it")
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, 0, errors.Wrapf(err, "decoding the seed in %s", name)
	}
	return kp, prefix, nil
}
