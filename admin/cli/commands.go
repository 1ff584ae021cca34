package cli

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/apitokens/caddy-api-tokens/admin/client"
)

// group is a command that only holds subcommands. Being runnable makes
// cobra refuse an unknown subcommand with an error (exit 1) instead of
// printing help and succeeding.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(subs...)
	return cmd
}

func loginCommand(env *Env) *cobra.Command {
	var c conn
	var user, out string
	var sf scopeFlags
	cmd := &cobra.Command{
		Use:   "login --url URL --user NAME [--scope S ... | --no-scopes] [--token-out FILE] < password",
		Short: "Logs in and prints a temporary token (or writes it to --token-out, mode 0600)",
		Long: `Logs in with a username and password and prints the temporary token of the
session on standard output, or writes it to --token-out (mode 0600) to use
with --token-file. The password is read at a prompt without echo, or from
the first line of standard input; never from a flag. The session carries
all of the user's scopes, or only those --scope names.`,
		Args: cobra.NoArgs,
	}
	c.flags(cmd, false)
	cmd.Flags().StringVar(&user, "user", "", "the username (required)")
	cmd.Flags().StringVar(&out, "token-out", "", "write the token to this file (0600) instead of standard output")
	sf.add(cmd, "a session with only these of the user's scopes", "a session without any scope")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		if user == "" {
			return usageError("--user is required")
		}
		scopes, err := sf.list()
		if err != nil {
			return err
		}
		cl, err := c.client(env, false)
		if err != nil {
			return err
		}
		sink, err := newSecretOut(out)
		if err != nil {
			return err
		}
		defer sink.discard()
		password, err := readSecret(env, "Password for "+user+": ")
		if err != nil {
			return err
		}
		var s client.Session
		if scopes != nil {
			s, err = cl.LoginWithScopes(ctxOr(ctx), user, password, *scopes)
		} else {
			s, err = cl.Login(ctxOr(ctx), user, password)
		}
		if err != nil {
			return err
		}
		if c.json {
			if out == "" {
				return printJSON(env.stdout(), s)
			}
			sink.write(env, s.Secret)
			s.Secret = ""
			return printJSON(env.stdout(), struct {
				ID        string      `json:"id"`
				Kind      string      `json:"kind"`
				ExpiresAt time.Time   `json:"expires_at"`
				Scopes    []string    `json:"scopes"`
				User      client.User `json:"user"`
			}{s.ID, s.Kind, s.ExpiresAt, s.Scopes, s.User})
		}
		if sink.write(env, s.Secret) {
			fmt.Fprintf(env.stderr(), "logged in as %s (scopes: %s); the session token is in %s (use --token-file %s) until %s\n",
				s.User.Username, scopesText(s.Scopes), out, out, when(s.ExpiresAt))
		} else {
			fmt.Fprintf(env.stderr(), "logged in as %s (scopes: %s) until %s\n", s.User.Username, scopesText(s.Scopes), when(s.ExpiresAt))
		}
		return nil
	})
	return cmd
}

func logoutCommand(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "Ends the login session of the token",
		Args:  cobra.NoArgs,
	}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		if err := cl.Logout(ctxOr(ctx)); err != nil {
			return err
		}
		fmt.Fprintln(env.stderr(), "logged out")
		return nil
	})
	return cmd
}

func whoamiCommand(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "whoami", Short: "Shows the user the token belongs to", Args: cobra.NoArgs}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		u, err := cl.Me(ctxOr(ctx))
		if err != nil {
			return err
		}
		return c.printUsers([]client.User{u}, env)
	})
	return cmd
}

func tokensCommand(env *Env) *cobra.Command {
	return group("tokens", "Lists, shows, creates, narrows, rotates and deletes API tokens; reports unused scopes",
		tokensList(env), tokensGet(env), tokensCreate(env), tokensNarrow(env), tokensRotate(env), tokensDelete(env),
		tokensUnusedScopes(env))
}

func tokensList(env *Env) *cobra.Command {
	var c conn
	var within, kind string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [USER] [--expiring-within 30d] [--kind permanent|temporary] [--limit N]",
		Short: "Lists tokens: all of them (administrators), or one user's",
		Long: `Lists tokens: all of them (administrators), or one user's, by user and
creation time; with --expiring-within, by expiry, soonest first. The list
is read from the server a page at a time; --limit stops after N tokens.`,
		Args: cobra.MaximumNArgs(1),
	}
	c.flags(cmd, true)
	cmd.Flags().StringVar(&within, "expiring-within", "", "only tokens expiring within this duration (e.g. 30d), expired ones included")
	cmd.Flags().StringVar(&kind, "kind", "", "only permanent or temporary tokens")
	limitFlag(cmd, &limit, "tokens")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.listClient(env, limit)
		if err != nil {
			return err
		}
		var toks []client.Token
		switch {
		case len(args) == 1 && within == "" && kind == "":
			toks, err = take(cl.UserTokens(ctxOr(ctx), args[0]), limit, nil)
		default:
			// The server filters by expiry and kind; one user's tokens
			// are picked here.
			var mine func(client.Token) bool
			if len(args) == 1 {
				mine = func(t client.Token) bool { return t.User == args[0] }
			}
			toks, err = take(cl.Tokens(ctxOr(ctx), client.TokenFilter{ExpiringWithin: within, Kind: kind}), limit, mine)
		}
		if err != nil {
			return err
		}
		return c.printTokens(toks, env)
	})
	return cmd
}

func (c *conn) printTokens(toks []client.Token, env *Env) error {
	if c.json {
		return printJSON(env.stdout(), toks)
	}
	rows := make([][]string, len(toks))
	for i, t := range toks {
		rows[i] = []string{t.ID, t.User, t.Name, t.Kind, t.Status, scopesCell(t.Scopes), networksText(t.AllowedCIDRs),
			when(t.ExpiresAt), whenPtr(t.LastUsedAt), t.LastUsedIP, t.CreatedBy}
	}
	return table(env.stdout(), []string{"ID", "USER", "NAME", "KIND", "STATUS", "SCOPES", "NETWORKS", "EXPIRES", "LAST USED", "LAST IP", "CREATED BY"}, rows)
}

func tokensGet(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "get USER ID",
		Short: "Shows one token (never its secret) and the use of its scopes",
		Long: `Shows one token (never its secret), then, for each scope it holds or a
shadow route found it without, when a request last needed the scope and
when a shadow route (scope_mode shadow) last found it missing. Uses are
written in batches, so they show up to about 30 s late.`,
		Args: cobra.ExactArgs(2),
	}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		t, err := cl.GetToken(ctxOr(ctx), args[0], args[1])
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(env.stdout(), t)
		}
		if err := c.printTokens([]client.Token{t}, env); err != nil {
			return err
		}
		return printScopeUsage(env, t)
	})
	return cmd
}

// limitFlag adds --limit, where the list commands stop.
func limitFlag(cmd *cobra.Command, limit *int, what string) {
	cmd.Flags().IntVar(limit, "limit", 0, "show at most this many "+what+" (default: all)")
}

// listClient is the client of a list command: it asks for pages of up to
// 1000 items, or of limit if fewer, so a long list takes few requests and
// a short one reads no more than it shows.
func (c *conn) listClient(env *Env, limit int) (*client.Client, error) {
	if limit < 0 {
		return nil, usageError("--limit must not be negative")
	}
	cl, err := c.client(env, true)
	if err != nil {
		return nil, err
	}
	cl.PageSize = 1000
	if limit > 0 {
		cl.PageSize = min(limit, 1000)
	}
	return cl, nil
}

// take collects the items of a list that keep accepts (nil: all), up to
// limit of them (0: no limit), and stops reading the list there.
func take[T any](items iter.Seq2[T, error], limit int, keep func(T) bool) ([]T, error) {
	out := []T{}
	for it, err := range items {
		if err != nil {
			return nil, err
		}
		if keep != nil && !keep(it) {
			continue
		}
		if out = append(out, it); len(out) == limit {
			break
		}
	}
	return out, nil
}

// newTokenFlags are the output flags of create and rotate.
type newTokenFlags struct {
	conn
	secretFile string
}

func (f *newTokenFlags) add(cmd *cobra.Command) {
	f.flags(cmd, true)
	cmd.Flags().StringVar(&f.secretFile, "secret-file", "", "write the secret to this file (0600) instead of standard output")
}

// emit shows a new token: the secret on standard output (or in the secret
// file), what it is on standard error. With --json and --secret-file, the
// metadata goes to standard output as JSON (--json alone prints the whole
// answer, secret included, before emit is reached).
func (f *newTokenFlags) emit(env *Env, sink *secretOut, verb string, t client.NewToken) error {
	inFile := sink.write(env, t.Secret)
	if f.json {
		return printJSON(env.stdout(), t.Token)
	}
	where := "above, on standard output"
	if inFile {
		where = "in " + f.secretFile
	}
	fmt.Fprintf(env.stderr(), "%s token %s %q of %s (scopes: %s; networks: %s), expires %s; the secret is %s and is shown only this once\n",
		verb, t.ID, t.Name, t.User, scopesText(t.Scopes), networksText(t.AllowedCIDRs), when(t.ExpiresAt), where)
	return nil
}

func (f *newTokenFlags) prepare() (*secretOut, error) { return newSecretOut(f.secretFile) }

func tokensCreate(env *Env) *cobra.Command {
	var f newTokenFlags
	var expires string
	var sf scopeFlags
	var cidrs []string
	cmd := &cobra.Command{
		Use:   "create USER NAME [--scope S ... | --no-scopes] [--allow-cidr CIDR ...] [--expires-at TIME] [--secret-file FILE]",
		Short: "Creates a permanent token for a user (administrators); prints its secret once",
		Long: `Creates a permanent token for a user and prints its secret once. The token
carries the user's scopes as they are now, or only those --scope names
(each one the user holds; 'caddy api-tokens scopes' lists them), or none
with --no-scopes. It works from any network, or only from those
--allow-cidr names. Give it only what its job needs: 'tokens narrow' can
take scopes away later, but none can be added.`,
		Args: cobra.ExactArgs(2),
	}
	f.add(cmd)
	cmd.Flags().StringVar(&expires, "expires-at", "", "an earlier expiry than the default year, as RFC 3339 (2030-01-02T15:04:05Z)")
	sf.add(cmd, "a scope of the token, one the user holds", "a token without any scope (default: the user's scopes)")
	cidrFlag(cmd, &cidrs, "a network the token may be used from, like 10.0.0.0/8; default: any")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		var o client.TokenOptions
		var err error
		if o.AllowedCIDRs, err = checkNames("--allow-cidr", cidrs); err != nil {
			return err
		}
		if cidrs != nil && len(o.AllowedCIDRs) == 0 {
			return usageError("--allow-cidr needs a network like 10.0.0.0/8; leave it out for any network")
		}
		if expires != "" {
			t, err := time.Parse(time.RFC3339, expires)
			if err != nil {
				return usageError("--expires-at %q is not an RFC 3339 time like 2030-01-02T15:04:05Z", expires)
			}
			o.ExpiresAt = t
		}
		if o.Scopes, err = sf.list(); err != nil {
			return err
		}
		cl, err := f.client(env, true)
		if err != nil {
			return err
		}
		sink, err := f.prepare()
		if err != nil {
			return err
		}
		defer sink.discard()
		t, err := cl.CreateTokenWith(ctxOr(ctx), args[0], args[1], o)
		if err != nil {
			return err
		}
		if f.json && f.secretFile == "" {
			return printJSON(env.stdout(), t)
		}
		return f.emit(env, sink, "created", t)
	})
	return cmd
}

func tokensRotate(env *Env) *cobra.Command {
	var f newTokenFlags
	var grace string
	cmd := &cobra.Command{
		Use:   "rotate USER ID [--grace 1h] [--secret-file FILE]",
		Short: "Replaces a permanent token with a new secret (administrators); prints it once",
		Long: `Replaces a permanent token with a new secret of the same name and a fresh
expiry. The old secret keeps working for --grace (default: none), so the
automation using it can be updated first.`,
		Args: cobra.ExactArgs(2),
	}
	f.add(cmd)
	cmd.Flags().StringVar(&grace, "grace", "", "how long the old secret keeps working, e.g. 1h (at most 7d)")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := f.client(env, true)
		if err != nil {
			return err
		}
		sink, err := f.prepare()
		if err != nil {
			return err
		}
		defer sink.discard()
		t, err := cl.RotateToken(ctxOr(ctx), args[0], args[1], grace)
		if err != nil {
			return err
		}
		if f.json && f.secretFile == "" {
			return printJSON(env.stdout(), t)
		}
		return f.emit(env, sink, "rotated to", t)
	})
	return cmd
}

func tokensDelete(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "delete USER ID",
		Short: "Deletes a token; it stops working at once",
		Args:  cobra.ExactArgs(2),
	}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		if err := cl.DeleteToken(ctxOr(ctx), args[0], args[1]); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr(), "deleted token %s of %s\n", args[1], args[0])
		return nil
	})
	return cmd
}

func usersCommand(env *Env) *cobra.Command {
	return group("users", "Lists and manages users",
		usersList(env), usersGet(env), usersCreate(env), usersUpdate(env), usersDelete(env))
}

func (c *conn) printUsers(users []client.User, env *Env) error {
	if c.json {
		if len(users) == 1 {
			return printJSON(env.stdout(), users[0])
		}
		return printJSON(env.stdout(), users)
	}
	rows := make([][]string, len(users))
	for i, u := range users {
		scopes := scopesCell(u.Scopes)
		if u.Admin {
			scopes = "(every scope)"
		}
		rows[i] = []string{u.Username, u.Email, yesNo(u.Admin), yesNo(u.Disabled), scopes, when(u.CreatedAt)}
	}
	return table(env.stdout(), []string{"USERNAME", "EMAIL", "ADMIN", "DISABLED", "SCOPES", "CREATED"}, rows)
}

func usersList(env *Env) *cobra.Command {
	var c conn
	var limit int
	cmd := &cobra.Command{Use: "list [--limit N]", Short: "Lists users by name (administrators)", Args: cobra.NoArgs}
	c.flags(cmd, true)
	limitFlag(cmd, &limit, "users")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		cl, err := c.listClient(env, limit)
		if err != nil {
			return err
		}
		users, err := take(cl.Users(ctxOr(ctx)), limit, nil)
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(env.stdout(), users)
		}
		return c.printUsers(users, env)
	})
	return cmd
}

func usersGet(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "get USER", Short: "Shows one user", Args: cobra.ExactArgs(1)}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		u, err := cl.GetUser(ctxOr(ctx), args[0])
		if err != nil {
			return err
		}
		return c.printUsers([]client.User{u}, env)
	})
	return cmd
}

func usersCreate(env *Env) *cobra.Command {
	var c conn
	var email string
	var admin bool
	var scopes []string
	cmd := &cobra.Command{
		Use:   "create USER [--email ADDRESS] [--admin] [--scope S ...] < password",
		Short: "Creates a user (administrators); the password is read at a prompt or from standard input",
		Long: `Creates a user. The password is read at a prompt or from standard input.
--scope gives the user scopes: the most their tokens may carry (default:
none; an administrator holds every scope).`,
		Args: cobra.ExactArgs(1),
	}
	c.flags(cmd, true)
	cmd.Flags().StringVar(&email, "email", "", "the user's email address")
	cmd.Flags().BoolVar(&admin, "admin", false, "make the user an administrator")
	cmd.Flags().StringSliceVar(&scopes, "scope", nil, "a scope the user's tokens may carry (repeat the flag or separate with commas)")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		names, err := checkNames("--scope", scopes)
		if err != nil {
			return err
		}
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		password, err := readSecret(env, "Password for the new user "+args[0]+": ")
		if err != nil {
			return err
		}
		u, err := cl.CreateUser(ctxOr(ctx), client.NewUser{Username: args[0], Email: email, Password: password, Admin: admin, Scopes: names})
		if err != nil {
			return err
		}
		return c.printUsers([]client.User{u}, env)
	})
	return cmd
}

func usersUpdate(env *Env) *cobra.Command {
	var c conn
	var email string
	var admin, disabled, password bool
	var sf scopeFlags
	cmd := &cobra.Command{
		Use:   "update USER [--email ADDRESS] [--admin=true|false] [--disabled=true|false] [--scope S ... | --no-scopes] [--password < password]",
		Short: "Changes a user's email, password, scopes, admin or disabled flag",
		Long: `Changes what the flags name. Users may change their own email and password,
with a login session (not a permanent token) and their current password;
--admin, --disabled and --scope need an administrator, who changes another
user's email and password without one. Passwords are read at a prompt or
from standard input: the current password first (only for your own user),
then with --password the new one, each on its own line.

--scope replaces the user's scopes, the most their tokens may carry;
--no-scopes takes them all. A scope taken away is refused at once to every
token of the user, on every node.`,
		Args: cobra.ExactArgs(1),
	}
	c.flags(cmd, true)
	cmd.Flags().StringVar(&email, "email", "", "the new email address")
	cmd.Flags().BoolVar(&admin, "admin", false, "make an administrator (true) or not (false)")
	cmd.Flags().BoolVar(&disabled, "disabled", false, "disable (true) or enable (false) the user")
	cmd.Flags().BoolVar(&password, "password", false, "set a new password, read at a prompt or from standard input")
	sf.add(cmd, "the scopes the user's tokens may carry, replacing those they have", "take every scope from the user")
	cmd.RunE = run(env, func(ctx context.Context, cmd *cobra.Command, args []string) error {
		var ch client.UserChange
		var err error
		if ch.Scopes, err = sf.list(); err != nil {
			return err
		}
		fl := cmd.Flags()
		if fl.Changed("email") {
			ch.Email = &email
		}
		if fl.Changed("admin") {
			ch.Admin = &admin
		}
		if fl.Changed("disabled") {
			ch.Disabled = &disabled
		}
		if ch.Email == nil && ch.Admin == nil && ch.Disabled == nil && ch.Scopes == nil && !password {
			return usageError("nothing to change: give --email, --password, --admin, --disabled, --scope or --no-scopes")
		}
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		if ch.Email != nil || password {
			if ch.CurrentPassword, err = currentPasswordIfSelf(ctx, env, cl, args[0]); err != nil {
				return err
			}
		}
		if password {
			p, err := readSecret(env, "New password for "+args[0]+": ")
			if err != nil {
				return err
			}
			ch.Password = &p
		}
		u, err := cl.UpdateUser(ctxOr(ctx), args[0], ch)
		if err != nil {
			return err
		}
		return c.printUsers([]client.User{u}, env)
	})
	return cmd
}

// currentPasswordIfSelf reads the caller's current password when user is
// the caller: the server wants it to change one's own password or email.
func currentPasswordIfSelf(ctx context.Context, env *Env, cl *client.Client, user string) (*string, error) {
	me, err := cl.Me(ctxOr(ctx))
	if err != nil || me.Username != user {
		return nil, err
	}
	p, err := readSecret(env, "Current password for "+user+": ")
	if err != nil {
		return nil, err
	}
	return &p, nil
}

func usersDelete(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "delete USER", Short: "Deletes a user and all their tokens (administrators)", Args: cobra.ExactArgs(1)}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		if err := cl.DeleteUser(ctxOr(ctx), args[0]); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr(), "deleted user %s and their tokens\n", args[0])
		return nil
	})
	return cmd
}

func settingsCommand(env *Env) *cobra.Command {
	return group("settings", "Gets and sets EnableUserTokenNotification and UserTokenExpirationNotificationEmails",
		settingsList(env), settingsGet(env), settingsSet(env), settingsDelete(env))
}

func (c *conn) printSettings(env *Env, settings []client.Setting, one bool) error {
	if c.json {
		if one {
			return printJSON(env.stdout(), settings[0])
		}
		return printJSON(env.stdout(), settings)
	}
	rows := make([][]string, len(settings))
	for i, s := range settings {
		rows[i] = []string{s.Key, s.Value}
	}
	return table(env.stdout(), []string{"KEY", "VALUE"}, rows)
}

func settingsList(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "list", Short: "Lists the settings that are set", Args: cobra.NoArgs}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		s, err := cl.ListSettings(ctxOr(ctx))
		if err != nil {
			return err
		}
		return c.printSettings(env, s, false)
	})
	return cmd
}

func settingsGet(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "get KEY", Short: "Shows one setting", Args: cobra.ExactArgs(1)}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		s, err := cl.GetSetting(ctxOr(ctx), args[0])
		if err != nil {
			return err
		}
		return c.printSettings(env, []client.Setting{s}, true)
	})
	return cmd
}

func settingsSet(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Sets a setting, e.g. EnableUserTokenNotification 30;7;1",
		Args:  cobra.ExactArgs(2),
	}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		s, err := cl.PutSetting(ctxOr(ctx), args[0], args[1])
		if err != nil {
			return err
		}
		return c.printSettings(env, []client.Setting{s}, true)
	})
	return cmd
}

func settingsDelete(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "delete KEY", Short: "Unsets a setting", Args: cobra.ExactArgs(1)}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, args []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		if err := cl.DeleteSetting(ctxOr(ctx), args[0]); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr(), "unset %s\n", args[0])
		return nil
	})
	return cmd
}

func faultsCommand(env *Env) *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "faults",
		Short: "Lists permanent tokens near or past expiry (administrators)",
		Args:  cobra.NoArgs,
	}
	c.flags(cmd, true)
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		cl, err := c.client(env, true)
		if err != nil {
			return err
		}
		faults, err := cl.ListFaults(ctxOr(ctx))
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(env.stdout(), faults)
		}
		rows := make([][]string, len(faults))
		for i, f := range faults {
			rows[i] = []string{f.TokenID, f.User, f.TokenName, f.State, strconv.Itoa(f.DaysLeft), when(f.ExpiresAt), when(f.RaisedAt)}
		}
		return table(env.stdout(), []string{"TOKEN ID", "USER", "NAME", "STATE", "DAYS LEFT", "EXPIRES", "RAISED"}, rows)
	})
	return cmd
}

func auditCommand(env *Env) *cobra.Command {
	var c conn
	var limit int
	cmd := &cobra.Command{Use: "audit [--limit N]", Short: "Shows the newest audit entries (administrators)", Args: cobra.NoArgs}
	c.flags(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 100, "how many entries, newest first")
	cmd.RunE = run(env, func(ctx context.Context, _ *cobra.Command, _ []string) error {
		if limit < 1 {
			return usageError("--limit must be at least 1")
		}
		cl, err := c.listClient(env, limit)
		if err != nil {
			return err
		}
		entries, err := take(cl.Audit(ctxOr(ctx)), limit, nil)
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(env.stdout(), entries)
		}
		rows := make([][]string, len(entries))
		for i, a := range entries {
			rows[i] = []string{when(a.Time), a.Actor, a.Action, a.Target, a.ClientIP, a.Detail}
		}
		return table(env.stdout(), []string{"TIME", "ACTOR", "ACTION", "TARGET", "CLIENT IP", "DETAIL"}, rows)
	})
	return cmd
}
