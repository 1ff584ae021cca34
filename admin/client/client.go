// Package client is a Go client of the admin REST API of API tokens for
// Caddy, as described by its OpenAPI document (admin/openapi.json, served
// at GET /openapi.json). Its tests run every call through the contract
// check of package apicontract, so the client and the document cannot
// disagree. It has no Caddy dependency; `caddy api-tokens` is built on it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client calls one admin API. Its zero value is not usable: set BaseURL.
type Client struct {
	// BaseURL is where api_token_admin is mounted, e.g.
	// http://localhost:8080/api-tokens.
	BaseURL string
	// Token is the bearer token sent with every call but Login.
	Token string
	// HTTP sends the requests; nil means a client with a 30 s timeout.
	HTTP *http.Client
	// UserAgent, if set, is sent as User-Agent.
	UserAgent string
	// PageSize is how many items the list calls ask for per page (1 to
	// 1000); 0 means the server's default (100).
	PageSize int
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// noRedirects is hc (or the default client) refusing every redirect. Go's
// client would send the token again to the same host on another port or
// scheme, and the body of a 307 or 308 (a login's password) anywhere.
func noRedirects(hc *http.Client) *http.Client {
	if hc == nil {
		hc = defaultHTTP
	}
	c := *hc
	c.CheckRedirect = RefuseRedirect
	return &c
}

// RefuseRedirect is an http.Client's CheckRedirect that follows no
// redirect: it fails the request with a *RedirectError.
func RefuseRedirect(req *http.Request, via []*http.Request) error {
	return &RedirectError{From: Redact(via[len(via)-1].URL.String()), To: Redact(req.URL.String())}
}

// RedirectError is an answer that redirected the request elsewhere, which
// the client does not follow: its credentials are meant for the URL it
// was given only.
type RedirectError struct {
	From, To string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("%s redirected to %s, which was not followed: a token or password goes only to the URL given; "+
		"if the API has moved, give its new URL", e.From, e.To)
}

// Redact is rawURL without the user and password it may hold, for messages.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if strings.Contains(rawURL, "@") {
			return "(a URL that does not parse)"
		}
		return rawURL
	}
	u.User = nil
	return u.String()
}

// Error is an answer of the API that is not a success: its status and the
// message of its {"error": "..."} body.
type Error struct {
	Method, Path string
	Status       int
	Message      string
	// RetryAfter is the Retry-After of a 429, else 0.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
}

// UnreachableError is a request that got no answer: the server could not be
// reached, the connection broke, or the call timed out.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string { return fmt.Sprintf("cannot reach %s: %v", e.URL, e.Err) }
func (e *UnreachableError) Unwrap() error { return e.Err }

// User is a user account.
type User struct {
	Username  string    `json:"username"`
	Email     string    `json:"email"`
	Admin     bool      `json:"admin"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	// Scopes is the most the user's tokens may carry; an administrator
	// holds every scope whatever it says.
	Scopes []string `json:"scopes"`
}

// Token is a token's metadata, never its secret.
type Token struct {
	ID         string     `json:"id"`
	User       string     `json:"user"`
	Name       string     `json:"name"`
	Kind       string     `json:"kind"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	ExpiresAt  time.Time  `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	Status     string     `json:"status"`
	RotatedTo  string     `json:"rotated_to,omitempty"`
	// Scopes are what the token may do, within its user's scopes at each
	// request.
	Scopes []string `json:"scopes"`
	// AllowedCIDRs are the networks it may be used from; empty: any.
	AllowedCIDRs []string `json:"allowed_cidrs"`
	// LastUsedIP is the client address of its last recorded use, if known.
	LastUsedIP string `json:"last_used_ip,omitempty"`
	// ScopeUsage says, for each scope a route needed of the token and each
	// scope a shadow route found it lacked, when last.
	ScopeUsage map[string]ScopeUse `json:"scope_usage,omitempty"`
}

// ScopeUse is what the gateways saw of one scope of a token, written with
// the last-use batches (so up to about 30 s late).
type ScopeUse struct {
	// LastNeededAt: a request last passed a route that required it.
	LastNeededAt *time.Time `json:"last_needed_at,omitempty"`
	// LastMissingAt: a shadow route (scope_mode shadow) last let the
	// token through without it.
	LastMissingAt *time.Time `json:"last_missing_at,omitempty"`
}

// Scope is one scope of the gateway's catalogue.
type Scope struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// NewToken is a created or rotated permanent token: its secret, shown only
// once, and its metadata.
type NewToken struct {
	Secret string `json:"token"`
	Token
}

// Session is the answer to a login.
type Session struct {
	Secret    string    `json:"token"`
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	ExpiresAt time.Time `json:"expires_at"`
	Scopes    []string  `json:"scopes"`
	User      User      `json:"user"`
}

// Setting is a system setting.
type Setting struct {
	Type  string `json:"type"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Fault is a permanent token near or past its expiry.
type Fault struct {
	TokenID   string    `json:"token_id"`
	User      string    `json:"user"`
	TokenName string    `json:"token_name"`
	ExpiresAt time.Time `json:"expires_at"`
	DaysLeft  int       `json:"days_left"`
	State     string    `json:"state"`
	RaisedAt  time.Time `json:"raised_at"`
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Target   string    `json:"target,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
}

// NewUser is the body of CreateUser.
type NewUser struct {
	Username string `json:"username"`
	Email    string `json:"email,omitempty"`
	Password string `json:"password"`
	Admin    bool   `json:"admin"`
	// Scopes is the user's ceiling; nil or empty: none.
	Scopes []string `json:"scopes,omitempty"`
}

// UserChange is the body of UpdateUser: only the fields that are set change.
type UserChange struct {
	Email    *string `json:"email,omitempty"`
	Password *string `json:"password,omitempty"`
	Admin    *bool   `json:"admin,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
	// Scopes replaces the user's ceiling (administrators only); an empty
	// list takes every scope away.
	Scopes *[]string `json:"scopes,omitempty"`
	// CurrentPassword goes with a change of the caller's own password or
	// email, which the server accepts only from a login session.
	CurrentPassword *string `json:"current_password,omitempty"`
}

// TokenOptions are what CreateTokenWith may ask of a new token besides its
// name; the zero value asks for the defaults.
type TokenOptions struct {
	// ExpiresAt, if not zero, is an earlier expiry than the server's
	// default lifetime.
	ExpiresAt time.Time
	// Scopes are the token's scopes, within its user's. nil: the user's
	// scopes as they are now (the answer lists them); an empty list: none.
	Scopes *[]string
	// AllowedCIDRs are the networks it may be used from, like 10.0.0.0/8;
	// empty: any.
	AllowedCIDRs []string
}

// TokenChange is the body of UpdateToken: only the fields that are set
// change.
type TokenChange struct {
	// Scopes are the scopes the token keeps: some of those it has (a scope
	// cannot be added; create a new token for it). An empty list: none.
	Scopes *[]string `json:"scopes,omitempty"`
	// AllowedCIDRs replaces the token's networks; an empty list: any.
	AllowedCIDRs *[]string `json:"allowed_cidrs,omitempty"`
}

// TokenFilter narrows ListTokens; zero values mean no filter.
type TokenFilter struct {
	ExpiringWithin string // a duration such as 30d
	Kind           string // permanent or temporary
}

// Login trades a username and password for a temporary token. It does
// not change c.Token.
func (c *Client) Login(ctx context.Context, username, password string) (Session, error) {
	return c.login(ctx, username, password, nil)
}

// LoginWithScopes is Login for a session with only some of the user's
// scopes (an empty list: none). It does not change c.Token.
func (c *Client) LoginWithScopes(ctx context.Context, username, password string, scopes []string) (Session, error) {
	if scopes == nil {
		scopes = []string{} // none, not null
	}
	return c.login(ctx, username, password, &scopes)
}

// login logs in; scopes nil asks for all of the user's.
func (c *Client) login(ctx context.Context, username, password string, scopes *[]string) (Session, error) {
	body := struct {
		Username string    `json:"username"`
		Password string    `json:"password"`
		Scopes   *[]string `json:"scopes,omitempty"`
	}{username, password, scopes}
	var out Session
	err := c.call(ctx, http.MethodPost, "/login", nil, body, &out, false)
	return out, err
}

// Logout ends the login session of c.Token.
func (c *Client) Logout(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/logout", nil, nil, nil, true)
}

// Me returns the user c.Token belongs to.
func (c *Client) Me(ctx context.Context) (User, error) {
	var out User
	return out, c.call(ctx, http.MethodGet, "/me", nil, nil, &out, true)
}

// Users yields every user, by username, reading the list a page at a
// time; stop ranging to stop reading.
func (c *Client) Users(ctx context.Context) iter.Seq2[User, error] {
	return list[User](ctx, c, "/users", nil)
}

// ListUsers returns every user.
func (c *Client) ListUsers(ctx context.Context) ([]User, error) {
	return collect(c.Users(ctx), 0)
}

// CreateUser creates a user.
func (c *Client) CreateUser(ctx context.Context, u NewUser) (User, error) {
	var out User
	return out, c.call(ctx, http.MethodPost, "/users", nil, u, &out, true)
}

// GetUser returns one user.
func (c *Client) GetUser(ctx context.Context, username string) (User, error) {
	var out User
	return out, c.call(ctx, http.MethodGet, "/users/"+url.PathEscape(username), nil, nil, &out, true)
}

// UpdateUser changes the fields of ch that are set.
func (c *Client) UpdateUser(ctx context.Context, username string, ch UserChange) (User, error) {
	if ch.Scopes != nil && *ch.Scopes == nil {
		ch.Scopes = &[]string{} // none, not null
	}
	var out User
	return out, c.call(ctx, http.MethodPatch, "/users/"+url.PathEscape(username), nil, ch, &out, true)
}

// DeleteUser deletes a user and all their tokens.
func (c *Client) DeleteUser(ctx context.Context, username string) error {
	return c.call(ctx, http.MethodDelete, "/users/"+url.PathEscape(username), nil, nil, nil, true)
}

// UserTokens yields a user's tokens, oldest first, reading the list a
// page at a time; stop ranging to stop reading.
func (c *Client) UserTokens(ctx context.Context, username string) iter.Seq2[Token, error] {
	return list[Token](ctx, c, "/users/"+url.PathEscape(username)+"/tokens", nil)
}

// ListUserTokens returns a user's tokens.
func (c *Client) ListUserTokens(ctx context.Context, username string) ([]Token, error) {
	return collect(c.UserTokens(ctx, username), 0)
}

// GetToken returns one of a user's tokens (its metadata, never its secret).
func (c *Client) GetToken(ctx context.Context, username, id string) (Token, error) {
	var out Token
	return out, c.call(ctx, http.MethodGet, "/users/"+url.PathEscape(username)+"/tokens/"+url.PathEscape(id), nil, nil, &out, true)
}

// CreateToken creates a permanent token for a user, with the user's
// scopes, usable from any network. A zero expiresAt means the server's
// default lifetime.
func (c *Client) CreateToken(ctx context.Context, username, name string, expiresAt time.Time) (NewToken, error) {
	return c.CreateTokenWith(ctx, username, name, TokenOptions{ExpiresAt: expiresAt})
}

// CreateTokenWith creates a permanent token for a user as o asks.
func (c *Client) CreateTokenWith(ctx context.Context, username, name string, o TokenOptions) (NewToken, error) {
	body := struct {
		Name         string    `json:"name"`
		ExpiresAt    string    `json:"expires_at,omitempty"`
		Scopes       *[]string `json:"scopes,omitempty"`
		AllowedCIDRs []string  `json:"allowed_cidrs,omitempty"`
	}{Name: name, Scopes: o.Scopes, AllowedCIDRs: o.AllowedCIDRs}
	if !o.ExpiresAt.IsZero() {
		body.ExpiresAt = o.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if body.Scopes != nil && *body.Scopes == nil {
		body.Scopes = &[]string{} // none, not null
	}
	var out NewToken
	return out, c.call(ctx, http.MethodPost, "/users/"+url.PathEscape(username)+"/tokens", nil, body, &out, true)
}

// UpdateToken narrows a token (administrators): it takes scopes away and
// replaces its allowed networks, as far as ch says. It returns the token
// as it is now.
func (c *Client) UpdateToken(ctx context.Context, username, id string, ch TokenChange) (Token, error) {
	if ch.Scopes != nil && *ch.Scopes == nil {
		ch.Scopes = &[]string{} // none, not null
	}
	if ch.AllowedCIDRs != nil && *ch.AllowedCIDRs == nil {
		ch.AllowedCIDRs = &[]string{} // any network, not null
	}
	var out Token
	return out, c.call(ctx, http.MethodPatch, "/users/"+url.PathEscape(username)+"/tokens/"+url.PathEscape(id), nil, ch, &out, true)
}

// ListScopes returns the gateway's scope catalogue, in its config's order.
func (c *Client) ListScopes(ctx context.Context) ([]Scope, error) {
	var out []Scope
	return out, c.call(ctx, http.MethodGet, "/scopes", nil, nil, &out, true)
}

// DeleteToken deletes a token; it stops working at once.
func (c *Client) DeleteToken(ctx context.Context, username, id string) error {
	return c.call(ctx, http.MethodDelete, "/users/"+url.PathEscape(username)+"/tokens/"+url.PathEscape(id), nil, nil, nil, true)
}

// RotateToken replaces a permanent token with a new secret; the old one
// keeps working for grace (a duration such as 1h; empty means none).
func (c *Client) RotateToken(ctx context.Context, username, id, grace string) (NewToken, error) {
	var body any
	if grace != "" {
		body = map[string]string{"grace": grace}
	}
	var out NewToken
	return out, c.call(ctx, http.MethodPost, "/users/"+url.PathEscape(username)+"/tokens/"+url.PathEscape(id)+"/rotate", nil, body, &out, true)
}

// Tokens yields every token, or those that f selects, reading the list a
// page at a time; stop ranging to stop reading. The order is by user and
// creation time, or with f.ExpiringWithin by expiry.
func (c *Client) Tokens(ctx context.Context, f TokenFilter) iter.Seq2[Token, error] {
	q := url.Values{}
	if f.ExpiringWithin != "" {
		q.Set("expiring_within", f.ExpiringWithin)
	}
	if f.Kind != "" {
		q.Set("kind", f.Kind)
	}
	return list[Token](ctx, c, "/tokens", q)
}

// ListTokens returns every token, or those that f selects.
func (c *Client) ListTokens(ctx context.Context, f TokenFilter) ([]Token, error) {
	return collect(c.Tokens(ctx, f), 0)
}

// ListSettings returns the settings that are set.
func (c *Client) ListSettings(ctx context.Context) ([]Setting, error) {
	var out []Setting
	return out, c.call(ctx, http.MethodGet, "/settings", nil, nil, &out, true)
}

// GetSetting returns one setting.
func (c *Client) GetSetting(ctx context.Context, key string) (Setting, error) {
	var out Setting
	return out, c.call(ctx, http.MethodGet, "/settings/"+url.PathEscape(key), nil, nil, &out, true)
}

// PutSetting sets a setting and returns it as stored (normalized).
func (c *Client) PutSetting(ctx context.Context, key, value string) (Setting, error) {
	var out Setting
	return out, c.call(ctx, http.MethodPut, "/settings/"+url.PathEscape(key), nil, map[string]string{"value": value}, &out, true)
}

// DeleteSetting unsets a setting.
func (c *Client) DeleteSetting(ctx context.Context, key string) error {
	return c.call(ctx, http.MethodDelete, "/settings/"+url.PathEscape(key), nil, nil, nil, true)
}

// ListFaults returns the active faults.
func (c *Client) ListFaults(ctx context.Context) ([]Fault, error) {
	var out []Fault
	return out, c.call(ctx, http.MethodGet, "/faults", nil, nil, &out, true)
}

// Audit yields the audit log, newest first, reading it a page at a time;
// stop ranging to stop reading.
func (c *Client) Audit(ctx context.Context) iter.Seq2[AuditEntry, error] {
	return list[AuditEntry](ctx, c, "/audit", nil)
}

// ListAudit returns the newest limit audit entries; limit 0 means the
// server's default page (100).
func (c *Client) ListAudit(ctx context.Context, limit int) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = defaultPage
	}
	pages := *c
	if pages.PageSize == 0 {
		pages.PageSize = min(limit, maxPage)
	}
	return collect(pages.Audit(ctx), limit)
}

// call sends one request and decodes a JSON answer into out (if not nil).
func (c *Client) call(ctx context.Context, method, path string, query url.Values, body, out any, auth bool) error {
	u, err := c.url(path)
	if err != nil {
		return err
	}
	u.RawQuery = query.Encode()
	_, err = c.send(ctx, method, u, path, body, out, auth)
	return err
}

// url is the URL of path under BaseURL.
func (c *Client) url(path string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(c.BaseURL, "/") + path)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("the URL %q is not an http:// or https:// URL of the admin API", Redact(c.BaseURL))
	}
	return u, nil
}

// send sends one request to u and decodes a JSON answer into out (if not
// nil); path names the call in errors. It returns the answer's headers.
func (c *Client) send(ctx context.Context, method string, u *url.URL, path string, body, out any, auth bool) (http.Header, error) {
	base := Redact(strings.TrimRight(c.BaseURL, "/"))
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if auth {
		if c.Token == "" {
			return nil, errors.New("no token: this call needs an API token")
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := noRedirects(c.HTTP)
	resp, err := hc.Do(req)
	if err != nil && idempotent(method) && droppedUnanswered(err) {
		// A `caddy reload` can close a new connection before any handler
		// reads the request (README.md, Operations). An idempotent request
		// is sent once more, after a pause in which the new config takes
		// over; a POST is not, as the client cannot tell that drop from one
		// after the handler ran.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
			if again, gerr := resendable(req); gerr == nil {
				resp, err = hc.Do(again)
			}
		}
	}
	if re, ok := errors.AsType[*RedirectError](err); ok {
		return nil, re
	}
	if err != nil {
		return nil, &UnreachableError{URL: base, Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, &UnreachableError{URL: base, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, answerError(method, path, resp, data)
	}
	if out == nil {
		return resp.Header, nil
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return nil, fmt.Errorf("%s %s answered %d with %q, not JSON: is %s the base URL of the api_token_admin handler?",
			method, path, resp.StatusCode, resp.Header.Get("Content-Type"), base)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("%s %s: the answer is not what the API describes: %v", method, path, err)
	}
	return resp.Header, nil
}

// answerError turns an unsuccessful answer into an *Error. An answer that
// is not the API's error object (a proxy's error page, a wrong URL) keeps
// a short excerpt as its message.
func answerError(method, path string, resp *http.Response, data []byte) *Error {
	e := &Error{Method: method, Path: path, Status: resp.StatusCode}
	var body struct {
		Error string `json:"error"`
	}
	if isJSON(resp.Header.Get("Content-Type")) && json.Unmarshal(data, &body) == nil && body.Error != "" {
		e.Message = body.Error
	} else {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = "(no message)"
		}
		e.Message = msg + " (not an answer of the admin API: is the URL right?)"
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the
// method and URL the caller already names.
// idempotent tells whether sending a request with method twice has the
// effect of sending it once (RFC 9110, 9.2.2), among the API's methods.
func idempotent(method string) bool {
	return method == http.MethodGet || method == http.MethodPut || method == http.MethodDelete
}

// droppedUnanswered tells whether err is a connection that was closed or
// reset without any response.
func droppedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// resendable is a copy of req with its body from the start.
func resendable(req *http.Request) (*http.Request, error) {
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		again.Body = body
	}
	return again, nil
}

func unwrapURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}
