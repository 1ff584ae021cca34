package storage_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	. "github.com/apitokens/caddy-api-tokens/storage"
)

func TestValidateSetting(t *testing.T) {
	ok := []struct{ key, in, want string }{
		{SettingNotificationDays, "30", "30"},
		{SettingNotificationDays, " 7 ; 30;1;7 ", "30;7;1"},
		{SettingNotificationDays, "365", "365"},
		{SettingNotificationEmails, "ops@example.com", "ops@example.com"},
		{SettingNotificationEmails, "a@example.com; b@example.org;", "a@example.com;b@example.org"},
	}
	for _, c := range ok {
		got, err := ValidateSetting(c.key, c.in)
		if err != nil || got != c.want {
			t.Errorf("ValidateSetting(%s, %q) = %q, %v; want %q", c.key, c.in, got, err, c.want)
		}
	}
	bad := []struct{ key, in, mentions string }{
		{SettingNotificationDays, "0", "1 to 365"},
		{SettingNotificationDays, "366", "1 to 365"},
		{SettingNotificationDays, "-3", "1 to 365"},
		{SettingNotificationDays, "7.5", "whole number"},
		{SettingNotificationDays, "thirty", "thirty"},
		{SettingNotificationDays, "", "at least one"},
		{SettingNotificationDays, ";;", "at least one"},
		{SettingNotificationEmails, "", "at least one"},
		{SettingNotificationEmails, "not-an-address", "not-an-address"},
		{SettingNotificationEmails, "Ops <ops@example.com>", "plain email"},
		{SettingNotificationEmails, "a@example.com,b@example.com", "semicolons"},
		{SettingNotificationEmails, "a@example.com\r\nBcc: x@example.com", "plain email"},
		{"EnableUserTokenNotifications", "30", "unknown setting key"},
		{SettingNotificationDays, strings.Repeat("1;", 3000), "longer than"},
	}
	for _, c := range bad {
		_, err := ValidateSetting(c.key, c.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.mentions) {
			t.Errorf("ValidateSetting(%s, %q) = %v; want ErrInvalid mentioning %q", c.key, c.in, err, c.mentions)
		}
	}
}

func TestParseNotificationDaysOrder(t *testing.T) {
	got, err := ParseNotificationDays("1;30;7")
	if err != nil || !slices.Equal(got, []int{30, 7, 1}) {
		t.Fatalf("got %v, %v; want [30 7 1]", got, err)
	}
}

func FuzzValidateSetting(f *testing.F) {
	for _, s := range []string{"30", "30;7;1", "a@example.com;b@example.com", "", ";", "0", "1e3", "<a@b.c>"} {
		f.Add(SettingNotificationDays, s)
		f.Add(SettingNotificationEmails, s)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		norm, err := ValidateSetting(key, value)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// A normalized value is a fixed point: validating it again changes nothing.
		again, err := ValidateSetting(key, norm)
		if err != nil || again != norm {
			t.Fatalf("normalized %q re-validates to %q, %v", norm, again, err)
		}
	})
}

func TestSettings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := ctxAs("root")
		list, err := s.ListSettings(ctx)
		if err != nil || list == nil || len(list) != 0 {
			t.Fatalf("empty ListSettings = %#v, %v", list, err)
		}
		_, err = s.GetSetting(ctx, SettingNotificationDays)
		wantErr(t, err, ErrNotFound, `setting "EnableUserTokenNotification" is not set`)
		wantErr(t, s.DeleteSetting(ctx, SettingNotificationDays), ErrNotFound, "is not set")

		got, err := s.PutSetting(ctx, SettingNotificationEmails, " b@example.com ; a@example.com")
		want := Setting{Type: "AppConfig", Key: SettingNotificationEmails, Value: "b@example.com;a@example.com"}
		if err != nil || got != want {
			t.Fatalf("PutSetting = %+v, %v; want %+v", got, err, want)
		}
		if _, err := s.PutSetting(ctx, SettingNotificationDays, "7;30"); err != nil {
			t.Fatal(err)
		}
		_, err = s.PutSetting(ctx, SettingNotificationDays, "400")
		wantErr(t, err, ErrInvalid, "1 to 365")
		_, err = s.PutSetting(ctx, "Nope", "1")
		wantErr(t, err, ErrInvalid, "unknown setting key")

		list, _ = s.ListSettings(ctx)
		if len(list) != 2 || list[0] != (Setting{"AppConfig", SettingNotificationDays, "30;7"}) || list[1] != want {
			t.Fatalf("ListSettings = %+v", list)
		}
		a, _ := s.ListAudit(ctx, 1)
		if a[0].Action != ActionSettingPut || a[0].Target != SettingNotificationDays || a[0].Detail != "EnableUserTokenNotification=30;7" {
			t.Fatalf("audit = %+v (the rejected puts must not be audited)", a[0])
		}
		if err := s.DeleteSetting(ctx, SettingNotificationDays); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetSetting(ctx, SettingNotificationDays); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetSetting after delete = %v", err)
		}
		a, _ = s.ListAudit(ctx, 1)
		if a[0].Action != ActionSettingDelete || a[0].Target != SettingNotificationDays {
			t.Fatalf("audit = %+v", a[0])
		}
	})
}
