package caddymodule

import (
	"fmt"
	"hash/maphash"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// The placeholders of a token follow its identity: a promoted user's next
// request says admin=true. Two tokens in use whose front slots collide
// are both answered without an allocation, from the map behind.
func TestIdentityPlaceholdersFollowTheIdentity(t *testing.T) {
	c := &identityCache{seed: maphash.MakeSeed()}
	c.all.Store(new(sync.Map))
	alice := verifier.Identity{Username: "alice", TokenID: "tok_00000000000000000001", Kind: secret.Permanent}
	repl := caddy.NewReplacer()
	repl.Map(c.of(alice, noScopes{}).user)
	if got := repl.ReplaceAll("{http.auth.user.id} {http.auth.user.token_id} {http.auth.user.token_kind} {http.auth.user.admin}", ""); got != "alice tok_00000000000000000001 permanent false" {
		t.Fatalf("placeholders = %q", got)
	}
	promoted := alice
	promoted.Admin = true
	repl = caddy.NewReplacer()
	repl.Map(c.of(promoted, noScopes{}).candidate)
	if got := repl.ReplaceAll("{http.auth.candidate.id} {http.auth.candidate.admin}", ""); got != "alice true" {
		t.Fatalf("after promotion, candidate placeholders = %q", got)
	}

	other := sameFrontSlot(c, promoted)
	c.of(other, noScopes{})
	if a := testing.AllocsPerRun(100, func() {
		if c.of(promoted, noScopes{}).identity != promoted || c.of(other, noScopes{}).identity != other {
			t.Fatal("a token got another's placeholders")
		}
	}); a != 0 {
		t.Fatalf("two tokens sharing a front slot allocate %.0f times a round", a)
	}
}

// sameFrontSlot returns an identity whose token id takes id's front slot.
func sameFrontSlot(c *identityCache, id verifier.Identity) verifier.Identity {
	want := maphash.String(c.seed, id.TokenID) % frontSlots
	for i := 2; ; i++ {
		other := verifier.Identity{Username: "bob", TokenID: fmt.Sprintf("tok_%020x", i), Kind: secret.Temporary}
		if maphash.String(c.seed, other.TokenID)%frontSlots == want {
			return other
		}
	}
}

// noScopes names no scope.
type noScopes struct{}

func (noScopes) ScopeNames(uint64) string { return "" }
