package cluster

import (
	"path/filepath"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nkeys"
)

// The break-glass ops identity. The ops password is checked by the
// coordinators, through the callout, with the same throttle as admin's
// (a password the servers checked themselves would be guessed unthrottled,
// and each wrong guess would cost every node a bcrypt hash before any
// callout). So that operators can still inspect a cluster while no
// coordinator runs, every node also knows one nkey user in GASTOWN_OPS,
// with exactly ops's permissions, listed in auth_users: a key, not a
// password, so nothing to guess, and nothing for a node to hash.

// OpsKeyFile is the break-glass ops key's seed in a cluster directory
// (D/ops.nk, mode 0600). Operators need it; coordinators do not.
const OpsKeyFile = "ops.nk"

// newOpsKey makes a break-glass ops key.
func newOpsKey() (nkeys.KeyPair, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, errors.Wrap(err, "creating the break-glass ops key")
	}
	return kp, nil
}

// writeOpsKey writes kp's seed to dir/ops.nk, mode 0600, refusing to
// overwrite one.
func writeOpsKey(dir string, kp nkeys.KeyPair) error {
	seed, err := kp.Seed()
	if err != nil {
		return errors.Wrap(err, "reading the break-glass ops key's seed")
	}
	return writeNew(filepath.Join(dir, OpsKeyFile), append(seed, '\n'))
}

// LoadOpsKey reads a break-glass ops key's seed file (D/ops.nk). A
// missing file, one that others may read, or a seed that is not a user
// key's is an error naming the file.
func LoadOpsKey(path string) (nkeys.KeyPair, error) {
	kp, prefix, err := readSeed(path, "the ops key file "+path, "'gastown cluster init' writes it as D/"+OpsKeyFile)
	if err != nil {
		return nil, err
	}
	if prefix != nkeys.PrefixByteUser {
		return nil, errors.WithHint(errors.Newf("the ops key file %s does not hold a user nkey seed (SU…)", path),
			"give the "+OpsKeyFile+" that 'gastown cluster init' wrote")
	}
	return kp, nil
}
