package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// recorder is a subscriber that notes what the feed hands it, so a test
// can drive one node's polls by hand against a real database.
type recorder struct {
	resets  int
	changes []kv.Change
}

func (r *recorder) Reset(kv.Reader, bool) error { r.resets++; return nil }
func (r *recorder) Apply(cs []kv.Change)        { r.changes = append(r.changes, cs...) }

// manualFeed is a node's feed whose polls run only when the test says:
// as if the node were disconnected in between.
func manualFeed(t *testing.T, dsn string) (*feed, *recorder) {
	t.Helper()
	b, err := Open(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	rec := &recorder{}
	f := &feed{b: b, sub: rec, wake: make(chan struct{}, 1), polled: make(chan struct{})}
	b.feed = f
	if err := f.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f, rec
}

func exec(t *testing.T, dsn string, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// A node that comes back after the changes it missed were pruned reloads
// everything, once; one whose missed changes are all still there reads
// them; and a transaction left open does not make it reload again and
// again, because pruning keeps what an open transaction's successors
// wrote.
func TestPrunedChangesMakeAReloadOnlyWhenMissed(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	writer, err := openStore(context.Background(), dsn, Options{}, storage.Options{PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	f, rec := manualFeed(t, dsn)
	ctx := context.Background()
	poll := func() {
		t.Helper()
		if err := f.poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writer.CreateUser(ctx, storage.NewUser{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	poll()
	if rec.resets != 1 || len(rec.changes) != 1 {
		t.Fatalf("after a change: %d resets, %d changes; want the first load and 1 change", rec.resets, len(rec.changes))
	}

	// Missed and still in the log: read, no reload.
	if _, err := writer.UpdateUser(ctx, "alice", storage.UserPatch{Disabled: new(true)}); err != nil {
		t.Fatal(err)
	}
	poll()
	if rec.resets != 1 || len(rec.changes) != 2 {
		t.Fatalf("after a missed change still logged: %d resets, %d changes", rec.resets, len(rec.changes))
	}

	// Missed and pruned before this node read it: one reload.
	if _, err := writer.UpdateUser(ctx, "alice", storage.UserPatch{Disabled: new(false)}); err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, `UPDATE api_tokens_feed SET pruned_below = (SELECT max(xid) + 1 FROM api_tokens_changes); DELETE FROM api_tokens_changes`)
	poll()
	poll()
	if rec.resets != 2 || f.fullReloads.Load() != 1 {
		t.Fatalf("after a missed change was pruned: %d resets, %d reloads; want one reload", rec.resets, f.fullReloads.Load())
	}

	// A transaction left open; changes after it; pruning as the
	// maintenance does it, everything old enough: no reload, as the rows
	// this node may still need are kept.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	open, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback(ctx)
	if _, err := open.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.UpdateUser(ctx, "alice", storage.UserPatch{Email: new("a@example.com")}); err != nil {
		t.Fatal(err)
	}
	f.b.opts.ChangeRetention = time.Microsecond
	time.Sleep(time.Millisecond)
	if _, _, err := f.b.maintainOnce(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(rec.changes)
	for range 3 {
		poll()
	}
	if rec.resets != 2 || len(rec.changes) != before+1 {
		t.Fatalf("with a transaction open and the log pruned: %d resets (want 2), %d new changes (want 1)", rec.resets, len(rec.changes)-before)
	}
}

// One maintenance round deletes every expired row, however many more
// than one statement's batch there are: sessions and throttle entries are
// created faster than a batch a minute.
func TestMaintenanceKeepsUpWithManyExpiredRows(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	b, err := Open(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n := 2*maintainBatch + 500
	exec(t, dsn, fmt.Sprintf(`INSERT INTO api_tokens_kv (key, value, expires_at)
		SELECT convert_to('lt/test/' || i, 'UTF8'), '\x00', now() - interval '1 minute' FROM generate_series(1, %d) AS i`, n))
	exec(t, dsn, `INSERT INTO api_tokens_kv (key, value, expires_at) VALUES ('lt/live', '\x00', now() + interval '1 hour')`)
	expired, _, err := b.maintainRound()
	if err != nil || expired != int64(n) {
		t.Fatalf("one round deleted %d expired rows (%v); want %d", expired, err, n)
	}
	var left int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM api_tokens_kv WHERE key >= 'lt/' AND key < 'lt0'`).Scan(&left); err != nil || left != 1 {
		t.Fatalf("%d rows left (%v); want only the live one", left, err)
	}
}

// openStore opens the rules over the database in dsn, as the api_tokens
// app does.
func openStore(ctx context.Context, dsn string, opts Options, storeOpts storage.Options) (*storage.Store, error) {
	b, err := Open(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	return storage.Open(ctx, b, storeOpts)
}
