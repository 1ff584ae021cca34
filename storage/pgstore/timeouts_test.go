package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// nodeWith opens a node with a short timeout per round trip.
func nodeWith(t *testing.T, dsn string, timeout time.Duration) *storage.Store {
	t.Helper()
	s, err := openStore(context.Background(), dsn, pgstore.Options{Timeout: timeout},
		storage.Options{Clock: testtools.NewFakeClock(t0), PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// holdFeed locks the table every feed poll reads first, so no node's feed
// can read until the returned transaction ends (commit it, or leave it to
// the test's cleanup, which rolls it back). Writes do not touch the table.
func holdFeed(t *testing.T, dsn string) pgx.Tx {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	hold, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Rollback(context.Background()) })
	if _, err := hold.Exec(context.Background(), `LOCK TABLE api_tokens_feed IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	return hold
}

// The timeout bounds each round trip, not a whole transaction: listing
// more tokens than one round trip's timeout could read in one go still
// works (the alert pass walks a million tokens so), while a statement
// that hangs fails within the timeout.
func TestTimeoutBoundsEachStatementNotTheTransaction(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	s := nodeWith(t, dsn, time.Second)
	ctx := ctxAs("root")
	if _, err := s.CreateUser(ctx, storage.NewUser{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	batch := make([]storage.NewToken, 20)
	for i := range batch {
		batch[i] = storage.NewToken{User: "alice", Name: fmt.Sprintf("t%d", i), Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)}
	}
	if _, _, err := s.CreateTokens(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Each token the walk visits takes 150 ms: three seconds in all,
	// three times the timeout.
	start := time.Now()
	n := 0
	err := s.Alerting().ForEachPermanentToken(context.Background(), func(storage.Token) error {
		n++
		time.Sleep(150 * time.Millisecond)
		return nil
	})
	if err != nil || n != len(batch) {
		t.Fatalf("a walk of %v over %d tokens: %d visited, %v", time.Since(start), len(batch), n, err)
	}

	// A statement that waits on a lock fails within about the timeout,
	// as unavailable.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), `LOCK TABLE api_tokens_kv IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = s.GetUser(context.Background(), "alice")
	if took := time.Since(start); !errors.Is(err, kv.ErrUnavailable) || took > 3*time.Second {
		t.Fatalf("a read behind a lock: %v after %v; want unavailable within about a second", err, took)
	}
}

// The node that deleted a token refuses it at once even when its change
// feed cannot confirm the deletion (the database stopped answering the
// feed right after the commit): it applies what it wrote itself. The
// feed is held here by a lock on the table every poll reads first, which
// the writing transaction does not touch.
func TestWriterAppliesItsOwnChangeWhenTheFeedCannotConfirmIt(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	s := nodeWith(t, dsn, time.Second)
	ctx := ctxAs("root")
	if _, err := s.CreateUser(ctx, storage.NewUser{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := s.CreateToken(ctx, storage.NewToken{User: "alice", Name: "ci", Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	secret2, _, err := s.CreateToken(ctx, storage.NewToken{User: "alice", Name: "ci2", Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	hold := holdFeed(t, dsn)
	if err := s.DeleteToken(ctx, "alice", tok.ID); err != nil {
		t.Fatalf("deleting while the feed is held: %v", err)
	}
	if _, r := s.Verifier().Verify(secret, nil); r != verifier.ResultUnknown {
		t.Fatalf("the node that deleted the token verifies it as %v while its feed is held", r)
	}
	if _, err := s.UpdateUser(ctx, "alice", storage.UserPatch{Disabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if _, r := s.Verifier().Verify(secret2, nil); r != verifier.ResultDisabled {
		t.Fatalf("a token of a user disabled while the feed is held verifies as %v", r)
	}

	// Once the feed is back it reads the same changes from the log, and
	// the node agrees with them.
	if err := hold.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateUser(ctx, "alice", storage.UserPatch{Disabled: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if _, r := s.Verifier().Verify(secret2, nil); r != verifier.ResultOK {
		t.Fatalf("after the feed is back, the enabled user's token verifies as %v", r)
	}
	if _, r := s.Verifier().Verify(secret, nil); r != verifier.ResultUnknown {
		t.Fatalf("after the feed is back, the deleted token verifies as %v", r)
	}
}

// A node that reloads everything because the changes it missed were
// pruned tells its settings watchers (the alert loop re-checks at once),
// as it would have had it read the change itself.
//
// The change is written as the maintenance leaves a long-missed one: the
// setting is in the table, its change row is gone, and pruned_below is
// past its transaction. So the node cannot have read the change itself,
// whenever its polls run. (Holding the feed with a table lock while the
// change is pruned does not ensure that: a poll that is waiting for the
// lock has already taken its snapshot, and may read the change row that
// the prune deletes after that snapshot.)
func TestReloadTellsTheSettingsWatchers(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	b := nodeWith(t, dsn, 5*time.Second) // long enough for its reload on a busy machine
	var told atomic.Int32
	b.OnSettingsChange(func() { told.Add(1) })

	// pruned_below is one past the writing transaction, so it is above
	// every position B had before that transaction committed.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `INSERT INTO api_tokens_kv (key, value) VALUES ('s/EnableUserTokenNotification', '30');
		UPDATE api_tokens_feed SET pruned_below = pg_current_xact_id()::text::bigint + 1`); err != nil {
		t.Fatal(err)
	}

	var st kv.SyncStatus
	for start := time.Now(); st.FullReloads == 0 || told.Load() == 0; st, _ = b.Alerting().SyncStatus() {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("B did not reload and tell its settings watchers within 10s: %+v, told %d times", st, told.Load())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if v, err := b.GetSetting(context.Background(), "EnableUserTokenNotification"); err != nil || v != "30" {
		t.Fatalf("after the reload B reads the setting as %q, %v", v, err)
	}
}

// max_staleness can be set on an open store (a config reload keeps it
// open): a node whose feed is held starts refusing tokens with
// ResultUnavailable once it is set, and stops when it is removed.
func TestMaxStalenessChangesOnAnOpenStore(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	s := nodeWith(t, dsn, time.Second)
	ctx := ctxAs("root")
	if _, err := s.CreateUser(ctx, storage.NewUser{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	secret, _, err := s.CreateToken(ctx, storage.NewToken{User: "alice", Name: "ci", Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	holdFeed(t, dsn)
	time.Sleep(2 * time.Second) // longer than the staleness about to be set
	if _, r := s.Verifier().Verify(secret, nil); r != verifier.ResultOK {
		t.Fatalf("without max staleness, a held feed's node verifies as %v", r)
	}
	s.SetMaxStaleness(time.Second)
	eventually(t, 2*time.Second, "the node refuses with max staleness set", func() bool { _, r := s.Verifier().Verify(secret, nil); return r == verifier.ResultUnavailable })
	s.SetMaxStaleness(0)
	eventually(t, 2*time.Second, "the node verifies again without it", func() bool { _, r := s.Verifier().Verify(secret, nil); return r == verifier.ResultOK })
}
