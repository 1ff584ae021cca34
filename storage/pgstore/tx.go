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

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// maxAttempts bounds how often Update runs a transaction that keeps
// losing serialization conflicts.
const maxAttempts = 10

// View runs fn in a read-only transaction over one snapshot. Each round
// trip has the backend's timeout, not the whole transaction: a walk over
// a million tokens takes as long as it takes, a hung database fails it in
// seconds.
func (b *Backend) View(ctx context.Context, fn func(kv.Reader) error) error {
	if b.closed() {
		return kv.ErrClosed
	}
	tx, err := b.begin(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return b.failed("starting a read", err)
	}
	defer b.rollback(tx)
	if err := fn(&reader{ctx: ctx, tx: tx, b: b}); err != nil {
		return b.classify(ctx, "reading", err)
	}
	return b.classify(ctx, "reading", dbErr(b.commit(ctx, tx)))
}

// begin starts a transaction, within the backend's timeout.
func (b *Backend) begin(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	return b.pool.BeginTx(ctx, opts)
}

// commit commits tx, within the backend's timeout.
func (b *Backend) commit(ctx context.Context, tx pgx.Tx) error {
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	return tx.Commit(ctx)
}

// rollback ends tx if it is still open (a no-op after a commit), within
// the backend's timeout, so a dead connection cannot hold the caller.
func (b *Backend) rollback(tx pgx.Tx) {
	ctx, cancel := b.withTimeout(context.Background())
	defer cancel()
	_ = tx.Rollback(ctx)
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
// the change feed has applied what it published. Each round trip has the
// backend's timeout, as in View.
func (b *Backend) Update(ctx context.Context, fn func(kv.Writer) error) error {
	if b.closed() {
		return kv.ErrClosed
	}
	for attempt := 1; ; attempt++ {
		xid, w, committing, err := b.tryUpdate(ctx, fn)
		if err == nil {
			if len(w.published) > 0 {
				b.feed.applyOwn(ctx, xid, w.ownChanges)
			}
			return nil
		}
		if !committing && deadConnection(err) && attempt < maxAttempts {
			// The pool handed out a connection the server had already
			// closed (a restart, pg_terminate_backend, a pooler): nothing
			// was committed on it, and the pool has dropped it. Run again
			// on another, at once.
			continue
		}
		if !conflict(err) {
			return b.classify(ctx, "writing", err)
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w: %s: the write kept conflicting with other writes %d times; try again", kv.ErrUnavailable, b.where, attempt)
		}
		backoff := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 7)))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return b.failed("writing", ctx.Err())
		}
	}
}

// tryUpdate runs one attempt. It returns the transaction's id and its
// writer, which holds what it published for the feed to apply before
// Update returns, and whether it got as far as sending the COMMIT.
func (b *Backend) tryUpdate(ctx context.Context, fn func(kv.Writer) error) (xid int64, w *writer, committing bool, err error) {
	tx, err := b.begin(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return 0, nil, false, dbErr(err)
	}
	defer b.rollback(tx)
	w = &writer{reader: reader{ctx: ctx, tx: tx, b: b}}
	w.reader.w = w
	if err := fn(w); err != nil {
		return 0, nil, false, err
	}
	if xid, err = w.finish(); err != nil {
		return 0, nil, false, err
	}
	if err := b.commit(ctx, tx); err != nil {
		if err := b.commitOutcome(xid, err); err != nil {
			return 0, nil, true, err
		}
	}
	return xid, w, true, nil
}

// commitOutcome decides what a failed COMMIT means: nil if the change
// was saved after all. A conflict detected at commit is retried. If the
// connection broke or timed out during the commit, the transaction may
// have committed or not: its status is asked on another connection (again
// while the server still reports it in progress, finishing a slow
// commit), so a change that did commit is reported as done, one that did
// not as unavailable, and nothing is ever half-written either way.
func (b *Backend) commitOutcome(xid int64, err error) error {
	if conflict(err) || !unavailable(err) || xid == 0 {
		return dbErr(err)
	}
	deadline := time.Now().Add(b.opts.Timeout)
	for {
		ctx, cancel := b.withTimeout(context.Background())
		var status *string
		qerr := b.pool.QueryRow(ctx, `SELECT pg_xact_status($1::text::xid8)`, strconv.FormatInt(xid, 10)).Scan(&status)
		cancel()
		switch {
		case qerr != nil || status == nil || time.Now().After(deadline):
			return fmt.Errorf("%w: %s: the connection broke during the commit and the database cannot tell yet whether the change was saved; check before retrying: %v",
				kv.ErrUnavailable, b.where, err)
		case *status == "committed":
			b.log.Warn("the connection broke during a commit that did commit", zap.Int64("xid", xid), zap.Error(err))
			return nil
		case *status == "aborted":
			return dbErr(err) // nothing was written
		}
		time.Sleep(50 * time.Millisecond) // in progress: the commit is still being written
	}
}

// reader is a kv.Reader over a transaction. Every read first sends
// the writes buffered before it (see writer), so a transaction reads its
// own writes.
type reader struct {
	ctx context.Context
	tx  pgx.Tx
	b   *Backend
	w   *writer // nil in a read-only transaction
}

// stmt bounds one round trip by the backend's timeout.
func (r *reader) stmt() (context.Context, context.CancelFunc) { return r.b.withTimeout(r.ctx) }

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
	ctx, cancel := r.stmt()
	defer cancel()
	err := r.tx.QueryRow(ctx, `SELECT value FROM api_tokens_kv WHERE key = $1`, []byte(key)).Scan(&val)
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
	type pair struct {
		key string
		val []byte
	}
	ctx, cancel := r.stmt()
	rows, err := r.tx.Query(ctx, `SELECT key, value FROM api_tokens_kv WHERE key = ANY($1)`, args)
	if err != nil {
		cancel()
		return dbErr(err)
	}
	found, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pair, error) {
		var k, v []byte
		err := row.Scan(&k, &v)
		return pair{string(k), v}, err
	})
	cancel()
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
func (r *reader) Scan(prefix string, o kv.ScanOptions, fn func(key, val []byte) error) error {
	return r.ScanExpiry(prefix, o, func(key, val []byte, _ time.Time) error { return fn(key, val) })
}

// ScanExpiry is Scan telling each key's expiry too (kv.ExpiryScanner).
func (r *reader) ScanExpiry(prefix string, o kv.ScanOptions, fn func(key, val []byte, expiresAt time.Time) error) error {
	if err := r.flush(); err != nil {
		return err
	}
	lo, hi := []byte(prefix), []byte(kv.PrefixEnd(prefix))
	switch {
	case o.Reverse && o.From != "":
		hi = append([]byte(o.From), 0) // From itself included
	case !o.Reverse && o.From != "" && o.From > prefix:
		lo = []byte(o.From)
	}
	if !o.Reverse && o.To != "" && (len(hi) == 0 || o.To < string(hi)) {
		hi = []byte(o.To)
	}
	cols := "key, value, expires_at"
	if o.KeysOnly {
		cols = "key, NULL::bytea, expires_at"
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
		type row struct {
			key, val []byte
			expires  *time.Time
		}
		ctx, cancel := r.stmt()
		rows, err := r.tx.Query(ctx, query, args...)
		if err != nil {
			cancel()
			return dbErr(err)
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var e row
			err := r.Scan(&e.key, &e.val, &e.expires)
			return e, err
		})
		cancel()
		if err != nil {
			return dbErr(err)
		}
		for _, e := range got {
			var expiresAt time.Time
			if e.expires != nil {
				expiresAt = *e.expires
			}
			if err := fn(e.key, e.val, expiresAt); err != nil {
				if errors.Is(err, kv.ErrStopScan) {
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

// writer is a kv.Writer over a serializable transaction. Writes are
// buffered and sent before the next read or at commit, as at most one
// INSERT and one DELETE (the last write of each key wins), so a
// transaction of many writes costs one round trip for them.
type writer struct {
	reader
	pending   map[string]pendingWrite
	order     []string // keys of pending, in first-write order
	queued    pgx.Batch
	published []publication
	// written is the last value written to each key in the transaction
	// (nil: deleted), so the writer can apply what it published itself
	// when the feed cannot confirm it.
	written map[string][]byte
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
	if w.written == nil {
		w.written = map[string][]byte{}
	}
	w.written[key] = pw.val
}

// ownChanges is what the transaction published, as the feed would read it
// right after the commit. A key published without being written is left
// out: only the database knows its value.
func (w *writer) ownChanges() []kv.Change {
	changes := make([]kv.Change, 0, len(w.published))
	for _, p := range w.published {
		if val, wrote := w.written[p.key]; wrote {
			changes = append(changes, kv.Change{Key: p.key, Hint: p.hint, Value: val, Found: val != nil})
		}
	}
	return changes
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
		ctx, cancel := w.stmt()
		err := w.tx.QueryRow(ctx, `SELECT nextval('api_tokens_seq')`).Scan(&n)
		cancel()
		if err != nil {
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
	ctx, cancel := w.stmt()
	defer cancel()
	err := w.tx.SendBatch(ctx, &w.queued).Close()
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

// finish sends the buffered writes, writes the change rows of what was
// published, wakes the other nodes (NOTIFY is sent at commit, and only if
// it commits), and returns the transaction's id, all in one round trip.
// The id is 0 if the transaction wrote nothing (a lease check that found
// the lease its own): asking for one would make it a writing transaction.
func (w *writer) finish() (int64, error) {
	w.queueWrites()
	if len(w.published) > 0 {
		keys := make([][]byte, len(w.published))
		hints := make([][]byte, len(w.published))
		for i, p := range w.published {
			keys[i], hints[i] = []byte(p.key), p.hint
		}
		w.queued.Queue(`INSERT INTO api_tokens_changes (key, hint) SELECT * FROM unnest($1::bytea[], $2::bytea[])`, keys, hints)
		w.queued.Queue(`SELECT pg_notify('api_tokens_changes', '')`)
	}
	var xid *int64
	w.queued.Queue(`SELECT pg_current_xact_id_if_assigned()::text::bigint`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&xid)
	})
	if err := w.flush(); err != nil || xid == nil {
		return 0, err
	}
	return *xid, nil
}

// Interface guards
var (
	_ kv.Reader = (*reader)(nil)
	_ kv.Writer = (*writer)(nil)
)
