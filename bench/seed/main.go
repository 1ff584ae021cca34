// Command seed fills an api_tokens database with N permanent tokens for
// load tests, and writes the secret of one of them to a file: a Badger
// directory (run it while Caddy is stopped: Badger allows one process per
// directory), or with -postgres the PostgreSQL database whose DSN is in
// $API_TOKENS_DATABASE_URL.
//
//	go run ./bench/seed -dir /tmp/data -tokens 1000000 -out /tmp/token
//	API_TOKENS_DATABASE_URL=postgres://... go run ./bench/seed -postgres -tokens 1000000 -out /tmp/token
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
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
)

func main() {
	dir := flag.String("dir", "", "storage directory (created if missing)")
	postgres := flag.Bool("postgres", false, "seed the PostgreSQL database in $API_TOKENS_DATABASE_URL instead")
	n := flag.Int("tokens", 20000, "permanent tokens to create")
	out := flag.String("out", "", "file that receives one valid secret")
	flag.Parse()
	if (*dir == "") == !*postgres || *out == "" || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	s, err := open(*dir, *postgres)
	if err != nil {
		log.Fatal(err)
	}
	if err := seed(s, *n, *out); err != nil {
		log.Fatal(err)
	}
}

func open(dir string, postgres bool) (*storage.Store, error) {
	if postgres {
		return pgstore.OpenStore(context.Background(), os.Getenv("API_TOKENS_DATABASE_URL"), pgstore.Options{}, storage.Options{})
	}
	return badgerstore.OpenStore(dir, storage.Options{})
}

func seed(s *storage.Store, n int, out string) error {
	defer s.Close()
	ctx := storage.WithActor(context.Background(), "bench-seed", "")
	if _, err := s.CreateUser(ctx, storage.NewUser{Username: "bench", Email: "bench@example.com", Password: "bench-password-not-used"}); err != nil {
		return err
	}
	expires := time.Now().UTC().Add(364 * 24 * time.Hour)
	start := time.Now()
	var keep string
	batch := make([]storage.NewToken, 0, 1000)
	for i := 0; i < n; i += cap(batch) {
		batch = batch[:0]
		for j := i; j < min(n, i+cap(batch)); j++ {
			batch = append(batch, storage.NewToken{User: "bench", Name: fmt.Sprintf("load-%07d", j), Kind: storage.Permanent, ExpiresAt: expires})
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
