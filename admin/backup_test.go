package admin

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// TestBackupEndpoint downloads a backup as an admin, restores it into a
// new directory and finds the data there; callers who are not admins get
// no bytes of it.
func TestBackupEndpoint(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	secret, tok := e.addToken("alice", "ci")
	e.must(http.StatusOK, "PUT", "/settings/"+storage.SettingNotificationDays, e.root, `{"value":"14"}`)

	for _, c := range []struct {
		name, token string
		status      int
	}{{"no token", "", http.StatusUnauthorized}, {"non-admin", alice, http.StatusForbidden}, {"garbage token", "x", http.StatusUnauthorized}} {
		r := e.do("GET", "/backup", c.token, "")
		if r.status != c.status || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: GET /backup = %d %s %q; want %d with a JSON error", c.name, r.status, r.header.Get("Content-Type"), r.body, c.status)
		}
	}

	r := e.must(http.StatusOK, "GET", "/backup", e.root, "")
	if ct, cc := r.header.Get("Content-Type"), r.header.Get("Cache-Control"); ct != "application/octet-stream" || cc != "no-store" {
		t.Errorf("backup headers: Content-Type %q, Cache-Control %q", ct, cc)
	}
	if r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("backup answer lacks the security headers")
	}
	if a, ok := findAudit(e.audit(), storage.ActionBackup, ""); !ok || a.Actor != rootName {
		t.Errorf("backup not audited with its actor: %+v", a)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if err := badgerstore.Restore(dir, bytes.NewReader(r.body)); err != nil {
		t.Fatalf("restoring the downloaded backup: %v", err)
	}
	db, err := badgerstore.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(context.Background(), db, storage.Options{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if id, res := s.Verifier().Verify(secret, nil); res != verifier.ResultOK || id.TokenID != tok.ID {
		t.Errorf("alice's token in the restored copy: %+v %v", id, res)
	}
	if v, err := s.GetSetting(context.Background(), storage.SettingNotificationDays); v != "14" || err != nil {
		t.Errorf("setting in the restored copy: %q %v", v, err)
	}
	if a, _, _ := s.ListAuditPage(context.Background(), "", 1); len(a) != 1 || a[0].Action != storage.ActionBackup {
		t.Errorf("the backup does not hold its own audit entry: %+v", a)
	}
}
