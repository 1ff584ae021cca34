package storage

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Scope is one entry of the scope catalogue that a node's config declares.
type Scope struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

const (
	maxScopeNameLen = 64
	// MaxScopes bounds a catalogue: the verifier decides scopes as bits of
	// one word.
	MaxScopes = 63
	// maxNetworks bounds a token's allowed networks.
	maxNetworks = 64
)

// ValidateScopeName checks the scope name rule: 1-64 characters of a-z,
// 0-9, '.', '_', ':' and '-'.
func ValidateScopeName(name string) error {
	if name == "" || len(name) > maxScopeNameLen {
		return fmt.Errorf("%w: scope name %q must be 1 to %d characters long", ErrInvalid, short(name), maxScopeNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._:-", c) >= 0) {
			return fmt.Errorf("%w: scope name %q may only contain lowercase letters, digits, '.', '_', ':' and '-'", ErrInvalid, short(name))
		}
	}
	return nil
}

// catalogue is the scopes this node declares, as its config gave them.
type catalogue struct {
	list  []Scope
	names map[string]bool
}

// SetScopes installs the node's scope catalogue, checked by the config
// (ValidateScopeName, no duplicates, at most MaxScopes). Scopes given to
// users and tokens from now on must be in it.
func (s *Store) SetScopes(list []Scope) {
	c := &catalogue{list: slices.Clone(list), names: map[string]bool{}}
	for _, sc := range list {
		c.names[sc.Name] = true
	}
	s.scopes.Store(c)
}

// Scopes returns the node's scope catalogue, in the config's order.
func (s *Store) Scopes() []Scope {
	if c := s.scopes.Load(); c != nil {
		return slices.Clone(c.list)
	}
	return []Scope{}
}

// catalogue returns the Store's current catalogue, never nil.
func (s *Store) catalogue() *catalogue {
	if c := s.scopes.Load(); c != nil {
		return c
	}
	return &catalogue{names: map[string]bool{}}
}

// sortedNames returns the catalogue's scope names, sorted.
func (c *catalogue) sortedNames() []string {
	names := make([]string, 0, len(c.list))
	for _, sc := range c.list {
		names = append(names, sc.Name)
	}
	slices.Sort(names)
	return names
}

// checkScopes validates a list of scopes given for field: each a
// well-formed, declared name, none twice. It returns them sorted.
func (c *catalogue) checkScopes(field string, names []string) ([]string, error) {
	return c.check(field, names, true)
}

func (c *catalogue) check(field string, names []string, declared bool) ([]string, error) {
	if len(names) > MaxScopes {
		return nil, fmt.Errorf("%w: %s: at most %d scopes", ErrInvalid, field, MaxScopes)
	}
	out := slices.Clone(names)
	slices.Sort(out)
	for i, name := range out {
		if err := ValidateScopeName(name); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if declared && !c.names[name] {
			return nil, fmt.Errorf("%w: %s: scope %q is not declared in this gateway's catalogue (GET /scopes lists it)", ErrInvalid, field, name)
		}
		if i > 0 && out[i-1] == name {
			return nil, fmt.Errorf("%w: %s: scope %q is listed twice", ErrInvalid, field, name)
		}
	}
	return orEmpty(out), nil
}

// checkScopeNames validates a list of scope names as checkScopes does,
// declared or not: a token may be narrowed to scopes a node no longer
// declares.
func checkScopeNames(names []string) ([]string, error) {
	return (&catalogue{}).check("scopes", names, false)
}

// declaredOf keeps the scopes of names that the catalogue declares: a
// default must not carry a scope the node no longer knows.
func (c *catalogue) declaredOf(names []string) []string {
	out := []string{}
	for _, n := range names {
		if c.names[n] {
			out = append(out, n)
		}
	}
	return out
}

// ceilingOf is the most a user's tokens may carry: an administrator holds
// every declared scope.
func (c *catalogue) ceilingOf(u *User) []string {
	if u.Admin {
		return c.sortedNames()
	}
	return u.Scopes
}

// beyond returns the first of names that is not in within, or "".
func beyond(names, within []string) string {
	for _, n := range names {
		if !slices.Contains(within, n) {
			return n
		}
	}
	return ""
}

// checkNetworks validates a token's allowed networks: canonical CIDR
// prefixes (10.0.0.0/8, not 10.0.0.1/8), IPv4 or IPv6, none twice, at
// most maxNetworks. An IPv4-mapped IPv6 prefix is refused: write the IPv4
// one. It returns them sorted.
func checkNetworks(cidrs []string) ([]string, error) {
	if len(cidrs) > maxNetworks {
		return nil, fmt.Errorf("%w: allowed_cidrs: at most %d networks", ErrInvalid, maxNetworks)
	}
	prefixes := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: allowed_cidrs: %q is not a CIDR prefix like 10.0.0.0/8 or 2001:db8::/32", ErrInvalid, short(c))
		case p.Addr().Zone() != "":
			return nil, fmt.Errorf("%w: allowed_cidrs: %q has a zone; write the prefix without it", ErrInvalid, short(c))
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%w: allowed_cidrs: %q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix (%s)", ErrInvalid, short(c), unmapPrefix(p))
		case p.Masked() != p:
			return nil, fmt.Errorf("%w: allowed_cidrs: %q is not canonical: its address has bits beyond the prefix length; did you mean %s?", ErrInvalid, short(c), p.Masked())
		case p.String() != c:
			return nil, fmt.Errorf("%w: allowed_cidrs: %q is not canonical; write %s", ErrInvalid, short(c), p)
		}
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := make([]string, len(prefixes))
	for i, p := range prefixes {
		if i > 0 && prefixes[i-1] == p {
			return nil, fmt.Errorf("%w: allowed_cidrs: %s is listed twice", ErrInvalid, p)
		}
		out[i] = p.String()
	}
	return out, nil
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	bits := max(p.Bits()-96, 0)
	return netip.PrefixFrom(p.Addr().Unmap(), bits).Masked()
}

// describeScopes and describeNetworks write lists for audit details.
func describeScopes(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " ")
}

func describeNetworks(cidrs []string) string {
	if len(cidrs) == 0 {
		return "any"
	}
	return strings.Join(cidrs, " ")
}
