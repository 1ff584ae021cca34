package alerts

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitokens/caddy-api-tokens/storage"
)

const ops = "ops@example.com"

func TestSingleThresholdRaisesFaultAndEmailsOnce(t *testing.T) {
	w := newWorld(t)
	w.set(storage.SettingNotificationDays, "30")
	w.set(storage.SettingNotificationEmails, ops)
	tok := w.token("ci-bot", "deploy", year)

	w.pass()
	if f := w.shared.Faults(); len(f) != 0 {
		t.Fatalf("a fresh token raised faults: %+v", f)
	}
	w.at(tok, 30*day+time.Minute)
	w.pass()
	if len(w.shared.Faults()) != 0 || len(w.smtp.Messages()) != 0 {
		t.Fatal("fault or email a minute before the 30-day threshold")
	}

	w.at(tok, 30*day)
	w.pass()
	f, ok := w.faultOf(tok.ID)
	if !ok {
		t.Fatal("no fault at 30 days before expiry")
	}
	want := storage.Fault{TokenID: tok.ID, User: "ci-bot", TokenName: "deploy", ExpiresAt: tok.ExpiresAt,
		DaysLeft: 30, State: storage.FaultExpiring, RaisedAt: w.clock.Now()}
	if f != want {
		t.Errorf("fault = %+v\nwant    %+v", f, want)
	}
	msgs := w.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	if strings.Join(msgs[0].To, ",") != ops {
		t.Errorf("email went to %v", msgs[0].To)
	}
	body := msgs[0].Body(t)
	for _, s := range []string{"ci-bot", `"deploy"`, tok.ID, tok.ExpiresAt.Format(dateFormat), "30 days left",
		"POST /users/ci-bot/tokens", "DELETE /users/ci-bot/tokens/" + tok.ID} {
		if !strings.Contains(body, s) {
			t.Errorf("email body lacks %q:\n%s", s, body)
		}
	}
	if got := msgs[0].Subject(t); got != "[API tokens] 1 permanent token expires soon" {
		t.Errorf("subject %q", got)
	}
	if w.notifiedDays(tok.ID) != 30 {
		t.Errorf("notified_days = %d, want 30", w.notifiedDays(tok.ID))
	}

	// Later passes, down to the last day, send nothing more; the fault
	// keeps the time it was first raised.
	raised := w.clock.Now()
	for _, left := range []time.Duration{29 * day, 7 * day, day, time.Hour} {
		w.at(tok, left)
		w.pass()
	}
	if n := len(w.smtp.Messages()); n != 1 {
		t.Errorf("%d emails after later passes, want still 1", n)
	}
	if f, _ := w.faultOf(tok.ID); f.RaisedAt != raised || f.DaysLeft != 0 {
		t.Errorf("last-hour fault = %+v, want raised_at %s and 0 days left", f, raised)
	}
}

// 30;7;1 with a token first seen at 5 days: one email for 7 (30 counts as
// sent), then one for 1.
func TestThresholdListFirstSeenInsideSeveral(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "nightly", year)
	w.at(tok, 5*day)
	w.set(storage.SettingNotificationDays, "30;7;1")
	w.set(storage.SettingNotificationEmails, ops)

	w.pass()
	msgs := w.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails at 5 days, want 1", len(msgs))
	}
	if body := msgs[0].Body(t); !strings.Contains(body, "5 days left (7-day warning)") {
		t.Errorf("first email is not the 7-day warning:\n%s", body)
	}
	if w.notifiedDays(tok.ID) != 7 {
		t.Errorf("notified_days = %d, want 7", w.notifiedDays(tok.ID))
	}
	w.at(tok, 2*day)
	w.pass()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails at 2 days, want still 1", n)
	}

	w.at(tok, day)
	w.pass()
	w.pass()
	msgs = w.smtp.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d emails at 1 day, want 2", len(msgs))
	}
	if body := msgs[1].Body(t); !strings.Contains(body, "1 day left (1-day warning)") {
		t.Errorf("second email is not the 1-day warning:\n%s", body)
	}

	// Expired and not deleted: the fault stays, as expired; no new email.
	w.clock.Set(tok.ExpiresAt.Add(time.Hour))
	w.pass()
	f, ok := w.faultOf(tok.ID)
	if !ok || f.State != storage.FaultExpired || f.DaysLeft != 0 {
		t.Errorf("expired token's fault = %+v (found %v), want state expired", f, ok)
	}
	if n := len(w.smtp.Messages()); n != 2 {
		t.Errorf("%d emails after expiry, want still 2", n)
	}
}

func TestRaisingThresholdDoesNotRenotify(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", year)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)
	w.at(tok, 6*day)
	w.pass()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}

	w.set(storage.SettingNotificationDays, "30")
	w.pass()
	w.set(storage.SettingNotificationDays, "30;14")
	w.pass()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("raising the threshold re-notified: %d emails", n)
	}
	// A threshold tighter than the one already warned at still counts.
	w.set(storage.SettingNotificationDays, "30;3")
	w.at(tok, 3*day)
	w.pass()
	if n := len(w.smtp.Messages()); n != 2 {
		t.Fatalf("%d emails at the new 3-day threshold, want 2", n)
	}
}

func TestDigestListsEveryTokenOfThePass(t *testing.T) {
	w := newWorld(t)
	w.createUser("deployer", false)
	a := w.token("ci-bot", "deploy", 20*day)
	b := w.token("deployer", "backup", 10*day)
	w.token("deployer", "far-away", year)
	w.set(storage.SettingNotificationDays, "30")
	w.set(storage.SettingNotificationEmails, ops)
	w.pass()

	msgs := w.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want one digest", len(msgs))
	}
	body := msgs[0].Body(t)
	for _, tok := range []storage.Token{a, b} {
		if !strings.Contains(body, tok.ID) {
			t.Errorf("digest lacks token %s", tok.ID)
		}
	}
	if strings.Contains(body, "far-away") {
		t.Error("digest lists a token outside the window")
	}
	if got := msgs[0].Subject(t); got != "[API tokens] 2 permanent tokens expire soon" {
		t.Errorf("subject %q", got)
	}
	if f := w.shared.Faults(); len(f) != 2 || f[0].TokenID != b.ID {
		t.Errorf("faults = %+v, want two, soonest expiry first", f)
	}
}

func TestRestartSendsNothingNew(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 20*day)
	w.set(storage.SettingNotificationDays, "30;7")
	w.set(storage.SettingNotificationEmails, ops)
	w.pass()
	raised := w.clock.Now()

	w.restart()
	w.clock.Advance(time.Hour)
	w.pass()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails after a restart, want 1", n)
	}
	if f, _ := w.faultOf(tok.ID); !f.RaisedAt.Equal(raised) {
		t.Errorf("raised_at after restart = %s, want %s", f.RaisedAt, raised)
	}
}

// During a reload the old and the new config's loops overlap on one store
// and one Shared: the digest still goes out once.
func TestOverlappingLoopsSendOnce(t *testing.T) {
	w := newWorld(t)
	for _, name := range []string{"a", "b", "c"} {
		w.token("ci-bot", name, 5*day)
	}
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)

	old, next := w.loop(), w.loop()
	var wg sync.WaitGroup
	for range 4 {
		for _, l := range []*Loop{old, next} {
			wg.Go(func() {
				if err := l.RunOnce(w.ctx); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails from overlapping loops, want 1", n)
	}
	if w.shared.EmailsSent() != 1 {
		t.Errorf("sent counter = %d, want 1", w.shared.EmailsSent())
	}
}

// Started loops (as Caddy runs them during a reload) also send once.
func TestStartedLoopsOverlappingSendOnce(t *testing.T) {
	w := newWorld(t)
	w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)

	old, next := w.loop(), w.loop()
	old.Start()
	next.Start()
	waitFor(t, "a finished pass of each loop", func() bool { return old.passes.Load() > 0 && next.passes.Load() > 0 })
	old.Stop()
	w.shared.Trigger() // reaches the loop still running
	waitFor(t, "a second pass of the new loop", func() bool { return next.passes.Load() > 1 })
	next.Stop()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

func TestSMTPOutageRetriesWithBackoffAndSendsOnce(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 20*day)
	w.set(storage.SettingNotificationDays, "30")
	w.set(storage.SettingNotificationEmails, ops)
	w.smtp.failWith(451)

	l := w.loop()
	err := l.RunOnce(w.ctx)
	if err == nil || !strings.Contains(err.Error(), "451") {
		t.Fatalf("pass during an outage = %v, want the 451 error", err)
	}
	// Faults work while mail is down.
	if _, ok := w.faultOf(tok.ID); !ok {
		t.Fatal("no fault during the SMTP outage")
	}
	// Within the backoff, no attempt is made.
	w.clock.Advance(retryBase - time.Second)
	if err := l.RunOnce(w.ctx); err != nil {
		t.Fatalf("pass within the backoff: %v", err)
	}
	if w.shared.EmailsFailed() != 1 {
		t.Fatalf("failed = %d after one attempt, want 1", w.shared.EmailsFailed())
	}
	// Each further failure doubles the wait.
	for i, wait := range []time.Duration{retryBase, 2 * retryBase, 4 * retryBase} {
		w.clock.Advance(wait)
		if err := w.loop().RunOnce(w.ctx); err == nil { // a reload does not reset the backoff
			t.Fatalf("attempt %d succeeded during the outage", i+2)
		}
	}
	if w.shared.EmailsFailed() != 4 || w.notifiedDays(tok.ID) != 0 {
		t.Fatalf("failed = %d, notified_days = %d; want 4 and 0", w.shared.EmailsFailed(), w.notifiedDays(tok.ID))
	}

	w.smtp.failWith(0)
	w.clock.Advance(time.Minute) // the next attempt is 80s after the last
	w.pass()
	if len(w.smtp.Messages()) != 0 {
		t.Fatal("sent before the backoff ended")
	}
	w.clock.Advance(20 * time.Second)
	w.pass()
	w.pass()
	if n := len(w.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails after the outage, want exactly 1", n)
	}
	if w.shared.EmailsSent() != 1 || w.shared.EmailsFailed() != 4 || w.notifiedDays(tok.ID) != 30 {
		t.Errorf("sent %d, failed %d, notified_days %d; want 1, 4, 30",
			w.shared.EmailsSent(), w.shared.EmailsFailed(), w.notifiedDays(tok.ID))
	}
}

func TestRetryDelayDoublesUpToTheCap(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     []time.Duration
	}{
		{30 * time.Second, []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}},
		{5 * time.Minute, []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}},
	} {
		for i, want := range tc.want {
			if got := retryDelay(i+1, tc.interval); got != want {
				t.Errorf("interval %s, failure %d: delay %s, want %s", tc.interval, i+1, got, want)
			}
		}
	}
	if got := retryDelay(1000, time.Hour); got != time.Hour {
		t.Errorf("after many failures the delay is %s, want the 1h cap", got)
	}
}

// A new SMTP config (a reload with a fixed password) is tried at once.
// A config reload makes a new Mailer with the same smtp block: the
// backoff after a failure holds across it. A changed smtp block (another
// server) is tried at once.
func TestBackoffSurvivesReloadButNotNewServer(t *testing.T) {
	w := newWorld(t)
	w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)
	w.smtp.failWith(554)
	if err := w.loop().RunOnce(w.ctx); err == nil {
		t.Fatal("pass succeeded with a failing server")
	}
	w.smtp.failWith(0)
	w.mailer = mailerFor(t, w.smtp, EncryptionNone, "", "") // a reload: same settings, new Mailer
	w.pass()
	if n := len(w.smtp.Messages()); n != 0 {
		t.Fatalf("%d emails right after a reload; the backoff should hold", n)
	}
	other := startSMTP(t, smtpOptions{})
	w.mailer = mailerFor(t, other, EncryptionNone, "", "") // a new server
	w.pass()
	if n := len(other.Messages()); n != 1 {
		t.Fatalf("%d emails through the new server, want 1 at once", n)
	}
}

func TestNoEmailSettingStillRaisesFaultsAndMarksNothing(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "30;7")
	w.pass()
	if _, ok := w.faultOf(tok.ID); !ok {
		t.Fatal("no fault without an email setting")
	}
	if len(w.smtp.Messages()) != 0 || w.notifiedDays(tok.ID) != 0 {
		t.Fatal("an email was sent or marked without recipients")
	}
	// Adding recipients later sends the warning that is still due.
	w.set(storage.SettingNotificationEmails, ops)
	w.pass()
	if n := len(w.smtp.Messages()); n != 1 || w.notifiedDays(tok.ID) != 7 {
		t.Fatalf("after adding recipients: %d emails, notified_days %d; want 1 and 7", n, w.notifiedDays(tok.ID))
	}
}

func TestNoSMTPConfiguredStillRaisesFaultsAndMarksNothing(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)
	w.mailer = nil
	w.pass()
	if _, ok := w.faultOf(tok.ID); !ok {
		t.Fatal("no fault without SMTP")
	}
	if w.notifiedDays(tok.ID) != 0 || w.shared.EmailsFailed() != 0 {
		t.Fatal("marked as notified or counted as failed without an SMTP server")
	}
}

func TestNotificationsOffRaiseNoFaults(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 2*day)
	w.set(storage.SettingNotificationEmails, ops)
	w.pass()
	if len(w.shared.Faults()) != 0 || len(w.smtp.Messages()) != 0 {
		t.Fatal("faults or emails with EnableUserTokenNotification unset")
	}
	w.set(storage.SettingNotificationDays, "7")
	w.pass()
	w.unset(storage.SettingNotificationDays)
	w.pass()
	if len(w.shared.Faults()) != 0 {
		t.Fatal("faults stay after the setting is deleted")
	}
	if w.notifiedDays(tok.ID) != 7 {
		t.Errorf("notified_days = %d, want 7 from while it was on", w.notifiedDays(tok.ID))
	}
}

func TestEmailListEditsTakeEffect(t *testing.T) {
	w := newWorld(t)
	first := w.token("ci-bot", "first", 5*day)
	second := w.token("ci-bot", "second", 20*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, "old@example.com")
	w.pass()

	w.set(storage.SettingNotificationEmails, "new@example.com; sec@example.com")
	w.at(second, 7*day)
	w.pass()
	msgs := w.smtp.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d emails, want 2", len(msgs))
	}
	if got := strings.Join(msgs[0].To, ","); got != "old@example.com" || !strings.Contains(msgs[0].Body(t), first.ID) {
		t.Errorf("first email to %s", got)
	}
	if got := strings.Join(msgs[1].To, ","); got != "new@example.com,sec@example.com" {
		t.Errorf("second email to %s, want the edited list", got)
	}
	if body := msgs[1].Body(t); !strings.Contains(body, second.ID) || strings.Contains(body, first.ID) {
		t.Errorf("second email should list only the newly crossed token:\n%s", body)
	}
}

func TestRotatedAndDeletedTokensRaiseNoFault(t *testing.T) {
	w := newWorld(t)
	rotated := w.token("ci-bot", "rotated", 5*day)
	deleted := w.token("ci-bot", "deleted", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.pass()
	if len(w.shared.Faults()) != 2 {
		t.Fatalf("faults = %+v, want 2", w.shared.Faults())
	}
	if _, _, err := w.store.RotateToken(w.ctx, "ci-bot", rotated.ID, time.Hour, w.clock.Now().Add(year)); err != nil {
		t.Fatal(err)
	}
	if err := w.store.DeleteToken(w.ctx, "ci-bot", deleted.ID); err != nil {
		t.Fatal(err)
	}
	w.pass()
	if f := w.shared.Faults(); len(f) != 0 {
		t.Errorf("faults after rotate and delete = %+v, want none", f)
	}
}

func TestStartTriggerStop(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 5*day)
	l := w.loop()
	l.Start()
	l.Start() // a second Start is harmless
	waitFor(t, "the first pass", func() bool { return w.shared.current() != nil })
	if len(w.shared.Faults()) != 0 {
		t.Fatal("faults before the setting exists")
	}

	// A setting change triggers a pass at once (the interval is an hour),
	// through the Shared as the admin API does.
	w.set(storage.SettingNotificationDays, "7")
	w.shared.Trigger()
	waitFor(t, "the triggered pass", func() bool { _, ok := w.faultOf(tok.ID); return ok })
	l.Stop()
	l.Stop() // and so is a second Stop
	// goleak in TestMain checks that the goroutine is gone.
}

func TestStopBeforeStartAndRunOnceAfterCancel(t *testing.T) {
	w := newWorld(t)
	l := w.loop()
	l.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.RunOnce(ctx); err == nil {
		t.Fatal("RunOnce with a cancelled context succeeded")
	}
}

// Stop during a send to a server that never answers returns at once, and
// the abandoned send is neither counted as a failure nor marked as sent.
func TestStopAbandonsAHangingSend(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)
	silent := startSilentServer(t)
	m, err := NewMailer(SMTPConfig{Host: "127.0.0.1", Port: silent.port, Encryption: EncryptionNone, From: "noreply@example.com", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	w.mailer = m
	l := w.loop()
	l.Start()
	waitFor(t, "the mailer to connect", func() bool { return silent.connections() > 0 })
	l.Stop()
	if w.shared.EmailsFailed() != 0 || w.notifiedDays(tok.ID) != 0 {
		t.Errorf("failed = %d, notified_days = %d after Stop; want 0 and 0", w.shared.EmailsFailed(), w.notifiedDays(tok.ID))
	}
}

func TestTightestCrossed(t *testing.T) {
	th := []int{30, 7, 1}
	for _, tc := range []struct {
		remaining time.Duration
		want      int
	}{
		{31 * day, 0}, {30*day + time.Second, 0}, {30 * day, 30}, {8 * day, 30}, {7 * day, 7},
		{5 * day, 7}, {day, 1}, {time.Minute, 1}, {0, 1}, {-day, 1},
	} {
		if got := tightestCrossed(th, tc.remaining); got != tc.want {
			t.Errorf("tightestCrossed(%s) = %d, want %d", tc.remaining, got, tc.want)
		}
	}
	if got := tightestCrossed(nil, -day); got != 0 {
		t.Errorf("with notifications off, an expired token crossed %d", got)
	}
}

// A digest longer than the cap goes out in parts, soon one after the
// other, and every token is warned exactly once.
func TestLongDigestIsSplitAcrossPasses(t *testing.T) {
	w := newWorld(t)
	w.maxDigest = 2
	var ids []string
	for _, name := range []string{"a", "b", "c"} {
		ids = append(ids, w.token("ci-bot", name, 5*day).ID)
	}
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)

	l := w.loop()
	lease, ok, err := w.shared.lead(w.ctx)
	if err != nil || !ok {
		t.Fatalf("taking the alert lease: %v, %v", ok, err)
	}
	wait, err := l.pass(w.ctx, lease)
	if err != nil {
		t.Fatal(err)
	}
	if wait != retryBase {
		t.Errorf("next pass in %s after a partial digest, want %s", wait, retryBase)
	}
	w.pass()
	w.pass()
	msgs := w.smtp.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d emails, want 2", len(msgs))
	}
	first := msgs[0].Body(t)
	if got := msgs[0].Subject(t); got != "[API tokens] 3 permanent tokens expire soon" || !strings.Contains(first, "1 more tokens are due a warning") {
		t.Errorf("first part: subject %q, body:\n%s", got, first)
	}
	all := first + msgs[1].Body(t)
	for _, id := range ids {
		if strings.Count(all, "(id "+id+")") != 1 {
			t.Errorf("token %s is listed %d times, want once", id, strings.Count(all, "(id "+id+")"))
		}
		if w.notifiedDays(id) != 7 {
			t.Errorf("token %s: notified_days %d, want 7", id, w.notifiedDays(id))
		}
	}
}

// The loop logs SMTP failures without the SMTP password.
func TestLoopLogsFailuresWithoutSecrets(t *testing.T) {
	w := newWorld(t)
	core, logs := observer.New(zap.DebugLevel)
	w.log = zap.New(core)
	authSMTP := startSMTP(t, smtpOptions{user: "gateway", pass: "the-right-one"})
	w.mailer = mailerFor(t, authSMTP, EncryptionNone, "gateway", "Wr0ng-Secret-pw")
	w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)

	l := w.loop()
	l.Start()
	waitFor(t, "a failed email", func() bool { return w.shared.EmailsFailed() == 1 })
	l.Stop()
	failures := logs.FilterMessage("alert pass failed").All()
	if len(failures) != 1 {
		t.Fatalf("%d failure logs, want 1", len(failures))
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, "Wr0ng-Secret-pw") {
			t.Fatalf("log shows the SMTP password: %s", line)
		}
	}
	if msg := fmt.Sprint(failures[0].ContextMap()["error"]); !strings.Contains(msg, "535") || !strings.Contains(msg, "retrying in 10s") {
		t.Errorf("failure log does not say what failed and when it retries: %s", msg)
	}
}

// A token that expired before notifications were switched on is still a
// fault and still gets its one warning, which says it has expired.
func TestExpiredTokenFirstSeenIsReported(t *testing.T) {
	w := newWorld(t)
	tok := w.token("ci-bot", "forgotten", day)
	w.clock.Set(tok.ExpiresAt.Add(3 * day))
	w.set(storage.SettingNotificationDays, "30;7")
	w.set(storage.SettingNotificationEmails, ops)
	w.pass()
	if f, ok := w.faultOf(tok.ID); !ok || f.State != storage.FaultExpired {
		t.Fatalf("fault = %+v (found %v), want expired", f, ok)
	}
	msgs := w.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	if got := msgs[0].Subject(t); got != "[API tokens] 1 permanent token has expired" {
		t.Errorf("subject %q", got)
	}
	if body := msgs[0].Body(t); !strings.Contains(body, "EXPIRED on "+tok.ExpiresAt.Format(dateFormat)) {
		t.Errorf("body does not say when it expired:\n%s", body)
	}
	if w.notifiedDays(tok.ID) != 7 {
		t.Errorf("notified_days = %d, want 7 (the tightest)", w.notifiedDays(tok.ID))
	}
}
