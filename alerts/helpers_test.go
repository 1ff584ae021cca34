package alerts

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testtools.FinishPostgres()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// t0 is when the test world starts; tokens created then expire a year later.
var t0 = time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)

const year = 365 * day

// world is a real Badger store in a temp dir, a fake clock, a real SMTP
// server on loopback and the Shared that every loop of the test uses.
type world struct {
	t      *testing.T
	ctx    context.Context
	clock  *testtools.FakeClock
	dir    string
	store  *storage.Store
	shared *Shared
	smtp   *smtpServer
	mailer *Mailer
	log    *zap.Logger
	// maxDigest is the loops' Config.MaxDigestTokens; 0: the default.
	maxDigest int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{
		t:     t,
		ctx:   context.Background(),
		clock: testtools.NewFakeClock(t0),
		dir:   t.TempDir(),
		log:   zaptest.NewLogger(t),
	}
	w.smtp = startSMTP(t, smtpOptions{})
	w.mailer = mailerFor(t, w.smtp, EncryptionNone, "", "")
	w.open()
	t.Cleanup(func() { w.store.Close() })
	w.createUser("admin", true)
	w.createUser("ci-bot", false)
	return w
}

// open (re)opens the store and makes its Shared, as a start of the
// gateway would.
func (w *world) open() {
	w.t.Helper()
	db, err := badgerstore.Open(w.dir, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	s, err := storage.Open(context.Background(), db, storage.Options{Clock: w.clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		w.t.Fatal(err)
	}
	w.store = s
	if w.shared, err = NewShared(w.ctx, s.Alerting()); err != nil {
		w.t.Fatal(err)
	}
}

// restart closes the store and opens it again with a fresh Shared, as a
// process restart does.
func (w *world) restart() {
	w.t.Helper()
	if err := w.store.Close(); err != nil {
		w.t.Fatal(err)
	}
	w.open()
}

func (w *world) createUser(name string, admin bool) {
	w.t.Helper()
	_, err := w.store.CreateUser(w.ctx, storage.NewUser{Username: name, Email: name + "@example.com", Password: "password-" + name, Admin: admin})
	if err != nil {
		w.t.Fatal(err)
	}
}

// token creates a permanent token for user that expires after lifetime.
func (w *world) token(user, name string, lifetime time.Duration) storage.Token {
	w.t.Helper()
	_, tok, err := w.store.CreateToken(w.ctx, storage.NewToken{
		User: user, Name: name, Kind: storage.Permanent, ExpiresAt: w.clock.Now().Add(lifetime), CreatedBy: "admin",
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

func (w *world) set(key, value string) {
	w.t.Helper()
	if _, err := w.store.PutSetting(w.ctx, key, value); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) unset(key string) {
	w.t.Helper()
	if err := w.store.DeleteSetting(w.ctx, key); err != nil {
		w.t.Fatal(err)
	}
}

// loop returns a new, not started Loop on the world's store and Shared.
func (w *world) loop() *Loop {
	return NewLoop(Config{Clock: w.clock, Logger: w.log, Interval: time.Hour, Mailer: w.mailer, Shared: w.shared, MaxDigestTokens: w.maxDigest})
}

// pass runs one pass of a fresh loop and fails the test on error.
func (w *world) pass() {
	w.t.Helper()
	if err := w.loop().RunOnce(w.ctx); err != nil {
		w.t.Fatalf("pass: %v", err)
	}
}

// at moves the fake clock to d before tok expires.
func (w *world) at(tok storage.Token, beforeExpiry time.Duration) {
	w.clock.Set(tok.ExpiresAt.Add(-beforeExpiry))
}

func (w *world) notifiedDays(id string) int {
	w.t.Helper()
	states, err := w.store.Alerting().GetAlertStates(w.ctx, []string{id})
	if err != nil {
		w.t.Fatal(err)
	}
	return states[id].NotifiedDays
}

// faultOf returns the fault of a token from the last pass.
func (w *world) faultOf(id string) (storage.Fault, bool) {
	for _, f := range w.shared.Faults() {
		if f.TokenID == id {
			return f, true
		}
	}
	return storage.Fault{}, false
}

// waitFor polls cond until it holds; it is for goroutine hand-offs, not
// for time passing (the clock is fake).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
