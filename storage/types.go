// Package storage is the rules of API tokens for Caddy: users, tokens,
// settings, alert state, leases and the audit log, written once over a
// narrow key-value contract (storage/kv) that an embedded Badger database
// (storage/badgerstore) and PostgreSQL for a fleet (storage/pgstore) each
// implement. It keeps the in-memory verifier (storage/verifier) equal to
// the database through the change feed, and opens the login throttle
// (storage/throttle) on the same database; the token format is
// storage/secret.
package storage

import (
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// TokenKind tells how a token was minted and how long it may live.
type TokenKind = secret.Kind

const (
	// Temporary tokens are minted by logging in and live for the session.
	Temporary = secret.Temporary
	// Permanent tokens are created by an administrator for CI/CD and automation.
	Permanent = secret.Permanent
)

// TokenStatus is derived from a token's times when it is read.
type TokenStatus string

const (
	StatusActive  TokenStatus = "active"
	StatusExpired TokenStatus = "expired"
	StatusRevoked TokenStatus = "revoked"
)

// User is an account. The password hash never leaves the storage package.
type User struct {
	Username  string    `json:"username"`
	Email     string    `json:"email"`
	Admin     bool      `json:"admin"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	// Scopes is the most the user's tokens may carry (sorted); an
	// administrator holds every scope whatever it says.
	Scopes []string `json:"scopes"`
}

// Token is a token's metadata. It never carries the secret or its hash.
type Token struct {
	ID         string      `json:"id"`
	User       string      `json:"user"`
	Name       string      `json:"name"`
	Kind       TokenKind   `json:"kind"`
	CreatedAt  time.Time   `json:"created_at"`
	CreatedBy  string      `json:"created_by"`
	ExpiresAt  time.Time   `json:"expires_at"`
	LastUsedAt *time.Time  `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time  `json:"revoked_at,omitempty"`
	Status     TokenStatus `json:"status"`
	// RotatedTo is the ID of the token that replaced this one, if any.
	RotatedTo string `json:"rotated_to,omitempty"`
	// Scopes are what the token may do (sorted), within its user's
	// ceiling at each request.
	Scopes []string `json:"scopes"`
	// AllowedCIDRs are the networks it may be used from (sorted); empty:
	// any.
	AllowedCIDRs []string `json:"allowed_cidrs"`
	// LastUsedIP is the client address of its last recorded use.
	LastUsedIP string `json:"last_used_ip,omitempty"`
	// ScopeUsage says, for each scope a route needed of it, when last;
	// and for each scope a shadow route found missing, when last.
	ScopeUsage map[string]ScopeUse `json:"scope_usage,omitempty"`
}

// ScopeUse is what the gateways saw of one scope of a token.
type ScopeUse struct {
	// LastNeededAt: a request last passed a route that required it.
	LastNeededAt *time.Time `json:"last_needed_at,omitempty"`
	// LastMissingAt: a shadow route last found the token without it.
	LastMissingAt *time.Time `json:"last_missing_at,omitempty"`
}

// StatusAt derives a token's status at the given time: a revocation that
// has taken effect wins over expiry.
func (t Token) StatusAt(now time.Time) TokenStatus {
	switch {
	case t.RevokedAt != nil && !now.Before(*t.RevokedAt):
		return StatusRevoked
	case !now.Before(t.ExpiresAt):
		return StatusExpired
	default:
		return StatusActive
	}
}

// NewUser is the input to CreateUser.
type NewUser struct {
	Username string
	Email    string
	Password string
	Admin    bool
	Scopes   []string // declared scopes; nil: none
}

// UserPatch changes only the fields that are non-nil.
type UserPatch struct {
	Email    *string
	Password *string
	Admin    *bool
	Disabled *bool
	// Scopes replaces the user's ceiling: the user's tokens lose at once
	// what it no longer holds.
	Scopes *[]string
	// KeepSession is the id of a login session that survives a password
	// change: the caller's own, when users change their own password.
	// Every other login session of the user ends with the change.
	KeepSession string
}

// NewToken is the input to CreateToken. For permanent tokens ExpiresAt is
// required and already validated by the caller against the lifetime limit;
// for temporary tokens Name may be empty.
type NewToken struct {
	User      string
	Name      string
	Kind      TokenKind
	ExpiresAt time.Time
	CreatedBy string
	// Scopes are the token's scopes, within the user's ceiling; nil: the
	// user's ceiling as it is now (written out in the record).
	Scopes []string
	// AllowedCIDRs are the networks it may be used from; nil or empty:
	// any.
	AllowedCIDRs []string
	// MaxSessions, for a temporary token (a login session), caps the
	// user's live sessions: if the user has this many already, the oldest
	// are ended, audited as session_ended, to make room. 0: no cap.
	MaxSessions int
}

// TokenPatch changes only the fields that are non-nil. Scopes may only
// narrow: a scope the token does not hold is refused.
type TokenPatch struct {
	Scopes       *[]string
	AllowedCIDRs *[]string
}

// TokenFilter narrows ListTokensPage and ListTokens. Zero values mean
// "no filter".
type TokenFilter struct {
	// ExpiringBefore keeps tokens whose expiry is before this time.
	ExpiringBefore time.Time
	Kind           TokenKind
}

// Setting is one system setting, in the seed's "App Config" shape.
type Setting struct {
	Type  string `json:"type"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// AuditEntry records who did what, when. It never holds a secret.
type AuditEntry struct {
	Time  time.Time `json:"time"`
	Actor string    `json:"actor"`
	// ActorTokenID and ActorTokenKind name the token the actor used (its
	// id, never its secret); empty for logins and for "system" and "cli".
	ActorTokenID   string    `json:"actor_token_id,omitempty"`
	ActorTokenKind TokenKind `json:"actor_token_kind,omitempty"`
	Action         string    `json:"action"`
	Target         string    `json:"target,omitempty"`
	Detail         string    `json:"detail,omitempty"`
	ClientIP       string    `json:"client_ip,omitempty"`
	// Count, on a login_failed entry, is how many failures it stands for:
	// one user's from one address within the login throttle's window
	// (Time is the first). Absent: one.
	Count int `json:"count,omitempty"`
}

// Audit actions. They are stable strings: operators grep for them.
const (
	ActionLogin         = "login"
	ActionLoginFailed   = "login_failed"
	ActionLogout        = "logout"
	ActionSessionEnded  = "session_ended"
	ActionUserCreate    = "user_create"
	ActionUserUpdate    = "user_update"
	ActionUserDelete    = "user_delete"
	ActionTokenCreate   = "token_create"
	ActionTokenDelete   = "token_delete"
	ActionTokenRotate   = "token_rotate"
	ActionTokenUpdate   = "token_update"
	ActionSettingPut    = "setting_put"
	ActionSettingDelete = "setting_delete"
	ActionAuditPrune    = "audit_prune"
	ActionBackup        = "backup"
)

// Fault is an active warning that a permanent token is near expiry, or has
// expired and is not yet deleted. The alert loop computes faults; the admin
// API lists them and Prometheus sees them as metrics.
type Fault struct {
	TokenID   string    `json:"token_id"`
	User      string    `json:"user"`
	TokenName string    `json:"token_name"`
	ExpiresAt time.Time `json:"expires_at"`
	DaysLeft  int       `json:"days_left"`
	State     string    `json:"state"` // FaultExpiring or FaultExpired
	RaisedAt  time.Time `json:"raised_at"`
}

// Fault states.
const (
	FaultExpiring = "expiring"
	FaultExpired  = "expired"
)
