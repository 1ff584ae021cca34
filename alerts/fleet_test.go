package alerts

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
)

// fleetNode is one gateway of a fleet on PostgreSQL: its store, its
// Shared and its loop.
type fleetNode struct {
	store  *storage.Store
	shared *Shared
	loop   *Loop
}

func newFleetNode(t *testing.T, dsn string, clock storage.Clock, mailer *Mailer) *fleetNode {
	t.Helper()
	ctx := context.Background()
	db, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(ctx, db, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sh, err := NewShared(ctx, st.Alerting())
	if err != nil {
		t.Fatal(err)
	}
	return &fleetNode{store: st, shared: sh,
		loop: NewLoop(Config{Clock: clock, Logger: zaptest.NewLogger(t), Interval: time.Hour, Mailer: mailer, Shared: sh})}
}

// In a fleet one node at a time (the holder of the alert lease) sends the
// emails; every node shows the same faults; once the leader stops
// renewing its lease another node takes over, sends what is due since,
// and never what was sent already; the old leader is refused.
func TestFleetOneNodeSendsTheEmailsAndFailsOver(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	clock := testtools.NewFakeClock(t0)
	smtp := startSMTP(t, smtpOptions{})
	mailer := mailerFor(t, smtp, EncryptionNone, "", "")
	a, b := newFleetNode(t, dsn, clock, mailer), newFleetNode(t, dsn, clock, mailer)
	ctx := context.Background()
	if _, err := a.store.CreateUser(ctx, storage.NewUser{Username: "ci-bot", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	first, err := tokenOn(a.store, clock, "first", 5*day)
	if err != nil {
		t.Fatal(err)
	}
	for key, val := range map[string]string{storage.SettingNotificationDays: "7", storage.SettingNotificationEmails: ops} {
		if _, err := b.store.PutSetting(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}

	if err := a.loop.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.loop.RunOnce(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("the second node's pass = %v; want ErrNotLeader", err)
	}
	if n := len(smtp.Messages()); n != 1 {
		t.Fatalf("%d emails from two nodes, want 1", n)
	}
	waitFor(t, "the same faults on both nodes", func() bool {
		return len(a.shared.Faults()) == 1 && reflect.DeepEqual(a.shared.Faults(), b.shared.Faults())
	})
	if !a.shared.Leading() || b.shared.Leading() {
		t.Fatalf("leading: a %v, b %v; want a only", a.shared.Leading(), b.shared.Leading())
	}

	// The leader goes quiet (it stops renewing); past the lease, B leads.
	second, err := tokenOn(b.store, clock, "second", 3*day)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(leaseTTL + time.Second)
	if err := b.loop.RunOnce(ctx); err != nil {
		t.Fatalf("the new leader's pass: %v", err)
	}
	msgs := smtp.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d emails after the fail-over, want 2", len(msgs))
	}
	if body := msgs[1].Body(t); !containsAll(body, second.ID) || containsAll(body, first.ID) {
		t.Fatalf("the new leader's email is not only about the new token:\n%s", body)
	}
	if err := a.loop.RunOnce(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("the old leader's pass = %v; want ErrNotLeader", err)
	}
	if a.shared.Leading() || !b.shared.Leading() {
		t.Fatalf("leading: a %v, b %v; want b only", a.shared.Leading(), b.shared.Leading())
	}
	waitFor(t, "both faults on both nodes", func() bool {
		return len(a.shared.Faults()) == 2 && reflect.DeepEqual(a.shared.Faults(), b.shared.Faults())
	})
}

func tokenOn(st *storage.Store, clock storage.Clock, name string, lifetime time.Duration) (storage.Token, error) {
	_, tok, err := st.CreateToken(context.Background(), storage.NewToken{User: "ci-bot", Name: name, Kind: storage.Permanent,
		ExpiresAt: clock.Now().Add(lifetime), CreatedBy: "admin"})
	return tok, err
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
