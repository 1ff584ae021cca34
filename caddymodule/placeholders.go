package caddymodule

import (
	"hash/maphash"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// identityPlaceholders names the four placeholders of an identity under
// one prefix. The names are constants: caddyauth builds each name by
// concatenation and boxes each value, an allocation apiece per request.
type identityPlaceholders struct {
	id, tokenID, tokenKind, admin, scopes string
}

var (
	// Given on success. Caddy's access log reads {http.auth.user.id} for
	// its user_id field.
	userPlaceholders = identityPlaceholders{
		id:        "http.auth.user.id",
		tokenID:   "http.auth.user.token_id",
		tokenKind: "http.auth.user.token_kind",
		admin:     "http.auth.user.admin",
		scopes:    "http.auth.user.scopes",
	}
	// Given on a 403, as caddyauth does for a refused candidate, so the
	// logs can tell who was refused. They never mean the request is
	// authenticated.
	candidatePlaceholders = identityPlaceholders{
		id:        "http.auth.candidate.id",
		tokenID:   "http.auth.candidate.token_id",
		tokenKind: "http.auth.candidate.token_kind",
		admin:     "http.auth.candidate.admin",
		scopes:    "http.auth.candidate.scopes",
	}
)

func (n *identityPlaceholders) lookup(key string, values *[5]any) (any, bool) {
	switch key {
	case n.id:
		return values[0], true
	case n.tokenID:
		return values[1], true
	case n.tokenKind:
		return values[2], true
	case n.admin:
		return values[3], true
	case n.scopes:
		return values[4], true
	}
	return nil, false
}

// identityValues answers an identity's placeholders to Caddy's replacer.
// It is built once per token and admin state and kept in identityCache,
// so a request adds a ready-made lookup to its replacer (one append to a
// slice with room) instead of four locked map writes, the first of which
// allocates the replacer's map, and four boxed strings.
type identityValues struct {
	identity        verifier.Identity
	values          [5]any // username, token ID, kind, admin, scopes; boxed once
	user, candidate caddy.ReplacerFunc

	metadataOnce sync.Once
	metadata     map[string]string
}

// scopeNamer names an identity's effective scopes.
type scopeNamer interface{ ScopeNames(mask uint64) string }

func newIdentityValues(id verifier.Identity, names scopeNamer) *identityValues {
	v := &identityValues{
		identity: id,
		values:   [5]any{id.Username, id.TokenID, string(id.Kind), strconv.FormatBool(id.Admin), names.ScopeNames(id.Scopes)},
	}
	v.user = func(key string) (any, bool) { return userPlaceholders.lookup(key, &v.values) }
	v.candidate = func(key string) (any, bool) { return candidatePlaceholders.lookup(key, &v.values) }
	return v
}

// candidateMetadata is what the api_token provider gives caddyauth for a
// refused candidate, which sets the candidate placeholders from it; made
// at the token's first such refusal.
func (v *identityValues) candidateMetadata() map[string]string {
	v.metadataOnce.Do(func() {
		id := v.identity
		v.metadata = map[string]string{"token_id": id.TokenID, "token_kind": string(id.Kind), "admin": strconv.FormatBool(id.Admin), "scopes": v.values[4].(string)}
	})
	return v.metadata
}

// identityCache keeps the identityValues of the tokens in use, by token
// id, so that no request builds them. An entry is replaced when its
// identity changes (its user was promoted or demoted).
//
// A token in use is found in front, a direct-mapped table read with one
// atomic load; a token missing there (its slot holds another token) is
// found in all, which holds every entry, and takes the slot. So two tokens
// in use that share a slot cost a map lookup each, never an allocation.
// all is bounded: past maxCachedIdentities (about 300 bytes each) it
// starts again empty, which costs each token in use one allocation.
type identityCache struct {
	seed  maphash.Seed
	front [frontSlots]atomic.Pointer[identityValues]
	all   atomic.Pointer[sync.Map]
	n     atomic.Int64
}

const (
	frontSlots          = 1 << 13
	maxCachedIdentities = 100_000
)

// identities is the process's cache: identities do not depend on the
// config, so reloads keep it.
var identities = func() *identityCache {
	c := &identityCache{seed: maphash.MakeSeed()}
	c.all.Store(new(sync.Map))
	return c
}()

// of returns the values of id, whose scopes names tells.
func (c *identityCache) of(id verifier.Identity, names scopeNamer) *identityValues {
	slot := &c.front[maphash.String(c.seed, id.TokenID)%frontSlots]
	if v := slot.Load(); v != nil && v.identity == id {
		return v
	}
	v := c.fromAll(id, names)
	slot.Store(v)
	return v
}

func (c *identityCache) fromAll(id verifier.Identity, names scopeNamer) *identityValues {
	all := c.all.Load()
	if v, ok := all.Load(id.TokenID); ok && v.(*identityValues).identity == id {
		return v.(*identityValues)
	}
	v := newIdentityValues(id, names)
	if c.n.Add(1) > maxCachedIdentities {
		c.n.Store(0)
		all = new(sync.Map)
		c.all.Store(all)
	}
	all.Store(id.TokenID, v)
	return v
}

// giveIdentity makes the placeholders of id (user or candidate, by which)
// known to r's replacer repl; a user's identity is noted on the request
// for a later check on its route (varChecked).
func giveIdentity(r *http.Request, repl *caddy.Replacer, id verifier.Identity, candidate bool, names scopeNamer) {
	v := identities.of(id, names)
	if candidate {
		repl.Map(v.candidate)
		return
	}
	repl.Map(v.user)
	caddyhttp.SetVar(r.Context(), varChecked, v)
}
