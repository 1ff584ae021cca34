package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
)

// defaultDSNEnv names the environment variable the migrate command reads
// a PostgreSQL DSN from, so the password never shows in `ps`.
const defaultDSNEnv = "API_TOKENS_DATABASE_URL"

func migrateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "migrate --from badger:DIR|postgres --to badger:DIR|postgres",
		Short: "Copies the API tokens database between Badger and PostgreSQL, hashes included",
		Long: `
Copies everything a token database holds into a new, empty one of the other
kind: users with their password hashes, tokens with their hashes (no token
has to be issued again), settings, alert state and the audit log.

  caddy api-tokens migrate --from badger:/var/lib/caddy/api_tokens --to postgres
  caddy api-tokens migrate --from postgres --to badger:/var/lib/caddy/api_tokens.new

The PostgreSQL connection string is read from the environment variable
` + defaultDSNEnv + ` (or the one --dsn-env names), never from a flag that
would show in 'ps'. Stop Caddy on a Badger source (the directory lock
refuses a running one); stop writes to a PostgreSQL source, as the copy is
one snapshot. The destination must be empty.
`,
		Args: cobra.NoArgs,
	}
	f := c.Flags()
	from := f.String("from", "", "the database to copy: badger:DIR or postgres")
	to := f.String("to", "", "the new, empty database to copy into: badger:DIR or postgres")
	dsnEnv := f.String("dsn-env", defaultDSNEnv, "the environment variable holding the PostgreSQL connection string")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		cmd.SilenceUsage = true
		if *from == "" || *to == "" {
			return errors.New("--from and --to are required, e.g. --from badger:/var/lib/caddy/api_tokens --to postgres")
		}
		if *from == *to || (*from == "postgres") == (*to == "postgres") {
			return errors.New("--from and --to must be one Badger directory and PostgreSQL")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
		defer cancel()
		src, srcName, err := openDatabase(ctx, *from, *dsnEnv, true)
		if err != nil {
			return err
		}
		defer src.Close()
		dst, dstName, err := openDatabase(ctx, *to, *dsnEnv, false)
		if err != nil {
			return err
		}
		defer dst.Close()
		counts, err := storage.Copy(ctx, dst, src, time.Now())
		if err != nil {
			return fmt.Errorf("copying %s into %s: %w", srcName, dstName, err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "copied %d users and %d tokens (%d keys) from %s into %s\n",
			counts.Users, counts.Tokens, counts.Keys, srcName, dstName)
		return nil
	}
	return c
}

// openDatabase opens the backend named by spec: badger:DIR, or postgres
// with the DSN from the environment variable dsnEnv. A source directory
// must exist already.
func openDatabase(ctx context.Context, spec, dsnEnv string, source bool) (kv.Backend, string, error) {
	if dir, ok := strings.CutPrefix(spec, "badger:"); ok {
		if dir == "" {
			return nil, "", errors.New("badger: needs a directory, e.g. badger:/var/lib/caddy/api_tokens")
		}
		if _, err := os.Stat(dir); source && err != nil {
			return nil, "", fmt.Errorf("storage directory %s: %w", dir, err)
		}
		b, err := badgerstore.Open(dir, nil)
		return b, "Badger at " + dir, err
	}
	if spec != "postgres" {
		return nil, "", fmt.Errorf("%q is neither badger:DIR nor postgres", spec)
	}
	dsn := os.Getenv(dsnEnv)
	if dsn == "" {
		return nil, "", fmt.Errorf("set the PostgreSQL connection string in the environment variable %s", dsnEnv)
	}
	b, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		return nil, "", err
	}
	return b, "PostgreSQL", nil
}
