package storage

import (
	"context"
	"errors"
	"io"
)

// Backuper is implemented by backends that can write a consistent snapshot
// of everything they hold while they keep serving (Badger). A PostgreSQL
// database is backed up with PostgreSQL's own tools instead.
type Backuper interface {
	// Backup writes a full snapshot of the database to w.
	Backup(w io.Writer) error
}

// ErrNoOnlineBackup is returned by Backup when the backend has no online
// backup of its own.
var ErrNoOnlineBackup = errors.New("storage: this database has no online backup of its own")

// CanBackup reports whether Backup works on this store's backend.
func (s *Store) CanBackup() bool {
	_, ok := s.db.(Backuper)
	return ok
}

// Backup writes a consistent snapshot of the database to w, after saving
// the batched last-used times so the snapshot has them too. It returns
// ErrNoOnlineBackup when the backend cannot.
func (s *Store) Backup(ctx context.Context, w io.Writer) error {
	b, ok := s.db.(Backuper)
	if !ok {
		return ErrNoOnlineBackup
	}
	s.flushLastUsed(ctx)
	return b.Backup(w)
}
