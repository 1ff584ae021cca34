package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// maintainLock is the advisory lock key that lets one node at a time do
// the maintenance. It is a transaction-level lock: it is released with the
// transaction, so a pooled connection never keeps it.
const maintainLock = 0x6d61696e // "main"

// maintainBatch bounds the rows one maintenance statement deletes, and
// maintainRounds the statements of one round: up to a million rows a
// round, enough for sessions and throttle entries created at thousands a
// second, in transactions short enough not to hold anything up.
const (
	maintainBatch  = 10000
	maintainRounds = 100
)

// maintain deletes expired rows (the keys of temporary tokens, written
// with a TTL) and change rows older than the retention, every
// MaintenanceInterval, on whichever node gets the lock.
func (b *Backend) maintain() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		expired, pruned, err := b.maintainRound()
		switch {
		case err != nil && !b.closed():
			b.log.Debug("maintenance of the token database failed; the next round tries again", zap.Error(err))
		case expired+pruned > 0:
			b.log.Debug("token database maintenance", zap.Int64("expired_rows_deleted", expired), zap.Int64("change_rows_pruned", pruned))
		}
	}
}

// maintainRound deletes batches until a batch finds less than a full
// one to delete.
func (b *Backend) maintainRound() (expired, pruned int64, err error) {
	for range maintainRounds {
		if b.closed() {
			return expired, pruned, nil
		}
		ctx, cancel := b.withTimeout(context.Background())
		e, p, err := b.maintainOnce(ctx)
		cancel()
		expired, pruned = expired+e, pruned+p
		if err != nil || e < maintainBatch && p < maintainBatch {
			return expired, pruned, err
		}
	}
	return expired, pruned, nil
}

// maintainOnce deletes one batch if no other node is doing the
// maintenance, and reports how many expired rows and change rows it
// deleted.
func (b *Backend) maintainOnce(ctx context.Context) (expired, pruned int64, err error) {
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, maintainLock).Scan(&locked); err != nil || !locked {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM api_tokens_kv WHERE key IN
			(SELECT key FROM api_tokens_kv WHERE expires_at < now() LIMIT $1)`, maintainBatch)
		if err != nil {
			return err
		}
		expired = tag.RowsAffected()
		// The position a node needs is a transaction id, so pruning
		// records the highest id it removed: a node that needs rows at or
		// below it reloads everything. Rows of transactions newer than the
		// oldest one still running are kept, however old: a node's
		// position may still need them (a transaction that ran for longer
		// than the retention and has just committed).
		var below *int64
		err = tx.QueryRow(ctx, `WITH gone AS (
				DELETE FROM api_tokens_changes WHERE ctid IN
					(SELECT ctid FROM api_tokens_changes
					 WHERE at < now() - $1::bigint * interval '1 microsecond'
					   AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
					 LIMIT $2)
				RETURNING xid)
			SELECT max(xid) + 1, count(*) FROM gone`, b.opts.ChangeRetention.Microseconds(), maintainBatch).Scan(&below, &pruned)
		if err != nil || below == nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE api_tokens_feed SET pruned_below = greatest(pruned_below, $1)`, *below)
		return err
	})
	return expired, pruned, err
}
