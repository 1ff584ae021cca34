package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// maxAttempts bounds how often Update runs a transaction that keeps
// losing serialization conflicts.
const maxAttempts = 10

// View runs fn in a read-only transaction over one snapshot.
func (b *Backend) View(ctx context.Context, fn func(storage.Reader) error) error {
	if b.closed() {
		return storage.ErrClosed
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	tx, err := b.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return b.failed("starting a read", err)
	}
	defer tx.Rollback(context.Background())
	if err := fn(&reader{ctx: ctx, tx: tx, b: b}); err != nil {
		return b.classify(ctx, "reading", err)
	}
	return b.classify(ctx, "reading", tx.Commit(ctx))
}

// classify leaves the rules' own errors (and ErrStopScan's absence) as
// they are and words the database's.
func (b *Backend) classify(ctx context.Context, step string, err error) error {
	if err == nil {
		return nil
	}
	var dbErr *dbError
	if errors.As(err, &dbErr) {
		if ctx.Err() != nil && !unavailable(dbErr.err) {
			return b.failed(step, ctx.Err())
		}
		return b.failed(step, dbErr.err)
	}
	return err
}

// dbError marks an error that came from the database, so classify can
// tell it from an error of the rules that fn passes through.
type dbError struct{ err error }

func (e *dbError) Error() string { return e.err.Error() }
func (e *dbError) Unwrap() error { return e.err }

func dbErr(err error) error {
	if err == nil {
		return nil
	}
	return &dbError{err}
}

// Update runs fn in a serializable transaction, retrying it when it loses
// a conflict with another node's transaction, commits it, and waits until
// the change feed has applied what it published.
func (b *Backend) Update(ctx context.Context, fn func(storage.Writer) error) error {
	if b.closed() {
		return storage.ErrClosed
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		xid, published, err := b.tryUpdate(ctx, fn)
		if err == nil {
			if published {
				b.feed.waitApplied(ctx, xid)
			}
			return nil
		}
		if !conflict(err) {
			return b.classify(ctx, "writing", err)
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w: %s: the write kept conflicting with other writes %d times; try again", storage.ErrUnavailable, b.where, attempt)
		}
		backoff := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 7)))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return b.failed("writing", ctx.Err())
		}
	}
}

// tryUpdate runs one attempt. It returns the transaction's id, and
// whether it published changes the feed must deliver before Update
// returns.
func (b *Backend) tryUpdate(ctx context.Context, fn func(storage.Writer) error) (xid int64, published bool, err error) {
	tx, err := b.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return 0, false, dbErr(err)
	}
	defer tx.Rollback(context.Background())
	w := &writer{reader: reader{ctx: ctx, tx: tx, b: b}}
	w.reader.w = w
	if err := fn(w); err != nil {
		return 0, false, err
	}
	if xid, err = w.finish(); err != nil {
		return 0, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return b.commitOutcome(xid, err)
	}
	return xid, len(w.published) > 0, nil
}

// commitOutcome decides what a failed COMMIT means. A conflict detected
// at commit is retried. If the connection broke during the commit, the
// transaction may have committed or not: its status is asked on another
// connection, so a change that did commit is reported as done, and one
// that did not as unavailable, and nothing is ever half-written either
// way.
func (b *Backend) commitOutcome(xid int64, err error) (int64, bool, error) {
	if conflict(err) || !unavailable(err) || xid == 0 {
		return 0, false, dbErr(err)
	}
	ctx, cancel := b.withTimeout(context.Background())
	defer cancel()
	var status *string
	qerr := b.pool.QueryRow(ctx, `SELECT pg_xact_status($1::text::xid8)`, strconv.FormatInt(xid, 10)).Scan(&status)
	switch {
	case qerr == nil && status != nil && *status == "committed":
		b.log.Warn("the connection broke during a commit that did commit", zap.Int64("xid", xid), zap.Error(err))
		return xid, true, nil
	case qerr == nil:
		return 0, false, dbErr(err) // aborted: nothing was written
	}
	return 0, false, fmt.Errorf("%w: %s: the connection broke during the commit and the database cannot be asked whether the change was saved; check before retrying: %v",
		storage.ErrUnavailable, b.where, err)
}

// reader is a storage.Reader over a transaction. Every read first sends
// the writes buffered before it (see writer), so a transaction reads its
// own writes.
type reader struct {
	ctx context.Context
	tx  pgx.Tx
	b   *Backend
	w   *writer // nil in a read-only transaction
}

func (r *reader) flush() error {
	if r.w == nil {
		return nil
	}
	return r.w.flush()
}

func (r *reader) Get(key string) ([]byte, bool, error) {
	if err := r.flush(); err != nil {
		return nil, false, err
	}
	var val []byte
	err := r.tx.QueryRow(r.ctx, `SELECT value FROM api_tokens_kv WHERE key = $1`, []byte(key)).Scan(&val)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, dbErr(err)
	}
	return val, true, nil
}

// GetMany reads every key in one query, then calls fn, so fn may use the
// transaction.
func (r *reader) GetMany(keys []string, fn func(int, []byte) error) error {
	if len(keys) == 0 {
		return nil
	}
	if err := r.flush(); err != nil {
		return err
	}
	positions := make(map[string][]int, len(keys))
	args := make([][]byte, 0, len(keys))
	for i, k := range keys {
		if _, seen := positions[k]; !seen {
			args = append(args, []byte(k))
		}
		positions[k] = append(positions[k], i)
	}
	rows, err := r.tx.Query(r.ctx, `SELECT key, value FROM api_tokens_kv WHERE key = ANY($1)`, args)
	if err != nil {
		return dbErr(err)
	}
	type kv struct {
		key string
		val []byte
	}
	found, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (kv, error) {
		var k, v []byte
		err := row.Scan(&k, &v)
		return kv{string(k), v}, err
	})
	if err != nil {
		return dbErr(err)
	}
	for _, f := range found {
		for _, i := range positions[f.key] {
			if err := fn(i, f.val); err != nil {
				return err
			}
		}
	}
	return nil
}

// Page sizes of Scan: small first, as many scans stop early (the newest
// audit entries), then doubling, so loading a million tokens takes a
// hundred queries.
const (
	firstPage = 256
	maxPage   = 8192
)

// Scan reads the range a page at a time, and calls fn for a page's rows
// once the page is read, so fn may read from the transaction.
func (r *reader) Scan(prefix string, o storage.ScanOptions, fn func(key, val []byte) error) error {
	if err := r.flush(); err != nil {
		return err
	}
	lo, hi := []byte(prefix), []byte(prefixEnd(prefix))
	switch {
	case o.Reverse && o.From != "":
		hi = append([]byte(o.From), 0) // From itself included
	case !o.Reverse && o.From != "" && o.From > prefix:
		lo = []byte(o.From)
	}
	if !o.Reverse && o.To != "" && (len(hi) == 0 || o.To < string(hi)) {
		hi = []byte(o.To)
	}
	cols := "key, value"
	if o.KeysOnly {
		cols = "key, NULL::bytea"
	}
	page := firstPage
	for {
		var query string
		var args []any
		switch {
		case o.Reverse && len(hi) > 0:
			query = `SELECT ` + cols + ` FROM api_tokens_kv WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3`
			args = []any{lo, hi, page}
		case o.Reverse:
			query = `SELECT ` + cols + ` FROM api_tokens_kv WHERE key >= $1 ORDER BY key DESC LIMIT $2`
			args = []any{lo, page}
		case len(hi) > 0:
			query = `SELECT ` + cols + ` FROM api_tokens_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3`
			args = []any{lo, hi, page}
		default:
			query = `SELECT ` + cols + ` FROM api_tokens_kv WHERE key >= $1 ORDER BY key LIMIT $2`
			args = []any{lo, page}
		}
		rows, err := r.tx.Query(r.ctx, query, args...)
		if err != nil {
			return dbErr(err)
		}
		type kv struct{ key, val []byte }
		got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (kv, error) {
			var e kv
			err := row.Scan(&e.key, &e.val)
			return e, err
		})
		if err != nil {
			return dbErr(err)
		}
		for _, e := range got {
			if err := fn(e.key, e.val); err != nil {
				if errors.Is(err, storage.ErrStopScan) {
					return nil
				}
				return err
			}
		}
		if len(got) < page {
			return nil
		}
		last := got[len(got)-1].key
		if o.Reverse {
			hi = last
		} else {
			lo = append(last, 0)
		}
		page = min(2*page, maxPage)
	}
}

// prefixEnd is the first key after every key with the given prefix, ""
// if there is none.
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// writer is a storage.Writer over a serializable transaction. Writes are
// buffered and sent before the next read or at commit, as at most one
// INSERT and one DELETE (the last write of each key wins), so a
// transaction of many writes costs one round trip for them.
type writer struct {
	reader
	pending   map[string]pendingWrite
	order     []string // keys of pending, in first-write order
	queued    pgx.Batch
	published []publication
	// seqNext and seqLeft are the numbers NextSeq still has of the block
	// it reserved.
	seqNext, seqLeft uint64
}

// pendingWrite is the last buffered write of a key: a value (nil: delete)
// and its TTL in microseconds (nil: none).
type pendingWrite struct {
	val    []byte
	micros *int64
}

func (w *writer) buffer(key string, pw pendingWrite) {
	if w.pending == nil {
		w.pending = map[string]pendingWrite{}
	}
	if _, seen := w.pending[key]; !seen {
		w.order = append(w.order, key)
	}
	w.pending[key] = pw
}

type publication struct {
	key  string
	hint []byte
}

func (w *writer) Set(key string, val []byte, ttl time.Duration) error {
	if val == nil {
		val = []byte{}
	}
	var micros *int64
	if ttl > 0 {
		m := ttl.Microseconds()
		micros = &m
	}
	w.buffer(key, pendingWrite{val: val, micros: micros})
	return nil
}

func (w *writer) Delete(key string) error {
	w.buffer(key, pendingWrite{})
	return nil
}

// NextSeq hands out numbers from blocks of seqBlock that the sequence
// (INCREMENT BY 1000) reserves for this transaction, so a transaction that
// writes a thousand audit entries asks the database once.
func (w *writer) NextSeq() (uint64, error) {
	if w.seqLeft == 0 {
		if err := w.flush(); err != nil {
			return 0, err
		}
		var n int64
		if err := w.tx.QueryRow(w.ctx, `SELECT nextval('api_tokens_seq')`).Scan(&n); err != nil {
			return 0, dbErr(err)
		}
		w.seqNext, w.seqLeft = uint64(n), seqBlock
	}
	n := w.seqNext
	w.seqNext++
	w.seqLeft--
	return n, nil
}

// seqBlock is the sequence's increment: the numbers one nextval reserves.
const seqBlock = 1000

func (w *writer) Publish(key string, hint []byte) {
	w.published = append(w.published, publication{key, hint})
}

// flush sends the buffered writes, and the statements queued with them.
func (w *writer) flush() error {
	w.queueWrites()
	if w.queued.Len() == 0 {
		return nil
	}
	err := w.tx.SendBatch(w.ctx, &w.queued).Close()
	w.queued = pgx.Batch{}
	return dbErr(err)
}

// queueWrites turns the buffered writes into one INSERT of every set key
// and one DELETE of every deleted key.
func (w *writer) queueWrites() {
	var setKeys, vals, delKeys [][]byte
	var micros []*int64
	for _, k := range w.order {
		pw := w.pending[k]
		if pw.val == nil {
			delKeys = append(delKeys, []byte(k))
			continue
		}
		setKeys, vals, micros = append(setKeys, []byte(k)), append(vals, pw.val), append(micros, pw.micros)
	}
	if len(setKeys) > 0 {
		w.queued.Queue(`INSERT INTO api_tokens_kv (key, value, expires_at)
			SELECT k, v, now() + m * interval '1 microsecond' FROM unnest($1::bytea[], $2::bytea[], $3::bigint[]) AS u(k, v, m)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`, setKeys, vals, micros)
	}
	if len(delKeys) > 0 {
		w.queued.Queue(`DELETE FROM api_tokens_kv WHERE key = ANY($1)`, delKeys)
	}
	clear(w.pending)
	w.order = w.order[:0]
}

// finish writes the change rows of what was published, wakes the other
// nodes (NOTIFY is sent at commit, and only if it commits), and returns
// the transaction's id, with the buffered writes, in one round trip.
func (w *writer) finish() (int64, error) {
	if len(w.published) > 0 {
		keys := make([][]byte, len(w.published))
		hints := make([][]byte, len(w.published))
		for i, p := range w.published {
			keys[i], hints[i] = []byte(p.key), p.hint
		}
		w.queueWrites()
		w.queued.Queue(`INSERT INTO api_tokens_changes (key, hint) SELECT * FROM unnest($1::bytea[], $2::bytea[])`, keys, hints)
		w.queued.Queue(`SELECT pg_notify('api_tokens_changes', '')`)
	}
	var xid int64
	w.queueWrites()
	w.queued.Queue(`SELECT pg_current_xact_id()::text::bigint`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&xid)
	})
	if err := w.flush(); err != nil {
		return 0, err
	}
	return xid, nil
}

// Interface guards
var (
	_ storage.Reader = (*reader)(nil)
	_ storage.Writer = (*writer)(nil)
)
