package caddymodule

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/apitokens/caddy-api-tokens/admin/cli"
	"github.com/apitokens/caddy-api-tokens/admin/client"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "api-tokens",
		Usage: "login|logout|whoami|tokens|users|scopes|settings|faults|audit|backup|restore|reset-password|migrate [flags]",
		Short: "Administers API tokens on a running gateway; backs up, restores or migrates the database, resets a password",
		Long: `
Day-to-day administration against a running gateway, through the admin
REST API of api_token_admin (described by the OpenAPI document it serves
at GET /openapi.json):

    caddy api-tokens login --url http://localhost:8080/api-tokens --user admin --token-out ~/.api-tokens
    export API_TOKENS_URL=http://localhost:8080/api-tokens API_TOKENS_TOKEN_FILE=~/.api-tokens
    caddy api-tokens users create ci-bot --email ci@example.com --scope deploy < ci-password.txt
    caddy api-tokens tokens create ci-bot github-actions --scope deploy --allow-cidr 10.0.0.0/8 --secret-file ci.token
    caddy api-tokens tokens list --expiring-within 30d
    caddy api-tokens tokens unused-scopes --days 30
    caddy api-tokens tokens rotate ci-bot tok_2c1f08345a0bd3dd5823 --grace 1h > new.token
    caddy api-tokens settings set EnableUserTokenNotification '30;7;1'
    caddy api-tokens settings set UserTokenExpirationNotificationEmails 'ops@example.com'
    caddy api-tokens faults

Commands: login, logout, whoami; tokens list|get|create|narrow|rotate|
delete|unused-scopes; users list|get|create|update|delete; scopes;
settings list|get|set|delete; faults; audit. 'caddy api-tokens COMMAND
--help' shows each one's flags.

--url (or API_TOKENS_URL) is the base of the api_token_admin handler. The
API token is read from --token-file or API_TOKENS_TOKEN_FILE (a file), or
from API_TOKENS_TOKEN, never from a flag, so it does not show in 'ps'.
Passwords (login, users create, users update --password) are read at a
prompt without echo, or from the first line of standard input. Output is
a table; --json prints JSON. A created or rotated secret is printed only
on standard output (what it is goes to standard error), or written to
--secret-file with mode 0600.

` + cli.ExitCodesHelp + `

Backs up and restores the api_tokens database: users (with password hashes),
token metadata and hashes, settings, alert state and the audit log. A backup
never contains a token secret or a password, but it does contain their
hashes: keep it as safe as the database directory.

Online backup, while Caddy runs, through the admin API (needs an
administrator's token, read from a file so it never shows in 'ps'):

    caddy api-tokens backup --url http://localhost:8080/api-tokens \
        --token-file /run/secrets/api-tokens-admin --output tokens.backup

Offline backup and restore of the Badger directory (Caddy stopped; the
directory lock refuses a running Caddy):

    caddy api-tokens backup  --storage-path /var/lib/caddy/api_tokens --output tokens.backup
    caddy api-tokens restore --storage-path /var/lib/caddy/api_tokens.new --input tokens.backup

restore writes only into an empty or new directory; point storage_path at
it (or move it into place) and start Caddy. Use '--output -' to write the
backup to standard output and '--input -' to read it from standard input.

Recovery when no administrator can log in (Caddy stopped; the new password
is read from the first line of standard input, so it stays out of 'ps' and
shell history):

    caddy api-tokens reset-password --storage-path /var/lib/caddy/api_tokens --user admin < new-password.txt

It is audited as a user_update by "cli".

Moving to a fleet on PostgreSQL, or back, copies the whole database, hashes
included, into a new, empty one of the other kind (the PostgreSQL
connection string comes from $API_TOKENS_DATABASE_URL):

    caddy api-tokens migrate --from badger:/var/lib/caddy/api_tokens --to postgres
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(cli.Commands(&cli.Env{Exit: os.Exit})...)
			cmd.AddCommand(backupCommand(), restoreCommand(), resetPasswordCommand(), migrateCommand())
		},
	})
}

func backupCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "backup (--url URL --token-file FILE | --storage-path DIR) --output FILE",
		Short: "Writes a backup of the API tokens database",
		Args:  cobra.NoArgs,
	}
	f := c.Flags()
	url := f.String("url", "", "base URL of the api_token_admin handler, e.g. http://localhost:8080/api-tokens (online backup)")
	tokenFile := f.String("token-file", "", "file holding an administrator's API token (online backup)")
	dir := f.String("storage-path", "", "the Badger directory of a stopped Caddy (offline backup)")
	out := f.String("output", "", "file to write the backup to, or - for standard output")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		cmd.SilenceUsage = true
		switch {
		case *out == "":
			return errors.New("--output is required")
		case (*url == "") == (*dir == ""):
			return errors.New("give either --url (online, Caddy running) or --storage-path (offline, Caddy stopped)")
		case *url != "" && *tokenFile == "":
			return errors.New("--url needs --token-file with an administrator's API token")
		}
		write := func(w io.Writer) error { return badgerstore.BackupDir(*dir, w) }
		if *url != "" {
			write = func(w io.Writer) error { return backupOnline(*url, *tokenFile, w) }
		}
		if err := writeOutput(*out, write); err != nil {
			return err
		}
		if *out != "-" {
			fmt.Fprintf(cmd.ErrOrStderr(), "backup written to %s\n", *out)
		}
		return nil
	}
	return c
}

func restoreCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "restore --storage-path DIR --input FILE",
		Short: "Restores a backup into a new, empty Badger directory",
		Args:  cobra.NoArgs,
	}
	f := c.Flags()
	dir := f.String("storage-path", "", "an empty or new directory to restore into")
	in := f.String("input", "", "the backup file, or - for standard input")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		cmd.SilenceUsage = true
		if *dir == "" || *in == "" {
			return errors.New("--storage-path and --input are required")
		}
		r := io.Reader(os.Stdin)
		if *in != "-" {
			file, err := os.Open(*in)
			if err != nil {
				return err
			}
			defer file.Close()
			r = file
		}
		if err := badgerstore.Restore(*dir, r); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "restored into %s; point storage_path at it and start Caddy\n", *dir)
		return nil
	}
	return c
}

func resetPasswordCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "reset-password --storage-path DIR --user NAME < password-file",
		Short: "Sets a user's password in a stopped Caddy's database, reading it from standard input",
		Args:  cobra.NoArgs,
	}
	f := c.Flags()
	dir := f.String("storage-path", "", "the Badger directory of a stopped Caddy")
	user := f.String("user", "", "the user whose password to set")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		cmd.SilenceUsage = true
		if *dir == "" || *user == "" {
			return errors.New("--storage-path and --user are required")
		}
		password, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading the new password from standard input: %v", err)
		}
		password = strings.TrimRight(password, "\r\n")
		if password == "" {
			return errors.New("give the new password on the first line of standard input")
		}
		if err := resetPassword(*dir, *user, password); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "password of %s changed; their login sessions are ended, their permanent tokens keep working\n", *user)
		return nil
	}
	return c
}

// resetPassword sets a user's password offline, audited as done by "cli".
func resetPassword(dir, user, password string) error {
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("storage directory %s: %w", dir, err)
	}
	db, err := badgerstore.Open(dir, nil)
	if err != nil {
		return err
	}
	s, err := storage.Open(context.Background(), db, storage.Options{})
	if err != nil {
		return fmt.Errorf("cannot load storage directory %s: %w", dir, err)
	}
	ctx := storage.WithActor(context.Background(), "cli", "")
	_, err = s.UpdateUser(ctx, user, storage.UserPatch{Password: &password})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// backupClient bounds connecting and waiting for the first byte, not the
// whole transfer: a large database may take longer than any fixed timeout.
// Like every command, it follows no redirect: the token goes to --url only.
var backupClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		ResponseHeaderTimeout: time.Minute,
		TLSHandshakeTimeout:   10 * time.Second,
	},
	CheckRedirect: client.RefuseRedirect,
}

// backupOnline downloads GET <url>/backup with the token in tokenFile.
func backupOnline(url, tokenFile string, w io.Writer) error {
	token, err := readTokenFile(tokenFile)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(url, "/")+"/backup", nil)
	if err != nil {
		return fmt.Errorf("--url %q is not a URL", client.Redact(url))
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := backupClient.Do(req)
	if err != nil && droppedUnanswered(err) {
		// A `caddy reload` at this moment can drop a new connection before
		// any handler reads the request (README.md, Operations). The backup
		// is a GET, so it is sent once more; by then the new config answers.
		time.Sleep(100 * time.Millisecond)
		resp, err = backupClient.Do(req)
	}
	if re, ok := errors.AsType[*client.RedirectError](err); ok {
		return fmt.Errorf("online backup: %v", re)
	}
	if err != nil {
		return fmt.Errorf("online backup: %v", err) // a *url.Error, which has the password taken out
	}
	defer resp.Body.Close()
	where := client.Redact(req.URL.String())
	if resp.StatusCode != http.StatusOK {
		var msg [512]byte
		n, _ := io.ReadFull(resp.Body, msg[:])
		return fmt.Errorf("online backup: %s answered %s: %s", where, resp.Status, strings.TrimSpace(string(msg[:n])))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		return fmt.Errorf("online backup: %s answered %q, not a backup; is --url the api_token_admin handler's base?", where, ct)
	}
	// A stream the server aborted ends in an error here, never in a short
	// file that looks complete.
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("online backup: the download broke off: %v", err)
	}
	return nil
}

// droppedUnanswered tells whether err is a connection that was closed or
// reset without any response, which is what a Caddy reload does to a new
// connection that reaches the old server as it stops.
func droppedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// readTokenFile reads the one token in path; the token itself is never put
// in an error message.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %v", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("--token-file %s must hold exactly one API token", path)
	}
	return token, nil
}

// writeOutput runs write into path through a temporary file that is synced
// and renamed into place only when write succeeds, so a failed backup
// never leaves a partial file under the name an operator expects.
func writeOutput(path string, write func(io.Writer) error) error {
	if path == "-" {
		bw := bufio.NewWriter(os.Stdout)
		if err := write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return fmt.Errorf("--output: %v", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	bw := bufio.NewWriter(tmp)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--output: %v", err)
	}
	return nil
}
