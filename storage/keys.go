package storage

import (
	"encoding/binary"
	"time"
)

// The key namespace: every key the rules write, in one table, with the
// file whose rules own it. Every query is a point read or a prefix scan,
// on every backend. A backend keeps its own bookkeeping outside this
// namespace (kv.Backend), so a copy from one database to another carries
// exactly these keys.
//
//	key                        value                                                owner
//	u/<username>               user record (JSON, with the bcrypt hash)             users.go
//	ud/<username>              empty: a deleted user whose tokens are still being   users.go, purge.go
//	                           purged; the name cannot be taken again meanwhile
//	t/<token id>               token record (binary, record.go; holds the SHA-256   tokens.go
//	                           of the secret)
//	ut/<username>/<token id>   empty: the tokens of a user                          tokens.go
//	un/<username>/<name>       token id: the unique name of a permanent token       tokens.go
//	e/<expiry ns BE>/<id>      a copy of t/<id> of a permanent token, kept equal     tokens.go
//	                           by putTokenRecord, so the alert loop's walk in
//	                           expiry order reads sequentially
//	cp/<username>\x00<created ns BE><id>
//	                           empty: permanent tokens by user, creation time and   paging.go
//	                           id, the order the lists page in
//	ct/<username>\x00<created ns BE><id>
//	                           empty: temporary tokens the same way                 paging.go
//	et/<expiry ns BE>/<id>     empty: temporary tokens in expiry order              paging.go
//	lu/<token id>              last use, unix nanoseconds big-endian (batched)      lastuse.go
//	as/<token id>              alert state (JSON)                                   alertstate.go
//	s/<key>                    setting value, normalized                            settings.go
//	a/<time ns BE><seq BE>     audit entry (JSON); a reverse scan is newest first   audit.go
//	lf/<username>/<address>    where the audit entry of this window's failed        loginfailures.go
//	                           logins of this user from this address is (JSON, TTL)
//	m/alert_view               the last alert pass's results (the alerts package's  alertstate.go
//	                           encoding)
//	m/lease/<name>             a lease (JSON)                                       lease.go
//	lt/p/<username>/<address>  login throttle: failures of one address for one      storage/throttle
//	                           user (JSON, TTL)
//	lt/a/<address>             login throttle: failures from one address, any       storage/throttle
//	                           username (JSON, TTL)
//	lt/u/<username>            login throttle: failures for one user from           storage/throttle
//	                           untrusted addresses, and the last one's time (JSON,
//	                           TTL)
//	lt/t/<username>/<address>  login throttle: when this address last logged in     storage/throttle
//	                           as this user (JSON, TTL)
//
// Usernames cannot contain "/", so "ut/<user>/", "un/<user>/", "lf/<user>/",
// "lt/p/<user>/" and "lt/t/<user>/" never overlap between users. In cp/
// and ct/ the user ends with a zero byte, which sorts before every
// character a username may hold, so the keys sort by username exactly as
// strings do ("a" before "a-b") and then by time. Temporary tokens (t/, ut/, ct/,
// et/, lu/) are written with a TTL so the backend may collect them; their
// expiry is still decided by the Clock.
//
// Changes to u/, t/, s/ and m/alert_view are published on the change
// feed, which is how every node's verifier, settings watchers and alert
// view learn of them (subscriber.go).
const (
	prefixUser         = "u/"
	prefixDeletedUser  = "ud/"
	prefixToken        = "t/"
	prefixUserToken    = "ut/"
	prefixName         = "un/"
	prefixExpiry       = "e/"
	prefixCreatedPerm  = "cp/"
	prefixCreatedTemp  = "ct/"
	prefixExpiryTemp   = "et/"
	prefixLastUsed     = "lu/"
	prefixAlert        = "as/"
	prefixSetting      = "s/"
	prefixAudit        = "a/"
	prefixLoginFailure = "lf/"
	keyAlertView       = "m/alert_view"
	prefixLease        = "m/lease/"
)

// be64 encodes v big-endian, so byte order is numeric order for v >= 0.
func be64(v int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return string(b[:])
}

func userKey(name string) string              { return prefixUser + name }
func deletedUserKey(name string) string       { return prefixDeletedUser + name }
func tokenKey(id string) string               { return prefixToken + id }
func userTokenKey(u, id string) string        { return userTokensPrefix(u) + id }
func userTokensPrefix(u string) string        { return prefixUserToken + u + "/" }
func nameKey(u, name string) string           { return prefixName + u + "/" + name }
func expiryKey(t time.Time, id string) string { return prefixExpiry + expiryPos(t, id) }

// expiryPos is the part of an expiry key (e/ or et/) after its prefix: the
// position of a token in expiry order.
func expiryPos(t time.Time, id string) string { return be64(t.UnixNano()) + "/" + id }

// createdPos is the part of a cp/ or ct/ key after its prefix: the
// position of a token in the order of the token lists.
func createdPos(user string, created time.Time, id string) string {
	return user + "\x00" + be64(created.UnixNano()) + id
}

// listKeys are the keys that place a token in the lists' orders: by user
// and creation time, and for a temporary token by expiry too (a permanent
// token's e/ key is written with its record; see putTokenRecord).
func listKeys(rec *tokenRecord) []string {
	if rec.Kind == Temporary {
		return []string{prefixCreatedTemp + createdPos(rec.User, rec.CreatedAt, rec.ID), prefixExpiryTemp + expiryPos(rec.ExpiresAt, rec.ID)}
	}
	return []string{prefixCreatedPerm + createdPos(rec.User, rec.CreatedAt, rec.ID)}
}

func lastUsedKey(id string) string { return prefixLastUsed + id }
func alertKey(id string) string    { return prefixAlert + id }
func settingKey(k string) string   { return prefixSetting + k }
func leaseKey(name string) string  { return prefixLease + name }
func auditKey(at time.Time, seq uint64) string {
	return prefixAudit + be64(at.UnixNano()) + be64(int64(seq))
}

// keyKind names what a key holds for error messages, without its content.
func keyKind(key string) string {
	for _, p := range []struct{ prefix, name string }{
		{prefixUserToken, "user token index"}, {prefixDeletedUser, "deleted user"}, {prefixUser, "user"},
		{prefixToken, "token"}, {prefixName, "token name index"}, {prefixExpiry, "expiry index"},
		{prefixCreatedPerm, "token list index"}, {prefixCreatedTemp, "token list index"}, {prefixExpiryTemp, "expiry index"},
		{prefixLastUsed, "last use"}, {prefixAlert, "alert state"}, {prefixSetting, "setting"},
		{prefixAudit, "audit log"}, {prefixLoginFailure, "failed login index"}, {keyAlertView, "alert view"}, {prefixLease, "lease"},
	} {
		if len(key) >= len(p.prefix) && key[:len(p.prefix)] == p.prefix {
			return p.name
		}
	}
	return "unknown key"
}
