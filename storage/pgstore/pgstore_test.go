package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// What only a shared database has: several nodes, a change feed between
// them, and a server that can go away. The rules themselves are tested on
// PostgreSQL by the conformance suite in package storage.

func TestMain(m *testing.M) {
	code := m.Run()
	testtools.FinishPostgres()
	os.Exit(code)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// node opens a store on dsn, as one Caddy of a fleet would.
func node(t testing.TB, dsn string, clock storage.Clock) *storage.Store {
	t.Helper()
	s, err := openStore(context.Background(), dsn, pgstore.Options{},
		storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("opening a node: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxAs(actor string) context.Context {
	return storage.WithActor(context.Background(), actor, "192.0.2.7")
}

// eventually waits up to limit for cond, polling.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// setup makes two nodes on one new database, a user and a permanent
// token of theirs, created on the first node.
func setup(t *testing.T) (a, b *storage.Store, sec string, tok storage.Token, dsn string) {
	t.Helper()
	dsn = testtools.PostgresDatabase(t)
	clock := testtools.NewFakeClock(t0)
	a, b = node(t, dsn, clock), node(t, dsn, clock)
	if _, err := a.CreateUser(ctxAs("root"), storage.NewUser{Username: "alice", Password: "pw-alice"}); err != nil {
		t.Fatal(err)
	}
	sec, tok, err := a.CreateToken(ctxAs("root"), storage.NewToken{User: "alice", Name: "ci", Kind: storage.Permanent, ExpiresAt: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return a, b, sec, tok, dsn
}

// Every kind of refusal made on one node is refused on the other within
// a second, and a created token passes on the other as soon as the
// creating call returned.
func TestChangesReachTheOtherNode(t *testing.T) {
	a, b, sec, tok, _ := setup(t)
	ctx := ctxAs("root")
	eventually(t, time.Second, "a token created on A passes on B", func() bool { _, r := b.Verifier().Verify(sec, nil); return r == verifier.ResultOK })

	if err := a.DeleteToken(ctx, "alice", tok.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a token deleted on A is refused on B", func() bool { _, r := b.Verifier().Verify(sec, nil); return r == verifier.ResultUnknown })

	sec2, _, err := b.CreateToken(ctx, storage.NewToken{User: "alice", Name: "ci2", Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateUser(ctx, "alice", storage.UserPatch{Disabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a user disabled on A is refused on B", func() bool { _, r := b.Verifier().Verify(sec2, nil); return r == verifier.ResultDisabled })
	if _, err := b.UpdateUser(ctx, "alice", storage.UserPatch{Disabled: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a user enabled on B passes on A", func() bool { _, r := a.Verifier().Verify(sec2, nil); return r == verifier.ResultOK })
	if err := b.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a user deleted on B is refused on A", func() bool { _, r := a.Verifier().Verify(sec2, nil); return r == verifier.ResultUnknown })
}

func ptr[T any](v T) *T { return &v }

// A transaction that took its id before others but commits after them is
// applied all the same: positions are snapshots, not sequence numbers.
// The late transaction here is written by hand, as another node's slow
// deletion would be: the token's rows go, with the change row, in one
// transaction that stays open while other writes commit.
func TestLateCommitIsNotSkipped(t *testing.T) {
	a, b, sec, tok, dsn := setup(t)
	ctx := context.Background()
	eventually(t, time.Second, "B has the token", func() bool { _, r := b.Verifier().Verify(sec, nil); return r == verifier.ResultOK })

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	late, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hash := secret.HashOf(sec)
	recordKey := []byte("t/" + tok.ID) // the key of the token's record (storage/keys.go)
	if _, err := late.Exec(ctx, `DELETE FROM api_tokens_kv WHERE key = $1`, recordKey); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Exec(ctx, `INSERT INTO api_tokens_changes (key, hint) VALUES ($1, $2)`, recordKey, hash[:]); err != nil {
		t.Fatal(err)
	}
	// Later transactions commit first; B moves past them.
	for i := range 5 {
		if _, err := a.PutSetting(ctxAs("root"), storage.SettingNotificationDays, fmt.Sprint(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // several of B's polls
	if _, r := b.Verifier().Verify(sec, nil); r != verifier.ResultOK {
		t.Fatalf("the token is refused before the late transaction committed: %v", r)
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "B applies the late commit", func() bool { _, r := b.Verifier().Verify(sec, nil); return r == verifier.ResultUnknown })
}

// A transaction left open (an operator's psql session, a long batch job)
// holds back the oldest transaction id, but not the feed: changes that
// commit meanwhile still arrive within a second.
func TestOpenTransactionDoesNotStallTheFeed(t *testing.T) {
	a, b, sec, tok, dsn := setup(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	idle, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Rollback(ctx)
	if _, err := idle.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // takes an id and keeps it
		t.Fatal(err)
	}
	if err := a.DeleteToken(ctxAs("root"), "alice", tok.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a deletion reaches B past an open transaction", func() bool { _, r := b.Verifier().Verify(sec, nil); return r == verifier.ResultUnknown })
}

// Killing every connection of the fleet loses no change: the nodes
// reconnect, subscribe, catch up, and every deletion made around the
// outage is refused on every node.
func TestKilledConnectionsLoseNoChange(t *testing.T) {
	a, b, _, _, dsn := setup(t)
	ctx := ctxAs("root")
	var secrets []string
	var ids []string
	for i := range 40 {
		sec, tk, err := a.CreateToken(ctx, storage.NewToken{User: "alice", Name: fmt.Sprintf("t%d", i), Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		secrets, ids = append(secrets, sec), append(ids, tk.ID)
	}
	admin, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	dbName := admin.Config().Database
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 5 {
			time.Sleep(30 * time.Millisecond)
			admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, dbName)
		}
	})
	deleted := map[int]bool{}
	for i, id := range ids {
		if err := a.DeleteToken(ctx, "alice", id); err == nil {
			deleted[i] = true
		} else if !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("deleting during the kills: %v", err)
		}
	}
	wg.Wait()
	for i := range ids { // whatever failed is retried, as a client would
		if !deleted[i] {
			if err := a.DeleteToken(ctx, "alice", ids[i]); err != nil && !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("retrying a deletion: %v", err)
			}
		}
	}
	for _, n := range []*storage.Store{a, b} {
		eventually(t, 5*time.Second, "every deletion is refused on every node", func() bool {
			for _, sec := range secrets {
				if _, r := n.Verifier().Verify(sec, nil); r != verifier.ResultUnknown {
					return false
				}
			}
			return true
		})
	}
}

// Nodes starting at once on an empty database apply the schema once and
// create one bootstrap admin between them.
func TestNodesStartingTogetherMakeOneAdmin(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	const n = 4
	stores := make([]*storage.Store, n)
	created := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			stores[i] = node(t, dsn, testtools.NewFakeClock(t0))
			var err error
			created[i], err = stores[i].EnsureAdmin(context.Background(), storage.NewUser{Username: fmt.Sprintf("admin%d", i), Password: "pw"})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	admins := 0
	for _, c := range created {
		if c {
			admins++
		}
	}
	users, _, err := stores[0].ListUsersPage(context.Background(), "", 10)
	if err != nil || admins != 1 || len(users) != 1 {
		t.Fatalf("%d nodes starting together created %d admins; users %+v, %v", n, admins, users, err)
	}
}

// A node refuses a schema newer than it knows, with a message that says
// what to do.
func TestNewerSchemaIsRefused(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	node(t, dsn, storage.SystemClock{})
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE api_tokens_schema SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	_, err = pgstore.Open(context.Background(), dsn, pgstore.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this Caddy knows") || !strings.Contains(err.Error(), "upgrade Caddy") {
		t.Fatalf("Open on a newer schema = %v", err)
	}
}

// A bad dsn and an unreachable server each give one clear error that
// never shows the password.
func TestBadDSNAndUnreachableServer(t *testing.T) {
	const password = "s3cret-Pa55word"
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://app:" + password + "@127.0.0.1:99999/db", "not a valid connection string"},
		{"host=127.0.0.1 port=nope password=" + password, "not a valid connection string"},
		{fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/db?connect_timeout=2", password, testtools.FreePort(t)), "cannot connect to PostgreSQL at 127.0.0.1"},
		{"postgres://app:" + password + "@127.0.0.1/db?pool_max_conns=2", "needs at least 3 connections"},
	} {
		start := time.Now()
		_, err := pgstore.Open(context.Background(), tc.dsn, pgstore.Options{Timeout: 2 * time.Second})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), password) {
			t.Errorf("Open(%q) = %v; want an error mentioning %q without the password", tc.dsn, err, tc.want)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("Open(%q) took %s", tc.dsn, time.Since(start))
		}
	}
}

// A token created on one node passes on another as soon as the creating
// call returned, before the other node's feed has brought it: the miss
// makes that node catch up. More tokens than the catch-up rate allows in
// a second: the misses beyond it wait for the feed's next read.
func TestCreatedTokenPassesAtOnceElsewhere(t *testing.T) {
	a, b, _, _, _ := setup(t)
	for i := range 60 {
		sec, _, err := a.CreateToken(ctxAs("root"), storage.NewToken{User: "alice", Name: fmt.Sprintf("now-%d", i), Kind: storage.Permanent, ExpiresAt: t0.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if _, r := b.Verifier().Verify(sec, nil); r != verifier.ResultOK {
			t.Fatalf("token %d created on A verifies on B right after as %v", i, r)
		}
	}
}

// openStore opens the rules over the database in dsn, as the api_tokens
// app does.
func openStore(ctx context.Context, dsn string, opts pgstore.Options, storeOpts storage.Options) (*storage.Store, error) {
	b, err := pgstore.Open(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	return storage.Open(ctx, b, storeOpts)
}
