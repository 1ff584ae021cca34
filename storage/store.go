package storage

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Errors a Store returns. They are wrapped with a message a person can act
// on (errors.Is still matches); the admin API maps each to its HTTP status.
var (
	ErrNotFound  = errors.New("not found")       // 404
	ErrConflict  = errors.New("conflict")        // 409: exists already, duplicate name
	ErrLastAdmin = errors.New("last admin")      // 409: the last admin cannot be deleted or demoted
	ErrInvalid   = errors.New("invalid")         // 400: a value the store refuses
	ErrBadLogin  = errors.New("bad credentials") // 401: unknown user, wrong password or disabled user
)

// Store is everything the gateway, the admin API and the alert loop need
// from persistent storage. Every method is safe for concurrent use.
//
// Mutations are atomic, durable once they return nil (they survive kill -9),
// and write their audit entry in the same transaction, taking the actor and
// client address from the context (see WithActor).
type Store interface {
	// Verify checks a bearer secret on the request hot path. It never writes
	// to disk and never touches disk for a malformed secret; a revocation,
	// deletion, expiry or disabled user is seen by the very next call.
	Verify(secret string) (Identity, VerifyResult)

	// Users.
	CreateUser(ctx context.Context, u NewUser) (User, error)
	// EnsureAdmin creates u as an admin only if no admin exists yet, in one
	// transaction. It reports whether it created the user.
	EnsureAdmin(ctx context.Context, u NewUser) (bool, error)
	GetUser(ctx context.Context, username string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	UpdateUser(ctx context.Context, username string, p UserPatch) (User, error)
	// DeleteUser removes the user and every token they own.
	DeleteUser(ctx context.Context, username string) error
	// CheckPassword does the same amount of work whether or not the user
	// exists, so response time does not reveal which usernames exist. It
	// returns ErrBadLogin for an unknown user, a wrong password or a
	// disabled user.
	CheckPassword(ctx context.Context, username, password string) (User, error)

	// Tokens. CreateToken returns the secret, which is never stored.
	CreateToken(ctx context.Context, t NewToken) (secret string, meta Token, err error)
	GetToken(ctx context.Context, id string) (Token, error)
	ListUserTokens(ctx context.Context, username string) ([]Token, error)
	ListTokens(ctx context.Context, f TokenFilter) ([]Token, error)
	// DeleteToken removes a token of the given user; it stops working at once.
	DeleteToken(ctx context.Context, username, id string) error
	// Logout deletes the temporary token with this ID (audited as logout).
	Logout(ctx context.Context, id string) error
	// RotateToken creates a new permanent token with the same name and a
	// fresh expiry (expiresAt), and revokes the old one after grace.
	RotateToken(ctx context.Context, username, id string, grace time.Duration, expiresAt time.Time) (secret string, meta Token, err error)
	// ForEachPermanentToken streams every permanent token (active, expired
	// or revoked) in expiry order, with bounded memory. Returning an error
	// from fn stops the walk and returns that error.
	ForEachPermanentToken(ctx context.Context, fn func(Token) error) error
	// CountTokens counts live (active) tokens by kind.
	CountTokens() map[TokenKind]int

	// Settings (AppConfig). PutSetting validates with ValidateSetting.
	ListSettings(ctx context.Context) ([]Setting, error)
	GetSetting(ctx context.Context, key string) (string, error)
	PutSetting(ctx context.Context, key, value string) (Setting, error)
	DeleteSetting(ctx context.Context, key string) error

	// Alert state per token, written only by the alert loop and deleted
	// with the token.
	GetAlertState(ctx context.Context, tokenID string) (AlertState, bool, error)
	PutAlertStates(ctx context.Context, states map[string]AlertState) error

	// Audit log.
	AppendAudit(ctx context.Context, e AuditEntry) error
	// ListAudit returns up to limit entries, newest first.
	ListAudit(ctx context.Context, limit int) ([]AuditEntry, error)
	// PruneAudit deletes the entries older than before and records that it
	// did; it returns how many it deleted.
	PruneAudit(ctx context.Context, before time.Time) (int, error)

	// Close flushes batched last-used times and releases the database.
	Close() error
}

// AlertState is what the alert loop remembers about one permanent token so
// that a restart, a reload or a second pass never repeats an email.
type AlertState struct {
	// NotifiedDays is the tightest threshold (in days) already emailed;
	// 0 means none yet.
	NotifiedDays int `json:"notified_days,omitempty"`
	// RaisedAt is when the token's fault was first raised.
	RaisedAt time.Time `json:"raised_at,omitzero"`
}

type actorKey struct{}

type actorInfo struct{ actor, clientIP string }

// WithActor returns a context whose mutations are audited as done by actor
// from clientIP.
func WithActor(ctx context.Context, actor, clientIP string) context.Context {
	return context.WithValue(ctx, actorKey{}, actorInfo{actor, clientIP})
}

// ActorFrom returns the actor and client address set by WithActor; the actor
// is "system" when none was set.
func ActorFrom(ctx context.Context) (actor, clientIP string) {
	if a, ok := ctx.Value(actorKey{}).(actorInfo); ok {
		return a.actor, a.clientIP
	}
	return "system", ""
}

// Options configure OpenBadger. Zero values get defaults.
type Options struct {
	// Clock defaults to SystemClock.
	Clock Clock
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// LastUsedFlushInterval is how often batched last-used times are written;
	// it is the staleness bound of last_used_at. Default 30s.
	LastUsedFlushInterval time.Duration
	// PasswordCost is the bcrypt cost for new password hashes. Default
	// bcrypt.DefaultCost; tests use bcrypt.MinCost for speed.
	PasswordCost int
}
