package storage

import (
	"context"
	"errors"
	"io"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// ErrNoOnlineBackup is returned by Backup when the backend has no online
// backup of its own.
var ErrNoOnlineBackup = errors.New("storage: this database has no online backup of its own")

// CanBackup reports whether Backup works on this store's backend.
func (s *Store) CanBackup() bool {
	_, ok := s.db.(kv.Backuper)
	return ok
}

// Backup writes a consistent snapshot of the database to w, after saving
// the batched last-used times so the snapshot has them too. It returns
// ErrNoOnlineBackup when the backend cannot.
func (s *Store) Backup(ctx context.Context, w io.Writer) error {
	b, ok := s.db.(kv.Backuper)
	if !ok {
		return ErrNoOnlineBackup
	}
	s.flushLastUsed(ctx)
	return b.Backup(w)
}
