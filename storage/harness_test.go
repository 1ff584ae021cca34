package storage_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
)

// The tests of this package are the conformance suite: every one runs
// against every backend, through forEachBackend, so the rules are proven
// on each database the product runs on.
var backends = []string{"badger", "postgres"}

func TestMain(m *testing.M) {
	code := m.Run()
	testtools.FinishPostgres()
	os.Exit(code)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testDB is one empty database on one backend, made for a test. Every
// store opened on it is a new handle on the same data: the Badger
// directory reopened, or another node on the same PostgreSQL database.
type testDB struct {
	Kind string `json:"kind"`
	Dir  string `json:"dir,omitempty"` // badger
	DSN  string `json:"dsn,omitempty"` // postgres
	// batchSize is the Options.BatchSize of the stores opened; 0: the
	// default.
	batchSize int
}

// forEachBackend runs fn as a subtest per backend, each with a database of
// its own.
func forEachBackend(t *testing.T, fn func(t *testing.T, db *testDB)) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) { fn(t, newTestDB(t, kind)) })
	}
}

func newTestDB(t testing.TB, kind string) *testDB {
	t.Helper()
	switch kind {
	case "badger":
		return &testDB{Kind: kind, Dir: t.TempDir()}
	case "postgres":
		return &testDB{Kind: kind, DSN: testtools.PostgresDatabase(t)}
	}
	t.Fatalf("unknown backend %q", kind)
	return nil
}

// backend opens a handle on the database.
func (db *testDB) backend(t testing.TB, log *zap.Logger) kv.Backend {
	t.Helper()
	var b kv.Backend
	var err error
	switch db.Kind {
	case "badger":
		b, err = badgerstore.Open(db.Dir, log)
	case "postgres":
		b, err = pgstore.Open(context.Background(), db.DSN, pgstore.Options{Logger: log})
	}
	if err != nil {
		t.Fatalf("opening %s: %v", db.Kind, err)
	}
	return b
}

// open opens a store with a fast bcrypt and a flush interval long enough
// that only Close flushes, and closes it when the test ends.
func (db *testDB) open(t testing.TB, clock Clock) *Store {
	t.Helper()
	return db.openWith(t, Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour, BatchSize: db.batchSize})
}

func (db *testDB) openWith(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), db.backend(t, opts.Logger), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newTestStore(t testing.TB, db *testDB) (*Store, *testtools.FakeClock) {
	t.Helper()
	clock := testtools.NewFakeClock(t0)
	return db.open(t, clock), clock
}

// ctxAs is a context whose mutations are audited as done by actor.
func ctxAs(actor string) context.Context {
	return WithActor(context.Background(), actor, "192.0.2.7")
}

func mustCreateUser(t testing.TB, s *Store, name string, admin bool) User {
	t.Helper()
	u, err := s.CreateUser(ctxAs("root"), NewUser{Username: name, Email: name + "@example.com", Password: "pw-" + name, Admin: admin})
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", name, err)
	}
	return u
}

func mustToken(t testing.TB, s *Store, user, name string, kind TokenKind, exp time.Time) (string, Token, error) {
	t.Helper()
	sec, meta, err := s.CreateToken(ctxAs("root"), NewToken{User: user, Name: name, Kind: kind, ExpiresAt: exp})
	if err != nil {
		t.Fatalf("CreateToken(%s, %q): %v", user, name, err)
	}
	return sec, meta, err
}

func wantErr(t testing.TB, err, target error, mentions string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v; want %v", err, target)
	}
	if !strings.Contains(err.Error(), mentions) {
		t.Fatalf("error %q does not mention %q", err, mentions)
	}
}

func ptr[T any](v T) *T { return &v }

// smallBatches makes the stores opened on db from now on handle one key
// per batched transaction, so a few tokens take several.
func smallBatches(db *testDB) { db.batchSize = 1 }

// rawView reads the store's backend directly, for tests that check what
// is stored rather than what the rules answer.
func rawView(t testing.TB, s *Store, fn func(r kv.Reader) error) {
	t.Helper()
	if err := s.Backend().View(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// rawUpdate writes to the store's backend directly, bypassing the rules,
// to make the states a crash or an old version leaves behind.
func rawUpdate(t testing.TB, s *Store, fn func(w kv.Writer) error) {
	t.Helper()
	if err := s.Backend().Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// createUserTokens creates n permanent tokens for user in batches, with
// expiries spread over a year from now.
func createUserTokens(tb testing.TB, s *Store, now time.Time, user string, n int) []string {
	tb.Helper()
	secrets := make([]string, 0, n)
	batch := make([]NewToken, 0, MaxBatch)
	for i := 0; i < n; i += MaxBatch {
		batch = batch[:0]
		for j := i; j < min(i+MaxBatch, n); j++ {
			exp := now.Add(time.Duration(1+j*7919%365)*24*time.Hour + time.Duration(j)*time.Second)
			batch = append(batch, NewToken{User: user, Name: fmt.Sprintf("token-%d", j), Kind: Permanent, ExpiresAt: exp})
		}
		sec, _, err := s.CreateTokens(ctxAs("root"), batch)
		if err != nil {
			tb.Fatalf("CreateTokens: %v", err)
		}
		secrets = append(secrets, sec...)
	}
	return secrets
}

// storedLastUse reads the last use flushed to storage for a token, in
// unix nanoseconds; 0 if none.
func storedLastUse(t testing.TB, s *Store, id string) int64 {
	t.Helper()
	var used int64
	rawView(t, s, func(r kv.Reader) error {
		v, found, err := r.Get(LastUsedKey(id))
		if found && len(v) == 8 {
			used = int64(binary.BigEndian.Uint64(v))
		}
		return err
	})
	return used
}

// alertLease takes the alert lease for the test, as the alert loop does
// before it writes alert states.
func alertLease(t testing.TB, s *Store) Lease {
	t.Helper()
	l, ok, err := s.Alerting().AcquireLease(context.Background(), "alerts", "test", time.Hour)
	if err != nil || !ok {
		t.Fatalf("AcquireLease = %+v, %v, %v", l, ok, err)
	}
	return l
}
