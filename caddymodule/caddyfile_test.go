package caddymodule_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/apitokens/caddy-api-tokens/caddymodule"
)

func adapt(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	return out, err
}

// TestCaddyfileGlobalOption checks that every option of the api_tokens
// block lands in the app's JSON, placeholders untouched (they are replaced
// when Caddy provisions the app, not when it adapts the file).
func TestCaddyfileGlobalOption(t *testing.T) {
	out, err := adapt(t, `{
	api_tokens {
		storage_path /var/lib/caddy/api_tokens
		session_ttl 90m
		permanent_token_lifetime 30d
		bootstrap_admin {env.API_TOKENS_ADMIN} {env.API_TOKENS_ADMIN_PASSWORD}
		alert_interval 1h
		audit_retention 400d
		max_sessions_per_user 20
		login_address_prefixes 24 56
		smtp {
			host smtp.example.com
			port 587
			username {env.SMTP_USER}
			password {env.SMTP_PASSWORD}
			encryption starttls
			from "API tokens <noreply@example.com>"
		}
	}
}
http://localhost {
	api_token_auth
	respond "hi"
}
`)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			APITokens caddymodule.App `json:"api_tokens"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	want := caddymodule.App{
		StoragePath:            "/var/lib/caddy/api_tokens",
		SessionTTL:             caddy.Duration(90 * time.Minute),
		PermanentTokenLifetime: caddy.Duration(30 * 24 * time.Hour),
		BootstrapAdmin:         &caddymodule.BootstrapAdmin{Username: "{env.API_TOKENS_ADMIN}", Password: "{env.API_TOKENS_ADMIN_PASSWORD}"},
		AlertInterval:          caddy.Duration(time.Hour),
		AuditRetention:         caddy.Duration(400 * 24 * time.Hour),
		MaxSessionsPerUser:     20,
		LoginIPv4Prefix:        24,
		LoginIPv6Prefix:        56,
		SMTP: &caddymodule.SMTPConfig{
			Host: "smtp.example.com", Port: 587, Username: "{env.SMTP_USER}", Password: "{env.SMTP_PASSWORD}",
			Encryption: "starttls", From: "API tokens <noreply@example.com>",
		},
	}
	if got := cfg.Apps.APITokens; !reflect.DeepEqual(got, want) {
		t.Errorf("adapted app:\n got %+v\nwant %+v", got, want)
	}
}

// TestCaddyfileStorage checks the two storage forms and max_staleness.
func TestCaddyfileStorage(t *testing.T) {
	for _, tc := range []struct{ name, block, storage string }{
		{"postgres", "storage postgres {\n\t\t\tdsn {env.API_TOKENS_DATABASE_URL}\n\t\t}\n\t\tmax_staleness 5m",
			`{"dsn":"{env.API_TOKENS_DATABASE_URL}","module":"postgres"}`},
		{"badger", "storage badger {\n\t\t\tpath /var/lib/caddy/api_tokens\n\t\t}",
			`{"module":"badger","path":"/var/lib/caddy/api_tokens"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := adapt(t, "{\n\tapi_tokens {\n\t\t"+tc.block+"\n\t}\n}\n")
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Apps struct {
					APITokens caddymodule.App `json:"api_tokens"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatalf("%v in %s", err, out)
			}
			app := cfg.Apps.APITokens
			if string(app.StorageRaw) != tc.storage {
				t.Errorf("storage = %s; want %s", app.StorageRaw, tc.storage)
			}
			if tc.name == "postgres" && time.Duration(app.MaxStaleness) != 5*time.Minute {
				t.Errorf("max_staleness = %v", time.Duration(app.MaxStaleness))
			}
		})
	}
}

// TestDirectivesNeedNoOrder adapts a site that uses both directives with
// no global `order`: api_token_auth runs right after basic_auth and
// api_token_admin before respond, whatever order they are written in.
func TestDirectivesNeedNoOrder(t *testing.T) {
	out, err := adapt(t, `http://localhost {
	respond /hello "hi"
	api_token_admin /admin/*
	api_token_auth {
		require_admin
	}
	basic_auth /basic/* {
		bob $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	markers := []string{`"http_basic"`, `"handler":"api_token_auth","require_admin":true`, `"handler":"api_token_admin"`, `"handler":"static_response"`}
	last := -1
	for _, m := range markers {
		i := strings.Index(s, m)
		if i < 0 {
			t.Fatalf("%s missing from %s", m, s)
		}
		if i < last {
			t.Errorf("%s comes too early in the route order: %s", m, s)
		}
		last = i
	}
}

// TestCaddyfileErrors checks that every mistake is refused with a message
// that names the bad token and its line.
func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"option without value", "{\n\tapi_tokens {\n\t\tsession_ttl\n\t}\n}", "session_ttl needs a value, at Caddyfile:3"},
		{"extra value", "{\n\tapi_tokens {\n\t\tstorage_path /a /b\n\t}\n}", `storage_path takes one value, got an extra "/b", at Caddyfile:3`},
		{"unknown option", "{\n\tapi_tokens {\n\t\tstorage_dir /a\n\t}\n}", `unrecognized option "storage_dir"`},
		{"storage without a kind", "{\n\tapi_tokens {\n\t\tstorage\n\t}\n}", "storage needs a kind: storage postgres { dsn ... } or storage badger { path ... }, at Caddyfile:3"},
		{"unknown storage kind", "{\n\tapi_tokens {\n\t\tstorage mysql {\n\t\t}\n\t}\n}", `storage: unknown kind "mysql" (known: badger, postgres), at Caddyfile:3`},
		{"storage path on the line", "{\n\tapi_tokens {\n\t\tstorage badger /data\n\t}\n}", `storage badger takes its options in a block, got "/data"`},
		{"postgres without a dsn", "{\n\tapi_tokens {\n\t\tstorage postgres {\n\t\t}\n\t}\n}", "storage postgres needs a dsn"},
		{"unknown postgres option", "{\n\tapi_tokens {\n\t\tstorage postgres {\n\t\t\turl x\n\t\t}\n\t}\n}", `storage postgres: unrecognized option "url" (known: dsn), at Caddyfile:4`},
		{"storage and storage_path", "{\n\tapi_tokens {\n\t\tstorage_path /a\n\t\tstorage badger {\n\t\t\tpath /b\n\t\t}\n\t}\n}", "set storage or storage_path, not both"},
		{"bad duration", "{\n\tapi_tokens {\n\t\tsession_ttl\t12 hours\n\t}\n}", `session_ttl takes one value, got an extra "hours", at Caddyfile:3`},
		{"not a duration", "{\n\tapi_tokens {\n\t\tpermanent_token_lifetime forever\n\t}\n}", `permanent_token_lifetime: "forever" is not a duration like 90m, 12h or 30d, at Caddyfile:3`},
		{"negative duration", "{\n\tapi_tokens {\n\t\talert_interval -1h\n\t}\n}", `alert_interval must be positive, got "-1h", at Caddyfile:3`},
		{"repeated option", "{\n\tapi_tokens {\n\t\tsession_ttl 1h\n\t\tsession_ttl 2h\n\t}\n}", "session_ttl is given more than once, at Caddyfile:4"},
		{"arguments on the option", "{\n\tapi_tokens /data {\n\t}\n}", `api_tokens takes no arguments on its first line, got "/data"; put its options in a block, at Caddyfile:2`},
		{"prefix out of range", "{\n\tapi_tokens {\n\t\tlogin_address_prefixes 33 64\n\t}\n}", `login_address_prefixes: want 1-32 bits for IPv4 and 1-128 for IPv6, got "33" "64", at Caddyfile:3`},
		{"one prefix", "{\n\tapi_tokens {\n\t\tlogin_address_prefixes 32\n\t}\n}", `login_address_prefixes needs two prefix lengths`},
		{"no sessions", "{\n\tapi_tokens {\n\t\tmax_sessions_per_user 0\n\t}\n}", `max_sessions_per_user must be a positive whole number, got "0", at Caddyfile:3`},
		{"bootstrap_admin with one value", "{\n\tapi_tokens {\n\t\tbootstrap_admin root\n\t}\n}", "bootstrap_admin needs exactly two arguments: <username> <password>, at Caddyfile:3"},
		{"bad smtp port", "{\n\tapi_tokens {\n\t\tsmtp {\n\t\t\tport 70000\n\t\t}\n\t}\n}", `smtp: port must be a number from 1 to 65535, got "70000", at Caddyfile:4`},
		{"bad smtp encryption", "{\n\tapi_tokens {\n\t\tsmtp {\n\t\t\tencryption ssl\n\t\t}\n\t}\n}", `smtp: encryption must be none, starttls or tls, got "ssl", at Caddyfile:4`},
		{"unknown smtp option", "{\n\tapi_tokens {\n\t\tsmtp {\n\t\t\tserver x\n\t\t}\n\t}\n}", `smtp: unrecognized option "server"`},
		{"auth argument", "http://localhost {\n\tapi_token_auth admins\n}", `api_token_auth takes no arguments, got "admins"`},
		{"auth option with a value", "http://localhost {\n\tapi_token_auth {\n\t\trequire_admin yes\n\t}\n}", `api_token_auth: require_admin takes no arguments, got "yes", at Caddyfile:3`},
		{"unknown auth option", "http://localhost {\n\tapi_token_auth {\n\t\tkeep_auth\n\t}\n}", `api_token_auth: unrecognized option "keep_auth"`},
		{"admin argument", "http://localhost {\n\tapi_token_admin /x /y\n}", `api_token_admin takes no arguments, got "/y"`},
		{"admin block", "http://localhost {\n\tapi_token_admin {\n\t\tsession_ttl 1h\n\t}\n}", `api_token_admin takes no block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(t, tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("adapting\n%s\ngot error %v\nwant one containing %q", tc.src, err, tc.want)
			}
		})
	}
}

// FuzzCaddyfile feeds arbitrary token streams to the api_tokens option and
// the api_token_auth directive: they must never panic, and whatever they
// accept must survive the trip through JSON that Caddy makes.
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"api_tokens",
		"api_tokens {\n storage_path /data\n session_ttl 12h\n permanent_token_lifetime 365d\n alert_interval 1h\n}",
		"api_tokens {\n storage postgres {\n dsn {env.DB}\n }\n max_staleness 1m\n}",
		"api_tokens {\n storage badger {\n path /d\n }\n}",
		"api_tokens {\n bootstrap_admin {env.A} {env.B}\n smtp {\n host h\n port 25\n encryption none\n from a@b.c\n username u\n password p\n }\n}",
		"api_tokens {\n smtp {\n port x\n }\n}",
		"api_tokens {\n session_ttl 1d2h3m\n session_ttl\n}",
		"api_tokens a b {\n}",
		"api_token_auth {\n require_admin\n keep_authorization\n use_handle_errors\n}",
		"api_token_auth {\n require_admin x\n}",
		"api_token_auth {\n {\n }\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tokens, err := caddyfile.Tokenize([]byte(src), "Caddyfile")
		if err != nil {
			return
		}
		var app caddymodule.App
		if err := app.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err == nil {
			roundTrip(t, &app, new(caddymodule.App))
		}
		var auth caddymodule.AuthHandler
		if err := auth.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err == nil {
			roundTrip(t, &auth, new(caddymodule.AuthHandler))
		}
	})
}

// roundTrip checks that v encodes to JSON that decodes, strictly, back to
// an equal value.
func roundTrip[T any](t *testing.T, v, into *T) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	if err := caddy.StrictUnmarshalJSON(b, into); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if !reflect.DeepEqual(v, into) {
		t.Fatalf("JSON round trip changed %+v into %+v", v, into)
	}
}
