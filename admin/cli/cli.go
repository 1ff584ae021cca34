// Package cli is the day-to-day command line of the admin API: log in,
// list, create, narrow, rotate and delete tokens, report the scopes they
// do not use, manage users and their scopes, list the scope catalogue,
// get and set the settings, list faults and the audit log, against a
// running gateway. It
// is built on package client and has no Caddy dependency; caddymodule
// wires its commands into `caddy api-tokens`.
//
// The API token is read from a file (--token-file or API_TOKENS_TOKEN_FILE)
// or from API_TOKENS_TOKEN, never from a flag, so it does not show in ps.
// Output is a table, or JSON with --json. A created or rotated secret goes
// only to standard output, or to --secret-file (mode 0600). Exit codes:
// see the Exit constants.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/apitokens/caddy-api-tokens/admin/client"
)

// Exit codes of the commands.
const (
	// ExitOK: done.
	ExitOK = 0
	// ExitUsage: bad flags or arguments, or local input that cannot be
	// used (a missing or empty token file, an unwritable output file).
	ExitUsage = 1
	// ExitRefused: the server answered with a 4xx: a bad or expired token,
	// not allowed, not found, a conflict, a value it refuses.
	ExitRefused = 2
	// ExitUnavailable: the server could not be reached, timed out, or
	// answered with a 5xx; trying again later may work.
	ExitUnavailable = 3
)

// Environment variables the commands read.
const (
	EnvURL       = "API_TOKENS_URL"
	EnvTokenFile = "API_TOKENS_TOKEN_FILE"
	EnvToken     = "API_TOKENS_TOKEN"
)

// ExitCodesHelp describes the exit codes, for help texts.
const ExitCodesHelp = `Exit codes: 0 done; 1 bad flags, arguments or local input (e.g. a missing
or empty token file); 2 the server refused the request (a 4xx: bad or
expired token, not allowed, not found, conflict, invalid value); 3 the
server could not be reached, timed out, or failed (a 5xx).`

// Env is what the commands read and write. Zero fields mean the process's
// own standard streams and environment.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Exit, if set, is called with the exit code of a failed command (Caddy
	// passes os.Exit). Without it the command returns an error that
	// ExitCode maps.
	Exit func(code int)
	// HTTPClient, if set, sends the requests (tests check them against the
	// OpenAPI document with it); its Timeout is set from --timeout.
	HTTPClient *http.Client
	// Now, if set, is the time (tests of reports over days set the
	// gateway's fake clock); nil means time.Now.
	Now func() time.Time

	lines *bufio.Reader // standard input, when secrets are read from it line by line
}

func (e *Env) stdin() io.Reader {
	if e.Stdin == nil {
		return os.Stdin
	}
	return e.Stdin
}

func (e *Env) stdout() io.Writer {
	if e.Stdout == nil {
		return os.Stdout
	}
	return e.Stdout
}

func (e *Env) stderr() io.Writer {
	if e.Stderr == nil {
		return os.Stderr
	}
	return e.Stderr
}

func (e *Env) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

func (e *Env) getenv(k string) string {
	if e.Getenv == nil {
		return os.Getenv(k)
	}
	return e.Getenv(k)
}

// exitError carries a failed command's exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks an error as the user's input.
func usageError(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// ExitCode returns the exit code for an error a command returned.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	if ee, ok := errors.AsType[*exitError](err); ok {
		return ee.code
	}
	if ae, ok := errors.AsType[*client.Error](err); ok {
		if ae.Status >= 500 {
			return ExitUnavailable
		}
		return ExitRefused
	}
	if _, ok := errors.AsType[*client.UnreachableError](err); ok {
		return ExitUnavailable
	}
	return ExitUsage
}

// message words an error for the user.
func message(err error) string {
	if ae, ok := errors.AsType[*client.Error](err); ok {
		msg := fmt.Sprintf("the server refused %s %s: %d %s: %s", ae.Method, ae.Path, ae.Status, http.StatusText(ae.Status), ae.Message)
		if ae.Status >= 500 {
			msg = fmt.Sprintf("the server failed %s %s: %d %s: %s", ae.Method, ae.Path, ae.Status, http.StatusText(ae.Status), ae.Message)
		}
		switch {
		case ae.Status == 401:
			msg += " (check the token: --token-file, " + EnvTokenFile + " or " + EnvToken + "; a login session expires)"
		case ae.RetryAfter > 0:
			msg += fmt.Sprintf(" (retry after %s)", ae.RetryAfter)
		}
		return msg
	}
	return err.Error()
}

// Commands returns the commands, for `caddy api-tokens`.
func Commands(env *Env) []*cobra.Command {
	return []*cobra.Command{
		loginCommand(env), logoutCommand(env), whoamiCommand(env),
		tokensCommand(env), usersCommand(env), scopesCommand(env),
		settingsCommand(env), faultsCommand(env), auditCommand(env),
	}
}

// Execute runs the commands with args as `api-tokens` would (for tests and
// embedding) and returns the exit code. Errors are written to env's
// standard error.
func Execute(env *Env, args []string) int {
	root := &cobra.Command{Use: "api-tokens", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(Commands(env)...)
	root.SetArgs(args)
	root.SetIn(env.stdin())
	root.SetOut(env.stdout())
	root.SetErr(env.stderr())
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	if _, handled := errors.AsType[*exitError](err); !handled {
		// A cobra error: an unknown flag or command, a wrong number of
		// arguments.
		fmt.Fprintf(env.stderr(), "caddy api-tokens: %v\n", err)
	}
	return ExitCode(err)
}

// conn is how a command reaches the API: the flags every command has.
type conn struct {
	url       string
	tokenFile string
	json      bool
	timeout   time.Duration
}

func (c *conn) flags(cmd *cobra.Command, needsToken bool) {
	f := cmd.Flags()
	f.StringVar(&c.url, "url", "", "base URL of the api_token_admin handler, e.g. http://localhost:8080/api-tokens (default $"+EnvURL+")")
	if needsToken {
		f.StringVar(&c.tokenFile, "token-file", "", "file holding the API token (default $"+EnvTokenFile+", else the token in $"+EnvToken+")")
	}
	f.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	f.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up on the server after this long")
}

// client builds the API client from the flags and the environment.
func (c *conn) client(env *Env, needsToken bool) (*client.Client, error) {
	base := c.url
	if base == "" {
		base = env.getenv(EnvURL)
	}
	if base == "" {
		return nil, usageError("no server: give --url (e.g. http://localhost:8080/api-tokens) or set %s", EnvURL)
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError("--url %q is not an http:// or https:// URL like http://localhost:8080/api-tokens", client.Redact(base))
	}
	cl := &client.Client{BaseURL: base, UserAgent: "caddy-api-tokens-cli"}
	if env.HTTPClient != nil {
		h := *env.HTTPClient
		cl.HTTP = &h
	} else {
		cl.HTTP = &http.Client{}
	}
	cl.HTTP.Timeout = c.timeout
	if needsToken {
		token, err := c.token(env)
		if err != nil {
			return nil, err
		}
		cl.Token = token
	}
	return cl, nil
}

// token reads the API token. Its value is never put in a message.
func (c *conn) token(env *Env) (string, error) {
	path, from := c.tokenFile, "--token-file"
	if path == "" {
		path, from = env.getenv(EnvTokenFile), EnvTokenFile
	}
	if path == "" {
		t := strings.TrimSpace(env.getenv(EnvToken))
		if t == "" {
			return "", usageError("no API token: give --token-file FILE, or set %s (a file) or %s", EnvTokenFile, EnvToken)
		}
		if strings.ContainsAny(t, " \t\r\n") {
			return "", usageError("%s must hold exactly one API token", EnvToken)
		}
		return t, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageError("%s: cannot read the token file: %v", from, errors.Unwrap(err))
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", usageError("%s %s is empty; it must hold one API token", from, path)
	}
	if strings.ContainsAny(t, " \t\r\n") {
		return "", usageError("%s %s must hold exactly one API token, on one line", from, path)
	}
	return t, nil
}

// run wraps a command's action: it reports a failure on standard error
// and exits with its code (through env.Exit, when set).
func run(env *Env, fn func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cmd.SilenceUsage = true
		cmd.SilenceErrors = true
		err := fn(cmd.Context(), cmd, args)
		if err == nil {
			return nil
		}
		code := ExitCode(err)
		fmt.Fprintf(env.stderr(), "%s: %s\n", commandPath(cmd), message(err))
		if env.Exit != nil {
			env.Exit(code)
		}
		return &exitError{code: code, err: err}
	}
}

// commandPath names the command as the user typed it.
func commandPath(cmd *cobra.Command) string {
	p := cmd.CommandPath()
	if !strings.HasPrefix(p, "caddy ") {
		p = "caddy " + p
	}
	return p
}

// ctxOr returns ctx, or a background context when cobra gave none.
func ctxOr(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, aligned with tabs.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i := range r {
			if r[i] == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04Z")
}

func whenPtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return when(*t)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// readSecret reads a password: from a terminal with a prompt and no echo,
// else the next line of standard input.
func readSecret(env *Env, prompt string) (string, error) {
	in := env.stdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(env.stderr(), prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr())
		if err != nil {
			return "", usageError("reading the password: %v", err)
		}
		return string(b), nil
	}
	if env.lines == nil {
		env.lines = bufio.NewReader(in)
	}
	line, err := env.lines.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", usageError("reading the password from standard input: %v", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", usageError("no password: type it at the prompt or give it on a line of standard input")
	}
	return line, nil
}

// secretOut is where a new secret goes: standard output, or a file that
// is made ready (owner-only, 0600) before the server is asked, so a secret
// is never created and then lost to a file that cannot be written.
type secretOut struct {
	path string
	tmp  *os.File
}

func newSecretOut(path string) (*secretOut, error) {
	if path == "" {
		return &secretOut{}, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err != nil {
		return nil, usageError("--secret-file %s cannot be written: %v", path, err)
	}
	return &secretOut{path: path, tmp: tmp}, nil
}

// write stores the secret; it reports whether it went to the file. If the
// file fails at this point the secret goes to standard output instead:
// it exists on the server now and is shown only once.
func (s *secretOut) write(env *Env, secret string) bool {
	if s.tmp == nil {
		fmt.Fprintln(env.stdout(), secret)
		return false
	}
	_, err := s.tmp.WriteString(secret + "\n")
	if err == nil {
		err = s.tmp.Sync()
	}
	if cerr := s.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(s.tmp.Name(), s.path)
	}
	if err != nil {
		os.Remove(s.tmp.Name())
		fmt.Fprintf(env.stderr(), "caddy api-tokens: cannot write --secret-file %s (%v); the secret follows on standard output\n", s.path, err)
		fmt.Fprintln(env.stdout(), secret)
		return false
	}
	return true
}

// discard removes the prepared file when no secret came.
func (s *secretOut) discard() {
	if s != nil && s.tmp != nil {
		s.tmp.Close()
		os.Remove(s.tmp.Name())
	}
}
