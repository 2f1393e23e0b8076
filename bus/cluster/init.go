package cluster

import (
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cockroachdb/errors"
)

// Init makes a cluster directory: fresh credentials in dir/coordinator
// (0700, seeds 0600), the break-glass ops key as dir/ops.nk (0600), the
// plan with their public keys as dir/cluster.json and every node's config
// as dir/node-<i>.conf (0600). dir may exist only
// if empty: Init never overwrites a cluster. It returns the plan as
// written and the credentials.
func Init(dir string, plan Plan) (Plan, *Creds, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return Plan{}, nil, errors.Wrapf(err, "reading %s", dir)
	case len(entries) > 0:
		return Plan{}, nil, errors.WithHint(errors.Newf("%s already exists and is not empty: refusing to overwrite a cluster", dir),
			"give a new directory; to check an existing one, run 'gastown cluster check --dir "+dir+"'")
	}
	if err := plan.Validate(); err != nil {
		return Plan{}, nil, err
	}
	creds, err := NewCreds()
	if err != nil {
		return Plan{}, nil, err
	}
	if plan.Keys, err = creds.Public(); err != nil {
		return Plan{}, nil, err
	}
	ops, err := newOpsKey()
	if err != nil {
		return Plan{}, nil, err
	}
	if plan.OpsKey, err = ops.PublicKey(); err != nil {
		return Plan{}, nil, errors.Wrap(err, "reading the break-glass ops key")
	}
	// Render every config before anything is written.
	for i := range plan.Nodes {
		if _, err := plan.NodeConfig(i, plan.Keys); err != nil {
			return Plan{}, nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Plan{}, nil, errors.Wrapf(err, "creating %s", dir)
	}
	if err := creds.Write(filepath.Join(dir, CredsDir)); err != nil {
		return Plan{}, nil, err
	}
	if err := writeOpsKey(dir, ops); err != nil {
		return Plan{}, nil, err
	}
	if err := plan.Write(dir); err != nil {
		return Plan{}, nil, err
	}
	if err := plan.WriteNodeConfigs(dir, plan.Keys); err != nil {
		return Plan{}, nil, err
	}
	return plan, creds, nil
}
