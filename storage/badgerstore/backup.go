package badgerstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Backup writes a consistent snapshot of the whole database to w while the
// store keeps serving: Badger streams one read transaction, so writes that
// commit during the backup are either wholly in it or not at all. The
// stream holds token hashes and password hashes, never a secret; treat it
// like the database directory itself.
func (b *Backend) Backup(w io.Writer) error {
	if !b.life.TryRLock() {
		return kv.ErrClosed
	}
	defer b.life.RUnlock()
	if b.db.IsClosed() {
		return kv.ErrClosed
	}
	if _, err := io.WriteString(w, backupMagic); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	if _, err := b.db.Backup(w, 0); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	return nil
}

// BackupDir writes a snapshot of the database in dir, which no running
// process may have open (Caddy must be stopped: the directory lock tells).
// It is the offline counterpart of Backup.
func BackupDir(dir string, w io.Writer) error {
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("storage directory %s: %w", dir, err)
	}
	b, err := Open(dir, nil)
	if err != nil {
		return err
	}
	if err := b.Backup(w); err != nil {
		b.Close()
		return err
	}
	return b.Close()
}

// Restore loads a snapshot written by Backup or BackupDir into dir, which
// must be empty or not exist yet, so a restore can never merge into or
// overwrite a live database. Caddy must not be running on dir. On error the
// directory is left for the operator to inspect and remove.
func Restore(dir string, r io.Reader) error {
	if err := requireEmptyDir(dir); err != nil {
		return err
	}
	// Check the header before creating anything, so a wrong file leaves
	// no directory behind.
	br := bufio.NewReader(r)
	if err := readMagic(br); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create storage directory %s: %w", dir, err)
	}
	if err := makePrivate(dir); err != nil {
		return err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	db, err := badger.Open(badgerOptions(dir, zap.NewNop()))
	if err != nil {
		return fmt.Errorf("cannot open storage directory %s: %w", dir, err)
	}
	if err := loadFrames(db, br); err != nil {
		db.Close()
		return fmt.Errorf("restoring into %s: the backup is damaged or not an api_tokens backup: %w", dir, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("restoring into %s: %w", dir, err)
	}
	return makePrivate(dir)
}

// loadFrames loads Badger's backup stream (what follows the header) into
// db, checking each frame's size first.
func loadFrames(db *badger.DB, r io.Reader) error {
	// 16 pending batches bound memory while keeping the load streaming.
	return db.Load(&frameChecker{r: r}, 16)
}

// backupMagic starts every backup, so Restore can tell a backup from any
// other file before it writes anything.
const backupMagic = "caddy-api-tokens backup v1\n"

func readMagic(r *bufio.Reader) error {
	head, err := r.Peek(len(backupMagic))
	if err != nil || !bytes.Equal(head, []byte(backupMagic)) {
		return errors.New("not an api_tokens backup: it does not start with the backup header (was it written by `caddy api-tokens backup`?)")
	}
	_, err = r.Discard(len(backupMagic))
	return err
}

// maxBackupFrame bounds one frame of Badger's backup stream (a batch of
// key-value pairs, far smaller in practice), so a damaged length prefix
// fails with an error instead of a huge allocation inside Badger.
const maxBackupFrame = 256 << 20

// frameChecker passes Badger's backup stream through and checks each
// frame's 8-byte little-endian length before Badger allocates for it.
type frameChecker struct {
	r       io.Reader
	left    uint64 // body bytes of the current frame still to pass
	pending []byte // a checked length prefix not yet passed on
}

func (f *frameChecker) Read(p []byte) (int, error) {
	if len(f.pending) == 0 && f.left == 0 {
		head := make([]byte, 8)
		// io.EOF here is the clean end at a frame boundary; a partial
		// prefix is io.ErrUnexpectedEOF.
		if _, err := io.ReadFull(f.r, head); err != nil {
			return 0, err
		}
		size := binary.LittleEndian.Uint64(head)
		if size > maxBackupFrame {
			return 0, fmt.Errorf("a frame of %d bytes is over the %d-byte limit", size, maxBackupFrame)
		}
		f.pending, f.left = head, size
	}
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		f.pending = f.pending[n:]
		return n, nil
	}
	if uint64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= uint64(n)
	if errors.Is(err, io.EOF) && f.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// requireEmptyDir refuses a directory that holds anything at all.
func requireEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage directory %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("storage directory %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("storage directory %s is not empty: restore only into a new, empty directory (move the old one aside first)", dir)
	}
	return nil
}

var _ kv.Backuper = (*Backend)(nil)
