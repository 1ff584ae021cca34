package admin

import (
	"net/http"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

func TestSettings(t *testing.T) {
	e := newEnv(t)
	tokens := map[string]string{"root": e.root, "alice": e.addUser("alice")}
	days, emails := "/settings/"+storage.SettingNotificationDays, "/settings/"+storage.SettingNotificationEmails
	e.run(t, tokens, []call{
		{"unknown key", "PUT", "/settings/EnableTokenNotification", "root", `{"value":"30"}`, 400, `unknown setting key "EnableTokenNotification"`},
		{"days zero", "PUT", days, "root", `{"value":"0"}`, 400, "from 1 to 365"},
		{"days words", "PUT", days, "root", `{"value":"thirty"}`, 400, "from 1 to 365"},
		{"days empty", "PUT", days, "root", `{"value":""}`, 400, "at least one"},
		{"bad email", "PUT", emails, "root", `{"value":"ops@example.com;Bob <bob@example.com>"}`, 400, "plain email address"},
		{"missing value", "PUT", days, "root", `{}`, 400, "value is required"},
		{"number value", "PUT", days, "root", `{"value":30}`, 400, `field "value" must be a string`},
		{"as non-admin", "PUT", days, "alice", `{"value":"30"}`, 403, ""},
		{"delete unset", "DELETE", days, "root", "", 404, ""},
		{"list as non-admin", "GET", "/settings", "alice", "", 403, ""},
	})
	if n := e.settings.Load(); n != 0 {
		t.Fatalf("OnSettingsChange called %d times by failed changes", n)
	}

	var s storage.Setting
	e.must(http.StatusOK, "PUT", days, e.root, `{"value":" 7; 30 ;1"}`).decode(t, &s)
	if want := (storage.Setting{Type: "AppConfig", Key: storage.SettingNotificationDays, Value: "30;7;1"}); s != want {
		t.Errorf("PUT returned %+v; want %+v", s, want)
	}
	e.must(http.StatusOK, "PUT", emails, e.root, `{"value":"ops@example.com"}`)
	if n := e.settings.Load(); n != 2 {
		t.Errorf("OnSettingsChange called %d times after two changes", n)
	}

	var list []storage.Setting
	e.must(http.StatusOK, "GET", "/settings", e.root, "").decode(t, &list)
	want := []storage.Setting{
		{Type: "AppConfig", Key: storage.SettingNotificationDays, Value: "30;7;1"},
		{Type: "AppConfig", Key: storage.SettingNotificationEmails, Value: "ops@example.com"},
	}
	if len(list) != 2 || list[0] != want[0] || list[1] != want[1] {
		t.Errorf("GET /settings = %+v; want %+v", list, want)
	}
	e.must(http.StatusOK, "GET", days, e.root, "").decode(t, &s)
	if s != want[0] {
		t.Errorf("GET %s = %+v", days, s)
	}

	e.must(http.StatusNoContent, "DELETE", days, e.root, "")
	e.must(http.StatusNotFound, "GET", days, e.root, "")
	if n := e.settings.Load(); n != 3 {
		t.Errorf("OnSettingsChange called %d times after delete; want 3", n)
	}
	entries := e.audit()
	for _, action := range []string{storage.ActionSettingPut, storage.ActionSettingDelete} {
		if a, ok := findAudit(entries, action, storage.SettingNotificationDays); !ok || a.Actor != "root" {
			t.Errorf("%s audit = %+v (found %v); want actor root", action, a, ok)
		}
	}
}

func TestFaults(t *testing.T) {
	e := newEnv(t)
	if body := string(e.must(http.StatusOK, "GET", "/faults", e.root, "").body); body != "[]\n" {
		t.Errorf("no faults = %q; want []", body)
	}
	raised := time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("CET", 3600))
	e.faults = []storage.Fault{{TokenID: "tok_1", User: "alice", TokenName: "ci", ExpiresAt: testStart, DaysLeft: 0, State: storage.FaultExpired, RaisedAt: raised}}
	var got []storage.Fault
	r := e.must(http.StatusOK, "GET", "/faults", e.root, "")
	r.decode(t, &got)
	if len(got) != 1 || got[0].TokenID != "tok_1" || got[0].State != "expired" || !got[0].RaisedAt.Equal(raised) {
		t.Errorf("faults = %+v", got)
	}
	if want := `"raised_at":"2029-12-31T23:00:00Z"`; !contains(r.body, want) {
		t.Errorf("faults JSON %s lacks UTC time %s", r.body, want)
	}
	alice := e.addUser("alice")
	e.must(http.StatusForbidden, "GET", "/faults", alice, "")
}

func TestAuditList(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	e.must(http.StatusOK, "PUT", "/settings/"+storage.SettingNotificationDays, e.root, `{"value":"30"}`)
	var entries []storage.AuditEntry
	e.must(http.StatusOK, "GET", "/audit", e.root, "").decode(t, &entries)
	if len(entries) < 4 || entries[0].Action != storage.ActionSettingPut || entries[0].Actor != "root" || !entries[0].Time.Equal(testStart) {
		t.Fatalf("audit, newest first = %+v", entries)
	}
	e.must(http.StatusOK, "GET", "/audit?limit=1", e.root, "").decode(t, &entries)
	if len(entries) != 1 || entries[0].Action != storage.ActionSettingPut {
		t.Errorf("limit=1 gave %+v", entries)
	}
	e.run(t, map[string]string{"root": e.root, "alice": alice}, []call{
		{"limit zero", "GET", "/audit?limit=0", "root", "", 400, "1 to 1000"},
		{"limit too big", "GET", "/audit?limit=1001", "root", "", 400, "1 to 1000"},
		{"limit words", "GET", "/audit?limit=all", "root", "", 400, "1 to 1000"},
		{"as non-admin", "GET", "/audit", "alice", "", 403, "administrator"},
	})
}
