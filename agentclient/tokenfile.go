package agentclient

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/errors"
)

// WriteTokenFile replaces path with token, atomically: a reader sees the
// old token or the new one, never a part. The file's mode is 0600.
func WriteTokenFile(path, token string) error {
	return WriteSecretFile(path, []byte(token)) // the bare JWT (PROTOCOL.md, Token file)
}

// WriteSecretFile replaces path with data, atomically (a temporary file in
// the same directory, synced, renamed over it), with mode 0600 from the
// start: for what holds a token or a password.
func WriteSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return errors.Wrapf(err, "creating a temporary file in %s", dir)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return errors.Wrapf(err, "restricting the mode of %s", path)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.CombineErrors(werr, errors.CombineErrors(serr, cerr)); err != nil {
		return errors.Wrapf(err, "writing %s", path)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Wrapf(err, "replacing %s", path)
	}
	return nil
}

// ReadTokenFile reads the token an agent should use now.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", errors.WithHint(errors.Wrapf(err, "reading token file %s", path),
			"agents read the token file their container keeps; is "+EnvTokenFile+" right?")
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.Mark(errors.Newf("token file %s is empty", path), ErrNoToken)
	}
	return tok, nil
}
