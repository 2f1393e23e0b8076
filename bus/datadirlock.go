package bus

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cockroachdb/errors"
)

// LockFile is the name of the lock file in the data directory. The process
// that runs the embedded server holds an exclusive flock(2) on it for its
// whole life, and writes its pid and name into it; the kernel drops the
// lock when the process ends, however it ends, so a stale file never
// blocks a start. The file itself stays.
const LockFile = "gastown.lock"

// ErrDataDirInUse marks a start refused because another process (or
// another server in this process) holds the data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// lockDataDir takes the lock of the data directory abs (shown as given,
// dir, in errors) before anything else opens it. The lock is the returned
// file's: closing it releases the lock. A directory held by another
// process is refused with that process's pid and name, and nothing under
// abs is changed.
func lockDataDir(abs, dir, owner string) (*os.File, error) {
	path := filepath.Join(abs, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errors.Mark(errors.WithHint(errors.Wrapf(err, "opening the lock file %s", path),
			"choose a writable directory with --data-dir"), ErrStart)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := readLockHolder(f)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errors.Mark(errors.Mark(errors.WithHint(
				errors.Newf("data directory %s is in use by %s", dir, holder),
				"stop it or choose another --data-dir"), ErrDataDirInUse), ErrStart)
		}
		return nil, errors.Mark(errors.Wrapf(err, "locking %s", path), ErrStart)
	}
	if err := writeLockHolder(f, owner); err != nil {
		_ = f.Close()
		return nil, errors.Mark(errors.WithHint(errors.Wrapf(err, "writing the lock file %s", path),
			"free some disk space or choose another directory with --data-dir"), ErrStart)
	}
	return f, nil
}

// writeLockHolder replaces the lock file's content with this process's pid
// and owner, one a line.
func writeLockHolder(f *os.File, owner string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(fmt.Sprintf("%d\n%s\n", os.Getpid(), owner)), 0); err != nil {
		return err
	}
	return f.Sync()
}

// readLockHolder says who holds the lock, from the file's content: "process
// 1234 (gastown coordinator)", or "another process" when the holder has
// not written it yet.
func readLockHolder(f *os.File) string {
	sc := bufio.NewScanner(f)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	if len(lines) == 0 {
		return "another process"
	}
	pid, err := strconv.Atoi(lines[0])
	if err != nil || pid <= 0 {
		return "another process"
	}
	if len(lines) > 1 && lines[1] != "" {
		return fmt.Sprintf("process %d (%s)", pid, lines[1])
	}
	return fmt.Sprintf("process %d", pid)
}

// lockOwner is the default name of the process in the lock file: its
// program's name.
func lockOwner() string {
	if len(os.Args) > 0 {
		return filepath.Base(os.Args[0])
	}
	return "gastown"
}
