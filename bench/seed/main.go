// Command seed fills an api_tokens storage directory with N permanent
// tokens for load tests, and writes the secret of one of them to a file.
// Run it while Caddy is stopped: Badger allows one process per directory.
//
//	go run ./bench/seed -dir /tmp/data -tokens 1000000 -out /tmp/token
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
)

func main() {
	dir := flag.String("dir", "", "storage directory (created if missing)")
	n := flag.Int("tokens", 20000, "permanent tokens to create")
	out := flag.String("out", "", "file that receives one valid secret")
	flag.Parse()
	if *dir == "" || *out == "" || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := seed(*dir, *n, *out); err != nil {
		log.Fatal(err)
	}
}

func seed(dir string, n int, out string) error {
	s, err := badgerstore.OpenStore(dir, storage.Options{})
	if err != nil {
		return err
	}
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
