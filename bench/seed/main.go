// Command seed fills an api_tokens database with N permanent tokens for
// load tests, and writes the secret of one of them to a file: a Badger
// directory (run it while Caddy is stopped: Badger allows one process per
// directory), or with -postgres the PostgreSQL database whose DSN is in
// $API_TOKENS_DATABASE_URL.
//
//	go run ./bench/seed -dir /tmp/data -tokens 1000000 -out /tmp/token
//	go run ./bench/seed -dir /tmp/data -tokens 1000000 -out /tmp/token -spread
//	API_TOKENS_DATABASE_URL=postgres://... go run ./bench/seed -postgres -tokens 1000000 -out /tmp/token
//
// By default every token expires 364 days after the seeding; with -spread
// the expiries are spread evenly over the coming year (1 to 364 days), so
// that a filter such as GET /tokens?expiring_within=30d keeps about one
// token in twelve.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
)

func main() {
	dir := flag.String("dir", "", "storage directory (created if missing)")
	postgres := flag.Bool("postgres", false, "seed the PostgreSQL database in $API_TOKENS_DATABASE_URL instead")
	n := flag.Int("tokens", 20000, "permanent tokens to create")
	out := flag.String("out", "", "file that receives one valid secret")
	spread := flag.Bool("spread", false, "spread the expiries over the coming year instead of all at 364 days")
	flag.Parse()
	if (*dir == "") == !*postgres || *out == "" || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	s, err := open(*dir, *postgres)
	if err != nil {
		log.Fatal(err)
	}
	if err := seed(s, *n, *out, *spread); err != nil {
		log.Fatal(err)
	}
}

func open(dir string, postgres bool) (*storage.Store, error) {
	var db kv.Backend
	var err error
	if postgres {
		db, err = pgstore.Open(context.Background(), os.Getenv("API_TOKENS_DATABASE_URL"), pgstore.Options{})
	} else {
		db, err = badgerstore.Open(dir, nil)
	}
	if err != nil {
		return nil, err
	}
	return storage.Open(context.Background(), db, storage.Options{})
}

func seed(s *storage.Store, n int, out string, spread bool) error {
	defer s.Close()
	ctx := storage.WithActor(context.Background(), "bench-seed", "")
	// The load test's catalogue: every token carries its user's two
	// scopes, and its scoped route requires one of them.
	s.SetScopes([]storage.Scope{{Name: "deploy"}, {Name: "reports:read"}})
	if _, err := s.CreateUser(ctx, storage.NewUser{Username: "bench", Email: "bench@example.com", Password: "bench-password-not-used",
		Scopes: []string{"deploy", "reports:read"}}); err != nil {
		return err
	}
	now := time.Now().UTC()
	expires := func(j int) time.Time {
		if !spread {
			return now.Add(364 * 24 * time.Hour)
		}
		// 1 to 364 days, a different day for neighbours, and seconds
		// apart so that the expiry order is not the creation order.
		return now.Add(time.Duration(1+j*7919%364)*24*time.Hour + time.Duration(j%86400)*time.Second)
	}
	start := time.Now()
	var keep string
	batch := make([]storage.NewToken, 0, 1000)
	for i := 0; i < n; i += cap(batch) {
		batch = batch[:0]
		for j := i; j < min(n, i+cap(batch)); j++ {
			batch = append(batch, storage.NewToken{User: "bench", Name: fmt.Sprintf("load-%07d", j), Kind: storage.Permanent, ExpiresAt: expires(j)})
		}
		secrets, _, err := s.CreateTokens(ctx, batch)
		if err != nil {
			return err
		}
		keep = secrets[len(secrets)/2]
	}
	log.Printf("seeded %d tokens in %s", n, time.Since(start).Round(time.Millisecond))
	return os.WriteFile(out, []byte(keep), 0o600)
}
