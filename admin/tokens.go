package admin

import (
	"fmt"
	"net/http"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

type createTokenRequest struct {
	Name string `json:"name"`
	// ExpiresAt is RFC 3339; a string rather than time.Time so a bad value
	// gets a message that says which format is expected.
	ExpiresAt *string `json:"expires_at"`
	// Scopes absent: the user's scopes; [] : none.
	Scopes *[]string `json:"scopes"`
	// AllowedCIDRs absent or []: any network.
	AllowedCIDRs []string `json:"allowed_cidrs"`
}

// patchTokenRequest narrows a token: fields absent are left as they are.
type patchTokenRequest struct {
	Scopes       *[]string `json:"scopes"`
	AllowedCIDRs *[]string `json:"allowed_cidrs"`
}

// asked turns an optional list from a request into storage's: nil when
// absent (or null), never nil when present, even empty.
func asked(list *[]string) []string {
	if list == nil {
		return nil
	}
	return append([]string{}, *list...)
}

type rotateTokenRequest struct {
	Grace *string `json:"grace"`
}

// newTokenResponse is a token's metadata plus its secret, shown only once.
type newTokenResponse struct {
	Secret string `json:"token"`
	storage.Token
}

func (h *handler) listUserTokens(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.Admin && !c.isSelf(r) {
		return errOnlyAdminOrSelf
	}
	p, err := pageQuery(r)
	if err != nil {
		return err
	}
	toks, next, err := h.cfg.Store.ListUserTokensPage(r.Context(), r.PathValue("username"), p.cursor, p.limit)
	if err != nil {
		return err
	}
	h.writePage(w, r, mapSlice(toks, utcToken), next)
	return nil
}

// getToken answers one token's metadata, as the lists show it.
func (h *handler) getToken(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.Admin && !c.isSelf(r) {
		return errOnlyAdminOrSelf
	}
	tok, err := h.cfg.Store.GetUserToken(r.Context(), r.PathValue("username"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, utcToken(tok))
	return nil
}

// createToken creates a permanent token for a user, expiring after the
// configured lifetime unless an earlier expires_at is asked for.
func (h *handler) createToken(w http.ResponseWriter, r *http.Request, c caller) error {
	var req createTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return badRequest("name is required: give the token a name that says what uses it")
	}
	now := h.cfg.Clock.Now()
	expires, err := h.permanentExpiry(now, req.ExpiresAt)
	if err != nil {
		return err
	}
	secret, tok, err := h.cfg.Store.CreateToken(c.ctx(r), storage.NewToken{
		User:         r.PathValue("username"),
		Name:         req.Name,
		Kind:         storage.Permanent,
		ExpiresAt:    expires,
		CreatedBy:    c.Username,
		Scopes:       asked(req.Scopes),
		AllowedCIDRs: req.AllowedCIDRs,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, newTokenResponse{Secret: secret, Token: utcToken(tok)})
	return nil
}

// patchToken narrows one token: an administrator may take scopes away
// from it and replace its allowed networks.
func (h *handler) patchToken(w http.ResponseWriter, r *http.Request, c caller) error {
	var req patchTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Scopes == nil && req.AllowedCIDRs == nil {
		return badRequest("nothing to change: send scopes, allowed_cidrs or both")
	}
	patch := storage.TokenPatch{Scopes: req.Scopes, AllowedCIDRs: req.AllowedCIDRs}
	tok, err := h.cfg.Store.UpdateToken(c.ctx(r), r.PathValue("username"), r.PathValue("id"), patch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, utcToken(tok))
	return nil
}

// listScopes answers the gateway's scope catalogue.
func (h *handler) listScopes(w http.ResponseWriter, _ *http.Request, _ caller) error {
	writeJSON(w, http.StatusOK, h.cfg.Store.Scopes())
	return nil
}

// permanentExpiry checks a requested expiry against now and the lifetime
// limit; with none requested it is now plus the lifetime.
func (h *handler) permanentExpiry(now time.Time, requested *string) (time.Time, error) {
	latest := now.Add(h.cfg.PermanentTokenLifetime)
	if requested == nil {
		return latest, nil
	}
	t, err := time.Parse(time.RFC3339, *requested)
	if err != nil {
		return time.Time{}, badRequest(fmt.Sprintf("expires_at %q is not an RFC 3339 time like 2030-01-02T15:04:05Z", *requested))
	}
	switch {
	case !t.After(now):
		return time.Time{}, badRequest("expires_at must be in the future")
	case t.After(latest):
		return time.Time{}, badRequest(fmt.Sprintf("expires_at must not be later than %s (permanent tokens live at most %s)",
			latest.UTC().Format(time.RFC3339), lifetimeWords(h.cfg.PermanentTokenLifetime)))
	}
	return t.UTC(), nil
}

func lifetimeWords(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// deleteToken lets an administrator delete anyone's token and a user delete
// their own.
func (h *handler) deleteToken(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.Admin && !c.isSelf(r) {
		return newError(http.StatusForbidden, "only an administrator or the token's owner may delete it")
	}
	if err := h.cfg.Store.DeleteToken(c.ctx(r), r.PathValue("username"), r.PathValue("id")); err != nil {
		return err
	}
	writeNoContent(w)
	return nil
}

// rotateToken replaces a permanent token with a new secret of the same name
// and a fresh expiry; the old secret keeps working for the grace period.
func (h *handler) rotateToken(w http.ResponseWriter, r *http.Request, c caller) error {
	var req rotateTokenRequest
	if err := decodeJSON(w, r, &req); err != nil && err != errEmptyBody {
		return err
	}
	var grace time.Duration
	if req.Grace != nil {
		g, err := ParseDuration(*req.Grace)
		if err != nil {
			return badRequest("grace: " + err.Error())
		}
		if g > maxRotateGrace {
			return badRequest("grace must be at most 7d: the old token should not outlive its replacement by long")
		}
		grace = g
	}
	expires := h.cfg.Clock.Now().Add(h.cfg.PermanentTokenLifetime)
	secret, tok, err := h.cfg.Store.RotateToken(c.ctx(r), r.PathValue("username"), r.PathValue("id"), grace, expires)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, newTokenResponse{Secret: secret, Token: utcToken(tok)})
	return nil
}

// listTokens lists every token, optionally only those expiring within a
// duration (expired ones included: they need attention most), in expiry
// order then, and of a kind.
func (h *handler) listTokens(w http.ResponseWriter, r *http.Request, _ caller) error {
	p, err := pageQuery(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var f storage.TokenFilter
	if s := q.Get("expiring_within"); s != "" {
		d, err := ParseDuration(s)
		if err != nil {
			return badRequest("expiring_within: " + err.Error())
		}
		f.ExpiringBefore = h.cfg.Clock.Now().Add(d)
	}
	switch kind := storage.TokenKind(q.Get("kind")); kind {
	case "", storage.Permanent, storage.Temporary:
		f.Kind = kind
	default:
		return badRequest(fmt.Sprintf("kind must be permanent or temporary, not %q", kind))
	}
	toks, next, err := h.cfg.Store.ListTokensPage(r.Context(), f, p.cursor, p.limit)
	if err != nil {
		return err
	}
	h.writePage(w, r, mapSlice(toks, utcToken), next)
	return nil
}
