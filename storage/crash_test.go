package storage_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

const crashDBEnv = "STORAGE_CRASH_TEST_DB"

// TestMutationsSurviveKill9 runs the mutations in a child process, kills it
// with SIGKILL right after they return (no Close, no flush), and checks
// that a fresh open sees every one of them.
func TestMutationsSurviveKill9(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		where, err := json.Marshal(db)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Child$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDBEnv+"="+string(where))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var secret, tokenID string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
				secret, tokenID = f[1], f[2]
				break
			}
		}
		if secret == "" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("child did not report its mutations")
		}
		if err := cmd.Process.Kill(); err != nil { // SIGKILL: nothing runs after this
			t.Fatal(err)
		}
		cmd.Wait()

		s := db.open(t, testtools.NewFakeClock(t0))
		ctx := context.Background()
		if _, err := s.CheckPassword(ctx, "alice", "pw-alice"); err != nil {
			t.Fatalf("user lost after kill -9: %v", err)
		}
		if id, r := s.Verify(secret); r != verifier.ResultOK || id.TokenID != tokenID {
			t.Fatalf("token lost after kill -9: %+v, %v", id, r)
		}
		if v, err := s.GetSetting(ctx, SettingNotificationDays); err != nil || v != "14" {
			t.Fatalf("setting lost after kill -9: %q, %v", v, err)
		}
		if a, _ := s.ListAudit(ctx, 1); len(a) != 1 || a[0].Action != ActionSettingPut {
			t.Fatalf("audit lost after kill -9: %+v", a)
		}
	})
}

// TestKill9Child is the child half of TestMutationsSurviveKill9; it does
// nothing in a normal run.
func TestKill9Child(t *testing.T) {
	where := os.Getenv(crashDBEnv)
	if where == "" {
		t.Skip("only runs as the child of TestMutationsSurviveKill9")
	}
	var db testDB
	if err := json.Unmarshal([]byte(where), &db); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), db.backend(t, nil), Options{Clock: testtools.NewFakeClock(t0), PasswordCost: 4, LastUsedFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, NewUser{Username: "alice", Password: "pw-alice"}); err != nil {
		t.Fatal(err)
	}
	sec, meta, err := s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSetting(ctx, SettingNotificationDays, "14"); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %s %s\n", sec, meta.ID)
	time.Sleep(time.Minute) // killed long before this ends
}
