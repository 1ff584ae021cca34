package storage

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

func TestTokenRecordRoundTrip(t *testing.T) {
	rev := t0.Add(time.Hour)
	for _, rec := range []tokenRecord{
		{Hash: secret.HashOf("x"), Token: Token{ID: "tok_1", User: "alice", Name: "Déploiement ✓", Kind: Permanent,
			CreatedAt: t0, CreatedBy: "root", ExpiresAt: t0.Add(24 * time.Hour), RevokedAt: &rev, RotatedTo: "tok_2"}},
		{Token: Token{ID: "tok_3", User: "b", Name: "login", Kind: Temporary, CreatedAt: t0, ExpiresAt: t0.Add(time.Nanosecond)}},
		{Token: Token{ID: "tok_4", User: "c", Name: "ci", Kind: Permanent, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour),
			Scopes: []string{"deploy", "reports:read"}, AllowedCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"}}},
	} {
		got, err := unmarshalToken(rec.marshal())
		if err != nil || got.Hash != rec.Hash || !tokensEqual(got.Token, rec.Token) ||
			!slices.Equal(got.Scopes, orEmpty(rec.Scopes)) || !slices.Equal(got.AllowedCIDRs, orEmpty(rec.AllowedCIDRs)) {
			t.Fatalf("round trip = %+v, %v; want %+v", got, err, rec)
		}
	}
}

// A record written before scopes existed (five fields) reads as a token
// with no scope, usable from any network, for the lists and for the
// verifier alike.
func TestTokenRecordFromBeforeScopes(t *testing.T) {
	rec := tokenRecord{Hash: secret.HashOf("x"), Token: Token{ID: "tok_00000000000000000001", User: "alice", Name: "ci", Kind: Permanent,
		CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Scopes: []string{"deploy"}, AllowedCIDRs: []string{"10.0.0.0/8"}}}
	b := rec.marshal()
	old := b[:len(b)-(1+len("deploy"))-(1+len("10.0.0.0/8"))]
	got, err := unmarshalToken(old)
	if err != nil || got.Scopes == nil || len(got.Scopes) != 0 || got.AllowedCIDRs == nil || len(got.AllowedCIDRs) != 0 || got.Name != "ci" {
		t.Fatalf("old record = %+v, %v; want no scope, any network", got, err)
	}
	v, err := verifierToken(old)
	if err != nil || len(v.Scopes) != 0 || len(v.Networks) != 0 || string(v.User) != "alice" {
		t.Fatalf("old record for the verifier = %+v, %v", v, err)
	}
	if v, err := verifierToken(b); err != nil || string(v.Scopes) != "deploy" || string(v.Networks) != "10.0.0.0/8" {
		t.Fatalf("new record for the verifier = %+v, %v", v, err)
	}
}

func FuzzUnmarshalToken(f *testing.F) {
	rev := t0.Add(time.Hour)
	good := tokenRecord{Hash: secret.HashOf("x"), Token: Token{ID: "tok_1", User: "alice", Name: "ci", Kind: Permanent,
		CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), RevokedAt: &rev}}
	f.Add(good.marshal())
	f.Add([]byte{})
	f.Add([]byte{tokenRecordV1, kindByteTemporary})
	f.Fuzz(func(t *testing.T, b []byte) {
		user := recordUser(b) // never panics, whatever the bytes
		rec, err := unmarshalToken(b)
		if err != nil {
			return
		}
		if string(user) != rec.User {
			t.Fatalf("recordUser = %q; unmarshalToken says %q", user, rec.User)
		}
		// Whatever decodes re-encodes to a record that decodes the same.
		again, err := unmarshalToken(rec.marshal())
		if err != nil || !bytes.Equal(again.marshal(), rec.marshal()) {
			t.Fatalf("re-encoding %x changed it: %v", b, err)
		}
	})
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func tokensEqual(a, b Token) bool {
	return a.ID == b.ID && a.User == b.User && a.Name == b.Name && a.Kind == b.Kind &&
		a.CreatedAt.Equal(b.CreatedAt) && a.CreatedBy == b.CreatedBy && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.Status == b.Status && a.RotatedTo == b.RotatedTo &&
		timePtrEqual(a.RevokedAt, b.RevokedAt) && timePtrEqual(a.LastUsedAt, b.LastUsedAt)
}

func timePtrEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// checkNetworks never panics; what it accepts is canonical (checking its
// answer again gives the same answer) and every prefix parses.
func FuzzCheckNetworks(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.1/8", "::ffff:10.0.0.0/104", "2001:db8::/32", "2001:DB8::/32", "fe80::/10%eth0", "0.0.0.0/0", "", "1.2.3.4/33"} {
		f.Add(s, "192.168.0.0/16")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		out, err := checkNetworks([]string{a, b})
		if err != nil {
			return
		}
		again, err := checkNetworks(out)
		if err != nil || !slices.Equal(again, out) {
			t.Fatalf("accepted %q %q as %v, which checks as %v, %v", a, b, out, again, err)
		}
	})
}
