package cli

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/apitokens/caddy-api-tokens/admin/client"
)

// scopeFlags are --scope (repeatable or comma-separated) and --no-scopes:
// for scopes, "not said" (the default) and "none" differ.
type scopeFlags struct {
	scopes []string
	none   bool
}

func (f *scopeFlags) add(cmd *cobra.Command, scopeHelp, noneHelp string) {
	cmd.Flags().StringSliceVar(&f.scopes, "scope", nil, scopeHelp+" (repeat the flag or separate with commas)")
	cmd.Flags().BoolVar(&f.none, "no-scopes", false, noneHelp)
}

// list is the scopes the flags ask for: nil when neither was given, an
// empty list for --no-scopes.
func (f *scopeFlags) list() (*[]string, error) {
	if f.none && f.scopes != nil {
		return nil, usageError("give either --scope or --no-scopes, not both")
	}
	if f.none {
		return &[]string{}, nil
	}
	if f.scopes == nil {
		return nil, nil
	}
	names, err := checkNames("--scope", f.scopes)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, usageError("--scope needs a scope name; for none, give --no-scopes")
	}
	return &names, nil
}

// cidrFlag adds --allow-cidr, a repeatable list of networks.
func cidrFlag(cmd *cobra.Command, cidrs *[]string, help string) {
	cmd.Flags().StringSliceVar(cidrs, "allow-cidr", nil, help+" (repeat the flag or separate with commas)")
}

// checkNames cleans the values of a list flag: spaces around a value go
// (so --scope "deploy, reports:read" works), a value given twice counts
// once (the API refuses a list with duplicates), and an empty value, from
// a stray comma, is refused rather than guessed at.
func checkNames(flag string, values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			return nil, usageError("%s %q has an empty value; separate values with single commas", flag, strings.Join(values, ","))
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out, nil
}

// scopesText is a list of scopes in a sentence: "none" when empty.
func scopesText(scopes []string) string {
	if len(scopes) == 0 {
		return "none"
	}
	return strings.Join(scopes, ",")
}

// scopesCell is a list of scopes in a table cell, comma-separated as
// --scope takes them; empty (shown as "-") when there are none.
func scopesCell(scopes []string) string { return strings.Join(scopes, ",") }

// networksText is a token's allowed networks: "any" when not limited, so
// it is not read as "none".
func networksText(cidrs []string) string {
	if len(cidrs) == 0 {
		return "any"
	}
	return strings.Join(cidrs, ",")
}

// printScopeUsage shows, under a token, each scope it holds or a shadow
// route found it without: whether it holds it, when a request last needed
// it, when a shadow route last found it missing.
func printScopeUsage(env *Env, t client.Token) error {
	names := slices.Clone(t.Scopes)
	for n := range t.ScopeUsage {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	rows := make([][]string, len(names))
	for i, n := range names {
		use := t.ScopeUsage[n]
		rows[i] = []string{n, yesNo(slices.Contains(t.Scopes, n)), whenPtr(use.LastNeededAt), whenPtr(use.LastMissingAt)}
	}
	fmt.Fprintln(env.stdout())
	return table(env.stdout(), []string{"SCOPE", "HELD", "LAST NEEDED", "LAST MISSING IN SHADOW"}, rows)
}

func scopesCommand(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "scopes",
		Short: "Lists the scopes the gateway declares, which users and tokens may carry",
		Long: `Lists the scope catalogue: the scopes the api_tokens config declares (its
'scope NAME "description"' lines), which users and tokens may carry and
routes may require. Any user may list it.`,
		Args: cobra.NoArgs,
	}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		scopes, err := cl.ListScopes(ctxOr(ctx))
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(env.stdout(), scopes)
		}
		rows := make([][]string, len(scopes))
		for i, s := range scopes {
			rows[i] = []string{s.Name, s.Description}
		}
		return table(env.stdout(), []string{"NAME", "DESCRIPTION"}, rows)
	})
	return cmd
}

func tokensNarrow(env *Env) *cobra.Command {
	var c conn
	var sf scopeFlags
	var cidrs []string
	var anyNetwork bool
	cmd := &cobra.Command{
		Use:   "narrow USER ID [--scope S ... | --no-scopes] [--allow-cidr CIDR ... | --any-network]",
		Short: "Takes scopes away from a token, or changes its networks (administrators)",
		Long: `Narrows a token, at once and on every node. --scope names the scopes it
keeps, some of those it has (a scope cannot be added: create a new token
for it); --no-scopes takes them all. --allow-cidr replaces the networks it
may be used from; --any-network lifts that limit. 'tokens unused-scopes'
prints this command for each token's unused scopes.`,
		Args: cobra.ExactArgs(2),
	}
	c.flags(cmd, true)
	sf.add(cmd, "a scope the token keeps; those not named are removed", "remove every scope from the token")
	cidrFlag(cmd, &cidrs, "a network the token may be used from, like 10.0.0.0/8, replacing its networks")
	cmd.Flags().BoolVar(&anyNetwork, "any-network", false, "let the token be used from any network")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		var ch client.TokenChange
		var err error
		if ch.Scopes, err = sf.list(); err != nil {
			return err
		}
		names, err := checkNames("--allow-cidr", cidrs)
		switch {
		case err != nil:
			return err
		case anyNetwork && cidrs != nil:
			return usageError("give either --allow-cidr or --any-network, not both")
		case anyNetwork:
			ch.AllowedCIDRs = &[]string{}
		case len(names) > 0:
			ch.AllowedCIDRs = &names
		case cidrs != nil:
			return usageError("--allow-cidr needs a network like 10.0.0.0/8; for any, give --any-network")
		}
		if ch.Scopes == nil && ch.AllowedCIDRs == nil {
			return usageError("nothing to change: give --scope, --no-scopes, --allow-cidr or --any-network")
		}
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		t, err := cl.UpdateToken(ctxOr(ctx), args[0], args[1], ch)
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(env.stdout(), t)
		}
		return c.printTokens([]client.Token{t}, env)
	})
	return cmd
}

// scopeReport is one line of `tokens unused-scopes`.
type scopeReport struct {
	User    string `json:"user"`
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	// Unused are scopes the token holds that no request needed within the
	// period.
	Unused []string `json:"unused_scopes"`
	// Missing are scopes a shadow route found the token without within
	// the period: what it would need if those routes were enforced.
	Missing []string `json:"missing_in_shadow"`
	// Narrow is the command that removes the unused scopes; empty when
	// there are none.
	Narrow string `json:"narrow_command,omitempty"`
}

func tokensUnusedScopes(env *Env) *cobra.Command {
	var c conn
	var days int
	var user string
	cmd := &cobra.Command{
		Use:   "unused-scopes [--days 30] [--user USER]",
		Short: "Reports the scopes each token holds but has not used, and those shadow routes found missing",
		Long: `Reports, for each active permanent token created more than --days ago
(of every user, for administrators, or of --user), the scopes it holds
that no request needed in the last --days days, and the scopes that a
shadow route (scope_mode shadow) found it without in that time: what it
would need once those routes are enforced. A newer token is not reported:
it has not had the time to use its scopes.

After the table comes, for each token with unused scopes, the command that
removes them ('tokens narrow'), to run once checked; add --url and
--token-file if you do not set them in the environment.

A scope counts as used when a route with require_scope needed it; a scope
that no route requires is never used. Uses are written in batches, up to
about 30 s late.`,
		Args: cobra.NoArgs,
	}
	c.flags(cmd, true)
	cmd.Flags().IntVar(&days, "days", 30, "the period, in days: scopes not needed in it are unused")
	cmd.Flags().StringVar(&user, "user", "", "only this user's tokens (default: every user's, for administrators)")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		if days < 1 {
			return usageError("--days must be at least 1")
		}
		cl, err := c.listClient(env, 0)
		if err != nil {
			return err
		}
		var toks iter.Seq2[client.Token, error]
		if user != "" {
			toks = cl.UserTokens(ctxOr(ctx), user)
		} else {
			toks = cl.Tokens(ctxOr(ctx), client.TokenFilter{Kind: "permanent"})
		}
		since := env.now().UTC().AddDate(0, 0, -days)
		report := []scopeReport{}
		checked := 0
		for t, err := range toks {
			if err != nil {
				return err
			}
			// A login session lasts hours, and a token being rotated
			// away (rotated_to) or no longer active is not worth
			// narrowing.
			if t.Kind != "permanent" || t.Status != "active" || t.RotatedTo != "" || !t.CreatedAt.Before(since) {
				continue
			}
			checked++
			if r := unusedScopes(t, since); len(r.Unused) > 0 || len(r.Missing) > 0 {
				report = append(report, r)
			}
		}
		if c.json {
			return printJSON(env.stdout(), report)
		}
		rows := make([][]string, len(report))
		for i, r := range report {
			rows[i] = []string{r.User, r.TokenID, r.Name, scopesCell(r.Unused), scopesCell(r.Missing)}
		}
		if err := table(env.stdout(), []string{"USER", "TOKEN ID", "NAME", "UNUSED SCOPES", "MISSING IN SHADOW"}, rows); err != nil {
			return err
		}
		narrowed := 0
		for _, r := range report {
			if r.Narrow != "" {
				if narrowed == 0 {
					fmt.Fprintln(env.stdout())
				}
				fmt.Fprintln(env.stdout(), r.Narrow)
				narrowed++
			}
		}
		fmt.Fprintf(env.stderr(), "checked %d active permanent tokens created more than %d days ago: %d with scopes not needed since %s\n",
			checked, days, narrowed, when(since))
		return nil
	})
	return cmd
}

// unusedScopes is what t did with its scopes since a time.
func unusedScopes(t client.Token, since time.Time) scopeReport {
	r := scopeReport{User: t.User, TokenID: t.ID, Name: t.Name, Unused: []string{}, Missing: []string{}}
	var kept []string
	for _, s := range t.Scopes {
		if at := t.ScopeUsage[s].LastNeededAt; at == nil || at.Before(since) {
			r.Unused = append(r.Unused, s)
		} else {
			kept = append(kept, s)
		}
	}
	for s, use := range t.ScopeUsage {
		if at := use.LastMissingAt; at != nil && !at.Before(since) {
			r.Missing = append(r.Missing, s)
		}
	}
	slices.Sort(r.Missing)
	if len(r.Unused) > 0 {
		// The names of users, token ids and scopes need no shell quoting:
		// the API allows only letters, digits and . _ : - in them.
		r.Narrow = "caddy api-tokens tokens narrow " + t.User + " " + t.ID + " --no-scopes"
		if len(kept) > 0 {
			r.Narrow = "caddy api-tokens tokens narrow " + t.User + " " + t.ID + " --scope " + strings.Join(kept, ",")
		}
	}
	return r
}
