package verifier

import (
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Both of Verify's paths decide every state of a token and its user alike:
// the hot table's, for a token in use, and the locked one. Each row puts a
// token in use (so the hot table holds it), brings it and its user to the
// row's state, and asks both paths at a now half a second after that use
// (so the hot table may answer: no last use is due), on the edges too: a
// token expires, and a revocation takes effect, at its time exactly.
func TestBothPathsDecideAlike(t *testing.T) {
	const (
		none = iota
		future
		exactlyNow
		past
	)
	at := func(now time.Time, when int) int64 {
		switch when {
		case future:
			return now.Add(time.Nanosecond).UnixNano()
		case exactlyNow:
			return now.UnixNano()
		case past:
			return now.Add(-time.Nanosecond).UnixNano()
		}
		return 0
	}
	admin := &Policy{Admin: true}
	rows := []struct {
		name              string
		expires, revoked  int // expires is never none
		user              User
		deleteUser        bool
		policy            *Policy
		want              Result
		identityOfRefusal bool // the refusal says whose token it was
	}{
		{name: "valid", expires: future, user: User{}, want: ResultOK},
		{name: "valid, admin route, admin", expires: future, user: User{Admin: true}, policy: admin, want: ResultOK},
		{name: "valid, admin route, not admin", expires: future, user: User{}, policy: admin, want: ResultForbidden, identityOfRefusal: true},
		{name: "expires exactly now", expires: exactlyNow, user: User{}, want: ResultExpired},
		{name: "expired a nanosecond ago", expires: past, user: User{}, want: ResultExpired},
		{name: "revoked a nanosecond from now", expires: future, revoked: future, user: User{}, want: ResultOK},
		{name: "revoked exactly now", expires: future, revoked: exactlyNow, user: User{}, want: ResultRevoked},
		{name: "revoked a nanosecond ago", expires: future, revoked: past, user: User{}, want: ResultRevoked},
		{name: "revoked and expired: the revocation wins", expires: exactlyNow, revoked: past, user: User{}, want: ResultRevoked},
		{name: "user disabled", expires: future, user: User{Disabled: true}, want: ResultDisabled},
		{name: "user disabled, admin route", expires: future, user: User{Admin: true, Disabled: true}, policy: admin, want: ResultDisabled},
		{name: "user disabled and token expired", expires: past, user: User{Disabled: true}, want: ResultExpired},
		{name: "user deleted", expires: future, deleteUser: true, want: ResultUnknown},
		{name: "user deleted, token revoked", expires: future, revoked: past, deleteUser: true, want: ResultUnknown},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			v, clock := newTestVerifier()
			now := t0.Add(time.Hour)
			v.PutUser(User{Name: "u", Admin: true})
			tok := newToken("u", secret.Permanent, time.Unix(0, at(now, row.expires)))
			if err := v.PutToken(tok.Token); err != nil {
				t.Fatal(err)
			}
			clock.now = now.Add(-500 * time.Millisecond)
			if _, r := v.Verify(tok.secret, admin); r != ResultOK || !v.isHot(tok.secret, admin) {
				t.Fatalf("in use: %v, hot %v; want ok, hot", r, v.isHot(tok.secret, admin))
			}

			tok.RevokedAt = at(now, row.revoked)
			if err := v.PutToken(tok.Token); err != nil {
				t.Fatal(err)
			}
			row.user.Name = "u"
			v.PutUser(row.user)
			if row.deleteUser {
				v.RemoveUser("u")
			}
			clock.now = now

			hotID, hotR, answered := v.cur.Load().hot.find(tok.secret).decide(now.UnixNano(), row.policy)
			if !answered {
				t.Fatal("the hot table did not answer for a token used half a second ago")
			}
			lockedID, lockedR := v.lockedVerify(tok.secret, row.policy)
			if hotR != row.want || lockedR != row.want {
				t.Fatalf("hot path: %v, locked path: %v; want %v", hotR, lockedR, row.want)
			}
			if hotID != lockedID {
				t.Fatalf("hot path's identity %+v, locked path's %+v", hotID, lockedID)
			}
			wantID := Identity{}
			if row.want == ResultOK || row.identityOfRefusal {
				wantID = Identity{Username: "u", TokenID: string(tok.ID), Kind: secret.Permanent, Admin: row.user.Admin}
			}
			if hotID != wantID {
				t.Fatalf("identity %+v; want %+v", hotID, wantID)
			}
			if id, r := v.Verify(tok.secret, row.policy); r != row.want || id != wantID {
				t.Fatalf("Verify = %+v, %v; want %+v, %v", id, r, wantID, row.want)
			}
		})
	}
}

// A token whose use is due to be recorded, or whose slot no longer holds
// it, is not answered by the hot table: the locked path records the use,
// or finds that the token is gone.
func TestHotTableDefersWhatOnlyTheLockedPathCanDo(t *testing.T) {
	v, clock := newTestVerifier()
	tok := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	if _, r := v.Verify(tok.secret, nil); r != ResultOK || !v.isHot(tok.secret, nil) {
		t.Fatalf("after one use: %v, hot %v", r, v.isHot(tok.secret, nil))
	}
	clock.Advance(time.Second)
	if v.isHot(tok.secret, nil) {
		t.Fatal("a use a second after the last is answered by the hot table, which would not record it")
	}
	if _, r := v.Verify(tok.secret, nil); r != ResultOK || v.LastUsed(tok.Hash) != clock.now {
		t.Fatalf("the use was not recorded: %v, last used %v", r, v.LastUsed(tok.Hash))
	}
	v.RemoveToken(tok.Hash)
	if v.isHot(tok.secret, nil) {
		t.Fatal("the hot table answers for a removed token")
	}
	if _, r := v.Verify(tok.secret, nil); r != ResultUnknown {
		t.Fatalf("removed token: %v", r)
	}
}
