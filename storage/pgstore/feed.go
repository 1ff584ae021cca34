package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// notifyChannel is the LISTEN/NOTIFY channel that wakes the nodes.
const notifyChannel = "api_tokens_changes"

// snapshot is a position in the change log: a PostgreSQL snapshot. Every
// transaction with an id below xmax that is not in inProgress had ended
// when it was taken, so the feed has applied exactly the change rows
// visible in it; the rows still to read are those of transactions with
// ids from xmax on, or in inProgress.
type snapshot struct {
	xmax       int64
	inProgress []int64
}

// parseSnapshot reads pg_snapshot's text form, "xmin:xmax:xip,xip,...".
func parseSnapshot(s string) (snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return snapshot{}, fmt.Errorf("unexpected snapshot %q", s)
	}
	var snap snapshot
	var err error
	if snap.xmax, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("unexpected snapshot %q", s)
	}
	if parts[2] != "" {
		for x := range strings.SplitSeq(parts[2], ",") {
			id, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return snapshot{}, fmt.Errorf("unexpected snapshot %q", s)
			}
			snap.inProgress = append(snap.inProgress, id)
		}
	}
	return snap, nil
}

// includes reports whether the transaction xid had ended when the
// snapshot was taken, so its changes are applied at this position.
func (s snapshot) includes(xid int64) bool {
	return xid < s.xmax && !slices.Contains(s.inProgress, xid)
}

// oldest is the smallest transaction id whose change rows may still be
// needed from this position.
func (s snapshot) oldest() int64 {
	oldest := s.xmax
	for _, x := range s.inProgress {
		oldest = min(oldest, x)
	}
	return oldest
}

// feed reads the change log and hands what it finds to the subscriber.
// One goroutine polls: when a notification or a local write wakes it, and
// every PollInterval otherwise. Another holds a connection of its own that
// LISTENs, and wakes the poller on each notification and after each
// (re)connect, so it subscribes first and then catches up.
type feed struct {
	b   *Backend
	sub kv.Subscriber

	wake chan struct{}

	mu     sync.Mutex
	pos    snapshot
	valid  bool          // pos has been reached by a reset
	pruned int64         // the change log's pruned_below as of pos
	polled chan struct{} // closed and replaced after every poll, applied or failed
	// started numbers the polls; finished is the number of the last poll
	// that ended, and finishedErr how it ended.
	started     uint64
	finished    uint64
	finishedErr error

	connected   atomic.Bool
	lastSync    atomic.Int64 // unix nanoseconds of the last successful poll
	changes     atomic.Uint64
	fullReloads atomic.Uint64
}

// Subscribe starts the feed and returns once the subscriber has the
// first snapshot.
func (b *Backend) Subscribe(ctx context.Context, sub kv.Subscriber) error {
	f := &feed{b: b, sub: sub, wake: make(chan struct{}, 1), polled: make(chan struct{})}
	b.feed = f
	if err := f.poll(ctx); err != nil {
		return err
	}
	b.wg.Add(3)
	go f.pollLoop()
	go f.listen()
	go b.maintain()
	return nil
}

// SyncStatus reports how current this node is.
func (b *Backend) SyncStatus() kv.SyncStatus {
	f := b.feed
	if f == nil {
		return kv.SyncStatus{}
	}
	return kv.SyncStatus{
		Connected:   f.connected.Load(),
		LastSync:    time.Unix(0, f.lastSync.Load()),
		Changes:     f.changes.Load(),
		FullReloads: f.fullReloads.Load(),
	}
}

// kick asks for a poll now. It never blocks.
func (f *feed) kick() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// applyOwn returns once this node has applied the changes of transaction
// xid, which has committed: the node that made a change refuses a token
// it deleted on the very next request. Normally a poll applies them; if
// none can within the timeout (the database went away right after the
// commit), the node applies what the transaction itself published, so it
// is no more stale than a node that read the change before the outage.
// Every node, this one included, reads the change again from the log when
// its feed reconnects.
func (f *feed) applyOwn(ctx context.Context, xid int64, own func() []kv.Change) {
	ctx, cancel := f.b.withTimeout(ctx)
	defer cancel()
	if f.waitApplied(ctx, xid) || f.b.closed() {
		return
	}
	f.b.log.Warn("a change was saved but the change feed could not confirm it in time; applied it from the write itself",
		zap.Int64("xid", xid))
	f.sub.Apply(own())
}

// waitApplied reports whether a poll applied the changes of transaction
// xid before ctx ended.
func (f *feed) waitApplied(ctx context.Context, xid int64) bool {
	f.kick()
	for {
		f.mu.Lock()
		done, polled := f.valid && f.pos.includes(xid), f.polled
		f.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-polled:
		case <-ctx.Done():
			return false
		case <-f.b.stop:
			return false
		}
	}
}

// CatchUp returns once a poll that started after the call has applied
// what was committed before it. Concurrent callers share the poll.
func (b *Backend) CatchUp(ctx context.Context) error { return b.awaitPoll(ctx, true) }

// AwaitFeed is CatchUp without asking for a poll: it waits for the next
// one that a notification or the poll interval starts anyway, so it costs
// the database nothing.
func (b *Backend) AwaitFeed(ctx context.Context) error { return b.awaitPoll(ctx, false) }

func (b *Backend) awaitPoll(ctx context.Context, kick bool) error {
	f := b.feed
	f.mu.Lock()
	target := f.started + 1
	f.mu.Unlock()
	if kick {
		f.kick()
	}
	for {
		f.mu.Lock()
		finished, err, polled := f.finished, f.finishedErr, f.polled
		f.mu.Unlock()
		if finished >= target {
			return err
		}
		select {
		case <-polled:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.stop:
			return kv.ErrClosed
		}
	}
}

func (f *feed) pollLoop() {
	defer f.b.wg.Done()
	ctx, cancel := f.b.untilClosed()
	defer cancel()
	timer := time.NewTimer(f.b.opts.PollInterval)
	defer timer.Stop()
	for {
		select {
		case <-f.b.stop:
			return
		case <-f.wake:
		case <-timer.C:
		}
		// Each round trip has the backend's timeout; a reload of a
		// million tokens takes as long as it needs.
		err := f.poll(ctx)
		if err != nil && !f.b.closed() {
			if f.connected.Swap(false) {
				f.b.log.Warn("lost the token database's change feed; serving from memory until it is back", zap.Error(err))
			}
		}
		timer.Reset(f.b.opts.PollInterval)
	}
}

// poll reads, in one snapshot, the change rows since the last position
// and the current value of every key they name, applies them, and moves
// the position to the snapshot. When the rows it needs may have been
// pruned (or at the start), it loads everything instead.
func (f *feed) poll(ctx context.Context) (err error) {
	f.mu.Lock()
	f.started++
	number := f.started
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.finished, f.finishedErr = number, err
		close(f.polled)
		f.polled = make(chan struct{})
		f.mu.Unlock()
	}()
	tx, err := f.b.begin(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return f.b.failed("reading the change log", err)
	}
	defer f.b.rollback(tx)
	var text string
	var prunedBelow int64
	qctx, cancel := f.b.withTimeout(ctx)
	err = tx.QueryRow(qctx, `SELECT pg_current_snapshot()::text, (SELECT pruned_below FROM api_tokens_feed)`).Scan(&text, &prunedBelow)
	cancel()
	if err != nil {
		return f.b.failed("reading the change log", err)
	}
	snap, err := parseSnapshot(text)
	if err != nil {
		return err
	}
	f.mu.Lock()
	pos, valid, pruned := f.pos, f.valid, f.pruned
	f.mu.Unlock()
	// Rows pruned since the last poll were all seen if every one of
	// them is older than the oldest transaction the last position had
	// not seen the end of; otherwise one may be missing: reload.
	if !valid || prunedBelow > pruned && prunedBelow > pos.oldest() {
		return f.reset(ctx, tx, snap, prunedBelow, valid)
	}
	changes, err := f.read(ctx, tx, pos)
	if err != nil {
		return f.b.failed("reading the change log", err)
	}
	if err := f.b.commit(ctx, tx); err != nil {
		return f.b.failed("reading the change log", err)
	}
	if len(changes) > 0 {
		f.sub.Apply(changes)
		f.changes.Add(uint64(len(changes)))
	}
	f.advance(snap, prunedBelow)
	return nil
}

// reset loads the whole snapshot into the subscriber, which swaps its
// index once the load is done and serves the old one meanwhile.
func (f *feed) reset(ctx context.Context, tx pgx.Tx, snap snapshot, prunedBelow int64, reload bool) error {
	r := &reader{ctx: ctx, tx: tx, b: f.b}
	if err := f.sub.Reset(r, false); err != nil {
		var dbe *dbError
		if errors.As(err, &dbe) {
			return f.b.failed("loading the tokens", dbe.err)
		}
		return err
	}
	if reload {
		f.fullReloads.Add(1)
		f.b.log.Warn("reloaded every token: the changes this node missed were pruned from the change log before it could read them")
	}
	f.advance(snap, prunedBelow)
	return nil
}

// read returns the changes committed between pos and the transaction's
// snapshot, with each key's value in that snapshot.
func (f *feed) read(ctx context.Context, tx pgx.Tx, pos snapshot) ([]kv.Change, error) {
	inProgress := pos.inProgress
	if inProgress == nil {
		inProgress = []int64{}
	}
	qctx, cancel := f.b.withTimeout(ctx)
	defer cancel()
	rows, err := tx.Query(qctx, `SELECT key, hint FROM api_tokens_changes WHERE xid >= $1 OR xid = ANY($2)`, pos.xmax, inProgress)
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	var changes []kv.Change
	var keys [][]byte
	for rows.Next() {
		var key, hint []byte
		if err := rows.Scan(&key, &hint); err != nil {
			rows.Close()
			return nil, err
		}
		if i, seen := index[string(key)]; seen {
			if hint != nil {
				changes[i].Hint = hint
			}
			continue
		}
		index[string(key)] = len(changes)
		changes = append(changes, kv.Change{Key: string(key), Hint: hint})
		keys = append(keys, key)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, nil
	}
	qctx, cancel = f.b.withTimeout(ctx)
	defer cancel()
	rows, err = tx.Query(qctx, `SELECT key, value FROM api_tokens_kv WHERE key = ANY($1)`, keys)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var key, val []byte
		if err := rows.Scan(&key, &val); err != nil {
			rows.Close()
			return nil, err
		}
		c := &changes[index[string(key)]]
		c.Value, c.Found = val, true
	}
	return changes, rows.Err()
}

// advance records a successful poll at snap, which saw the change log
// pruned below prunedBelow.
func (f *feed) advance(snap snapshot, prunedBelow int64) {
	f.mu.Lock()
	f.pos, f.valid, f.pruned = snap, true, prunedBelow
	f.mu.Unlock()
	f.lastSync.Store(time.Now().UnixNano())
	if !f.connected.Swap(true) && f.changes.Load()+f.fullReloads.Load() > 0 {
		f.b.log.Info("the token database's change feed is back")
	}
}

// listen keeps a connection of its own LISTENing for notifications, and
// wakes the poller on each one and after every (re)connect. It pings the
// connection when quiet, so a dead one is replaced within seconds.
func (f *feed) listen() {
	defer f.b.wg.Done()
	ctx, cancel := f.b.untilClosed()
	defer cancel()
	retry := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		f.b.log.Debug("the change notification connection dropped; reconnecting", zap.Error(err), zap.Duration("in", retry))
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, 2*time.Second)
	}
}

// listenOnce connects, subscribes, and then waits for notifications until
// the connection fails.
func (f *feed) listenOnce(ctx context.Context) error {
	dialCtx, cancel := f.b.withTimeout(ctx)
	conn, err := pgx.ConnectConfig(dialCtx, f.b.cfg.ConnConfig.Copy())
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+notifyChannel); err != nil {
		return err
	}
	f.kick() // catch up on what was committed before LISTEN took effect
	for {
		waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			f.kick()
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
}
