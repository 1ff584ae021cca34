package badgerstore

import (
	"fmt"
	"os"
	"path/filepath"
)

// makePrivate makes dir readable by this process's user only: the
// directory 0700 and every file in it 0600, whoever created them and with
// whatever umask. The files hold bcrypt hashes of passwords and the hashes
// of tokens. Badger creates its data files 0666 less the umask, so those
// it adds while running are 0644 under the usual umask: the 0700
// directory keeps them from other users, and the next Open or Close
// tightens them too.
func makePrivate(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot make storage directory %s private (mode 0700): %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cannot read storage directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if os.IsNotExist(err) {
			continue // removed meanwhile (Badger deleting a compacted table)
		}
		if err != nil {
			return fmt.Errorf("cannot read storage directory %s: %w", dir, err)
		}
		if info.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, e.Name()), 0o600); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("cannot make %s private (mode 0600): %w", filepath.Join(dir, e.Name()), err)
		}
	}
	return nil
}
