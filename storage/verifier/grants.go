package verifier

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Scopes are decided as bit masks, so that a request's check is two ANDs
// on words its token's slot and user already hold. Every scope name the
// verifier meets (in a route's policy or in a token's or user's record)
// is given a bit the first time, and keeps it for the verifier's life:
// a policy compiled by one config stays right while another config is
// being provisioned beside it. Names met beyond the first maxScopeBits
// share bitUnnamed, which no route declares, so a token carrying one is
// refused on scoped routes, as a token carrying any scope the node does
// not declare is.
//
// Allowed networks are a number per token too: the index of its list of
// prefixes in a table of the distinct lists, which are few.

const (
	maxScopeBits = 63
	bitUnnamed   = uint64(1) << maxScopeBits
)

// grants interns scope names and network lists. Writers take mu; readers
// on the request path read only the published tables. What it interns is
// never forgotten while the verifier lives: distinct scope sets and
// network lists, which only administrators make, are few.
type grants struct {
	mu       sync.RWMutex
	bits     map[string]uint64 // one name -> its bit
	sets     map[string]uint64 // a space-separated set -> its mask
	names    [maxScopeBits]string
	numNames int
	// strings caches each effective mask's sorted, space-separated names
	// for the {http.auth.user.scopes} placeholder: made once per mask.
	stringsMu sync.RWMutex
	strings   map[uint64]string

	netIDs map[string]uint32                // a space-separated list -> its number
	nets   atomic.Pointer[[][]netip.Prefix] // by number; 0 is "any network"
}

func newGrants() *grants {
	g := &grants{bits: map[string]uint64{}, sets: map[string]uint64{}, netIDs: map[string]uint32{}, strings: map[uint64]string{}}
	g.nets.Store(&[][]netip.Prefix{nil})
	return g
}

// maskOf returns the mask of a space-separated set of scope names, giving
// new names their bits.
func (g *grants) maskOf(set []byte) uint64 {
	if len(set) == 0 {
		return 0
	}
	g.mu.RLock()
	m, ok := g.sets[string(set)] // no allocation: the compiler optimizes map[string(b)]
	g.mu.RUnlock()
	if ok {
		return m
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, name := range bytes.Fields(set) {
		m |= g.bitLocked(string(name))
	}
	g.sets[string(set)] = m
	return m
}

// bitLocked returns the bit of a name, giving it one if it has none; the
// caller holds mu.
func (g *grants) bitLocked(name string) uint64 {
	if b, ok := g.bits[name]; ok {
		return b
	}
	if g.numNames == maxScopeBits {
		return bitUnnamed
	}
	b := uint64(1) << g.numNames
	g.names[g.numNames] = name
	g.numNames++
	g.bits[name] = b
	return b
}

// maxCachedScopeStrings bounds namesOf's cache: the distinct effective
// masks in use, which are few (a token's own scopes within its user's).
const maxCachedScopeStrings = 4096

// namesOf returns the sorted, space-separated names of the scopes in m.
// It allocates once per distinct mask.
func (g *grants) namesOf(m uint64) string {
	if m == 0 {
		return ""
	}
	g.stringsMu.RLock()
	s, ok := g.strings[m]
	g.stringsMu.RUnlock()
	if ok {
		return s
	}
	s = strings.Join(g.nameList(m), " ")
	g.stringsMu.Lock()
	if len(g.strings) < maxCachedScopeStrings {
		g.strings[m] = s
	}
	g.stringsMu.Unlock()
	return s
}

// nameList returns the sorted names of the scopes in m that have a bit.
func (g *grants) nameList(m uint64) []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var names []string
	for i := 0; i < g.numNames; i++ {
		if m&(1<<i) != 0 {
			names = append(names, g.names[i])
		}
	}
	sort.Strings(names)
	return names
}

// networksOf returns the number of a space-separated list of canonical
// prefixes (0 for an empty one: any network).
func (g *grants) networksOf(list []byte) (uint32, error) {
	if len(list) == 0 {
		return 0, nil
	}
	g.mu.RLock()
	id, ok := g.netIDs[string(list)]
	g.mu.RUnlock()
	if ok {
		return id, nil
	}
	var prefixes []netip.Prefix
	for _, f := range bytes.Fields(list) {
		p, err := netip.ParsePrefix(string(f))
		if err != nil {
			return 0, fmt.Errorf("verifier: allowed network %q: %v", f, err)
		}
		prefixes = append(prefixes, p)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if id, ok := g.netIDs[string(list)]; ok {
		return id, nil
	}
	old := *g.nets.Load()
	id = uint32(len(old))
	g.nets.Store(ptr(append(old[:len(old):len(old)], prefixes)))
	g.netIDs[string(list)] = id
	return id, nil
}

func ptr[T any](v T) *T { return &v }

// allows reports whether client is in the networks numbered id. An
// IPv4-mapped IPv6 address is its IPv4 address; an address the request
// did not give (the zero Addr) is in no network.
func (g *grants) allows(id uint32, client netip.Addr) bool {
	if id == 0 {
		return true
	}
	client = client.Unmap()
	for _, p := range (*g.nets.Load())[id] {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// Policy compiles what a route asks of a token: its required scopes
// (each must be held), the scopes this node declares (a token holding
// any other is refused on the route), whether missing scopes are only
// counted (shadow), and whether only administrators pass. It returns an
// error when the names cannot all have bits.
func (v *Verifier) Policy(required, declared []string, shadow, admin bool) (Policy, error) {
	g := v.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	p := Policy{Admin: admin, Shadow: shadow}
	for _, name := range declared {
		p.declared |= g.bitLocked(name)
	}
	for _, name := range required {
		p.required |= g.bitLocked(name)
	}
	if (p.declared|p.required)&bitUnnamed != 0 {
		return Policy{}, fmt.Errorf("verifier: more than %d distinct scope names are in use; a route cannot require more", maxScopeBits)
	}
	if p.required&^p.declared != 0 {
		return Policy{}, fmt.Errorf("verifier: a required scope is not declared")
	}
	return p, nil
}

// ScopeNames returns the sorted, space-separated names of the scopes in
// mask (an Identity's Scopes): allocated once per distinct mask.
func (v *Verifier) ScopeNames(mask uint64) string { return v.grants.namesOf(mask) }

// ScopeList returns the sorted names of the scopes in mask.
func (v *Verifier) ScopeList(mask uint64) []string { return v.grants.nameList(mask) }
