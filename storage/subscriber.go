package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// subscriber is how the Store takes the backend's change feed: it keeps
// the verifier's memory equal to the database's users and tokens (a reset
// loads it anew, and each change patches it), and tells the watchers of
// settings and of the alert view.
type subscriber struct{ s *Store }

// Reset loads the snapshot r into the verifier, which swaps it in whole
// (Verify keeps answering from what it had meanwhile), and tells the
// watchers of settings and of the alert view, which may have changed in
// what the reset skipped.
func (sub subscriber) Reset(r kv.Reader, concurrent bool) error {
	s := sub.s
	load := s.tokens.NewLoad(tokenCountHint(r))
	orphans, err := loadTokens(load, r, concurrent)
	if err != nil {
		return fmt.Errorf("loading tokens: %w", err)
	}
	view, _, err := getValue(r, keyAlertView)
	if err != nil {
		return fmt.Errorf("loading the alert view: %w", err)
	}
	s.orphans.Store(&orphans)
	if n := load.Install(); n > 0 {
		// last_used_at is best effort and at most a flush old.
		s.log.Debug("dropped unflushed last uses at reload", zap.Int("tokens", n))
	}
	s.settingsChanged()
	if view != nil {
		s.alertViewChanged(view)
	}
	return nil
}

// Apply gives the verifier the changed users and tokens, and tells the
// watchers of settings and of the alert view. Users go first: a token in
// the same batch may belong to a user the batch creates.
func (sub subscriber) Apply(changes []kv.Change) {
	s := sub.s
	for _, c := range changes {
		if name, ok := strings.CutPrefix(c.Key, prefixUser); ok {
			if err := s.applyUser(name, c); err != nil {
				s.log.Error("applying a changed user", zap.String("user", name), zap.Error(err))
			}
		}
	}
	settings := false
	for _, c := range changes {
		switch {
		case strings.HasPrefix(c.Key, prefixToken):
			if err := s.applyToken(c); err != nil {
				s.log.Error("applying a changed token", zap.String("token_id", short(c.Key[len(prefixToken):])), zap.Error(err))
			}
		case strings.HasPrefix(c.Key, prefixSetting):
			settings = true
		case c.Key == keyAlertView:
			s.alertViewChanged(c.Value)
		}
	}
	if settings {
		s.settingsChanged()
	}
}

func (s *Store) applyUser(name string, c kv.Change) error {
	if !c.Found {
		s.tokens.RemoveUser(name)
		return nil
	}
	var u User
	if err := json.Unmarshal(c.Value, &u); err != nil {
		return fmt.Errorf("corrupt user record: %w", err)
	}
	s.tokens.PutUser(verifierUser(u))
	return nil
}

func verifierUser(u User) verifier.User {
	return verifier.User{Name: u.Username, Admin: u.Admin, Disabled: u.Disabled, Scopes: strings.Join(u.Scopes, " ")}
}

// applyToken gives the verifier one changed token. A deleted token is
// found by the hash it was published with.
func (s *Store) applyToken(c kv.Change) error {
	if !c.Found {
		if len(c.Hint) != len(secret.Hash{}) {
			// Every deletion publishes the hash (deleteTokens); should one
			// ever not, find the token by id so it cannot keep working.
			s.tokens.RemoveTokenByID(c.Key[len(prefixToken):])
			return errors.New("token deleted without its hash; removed by id")
		}
		s.tokens.RemoveToken(secret.Hash(c.Hint))
		return nil
	}
	tok, err := verifierToken(c.Value)
	if err != nil {
		return err
	}
	if err := s.tokens.PutToken(tok); err != nil && !errors.Is(err, verifier.ErrUnknownUser) {
		return err
	}
	return nil // a token of a deleted user must not verify, and is not kept
}

// verifierToken reads what the verifier keeps from a token record, without
// allocating: ID and User point into val.
func verifierToken(val []byte) (verifier.Token, error) {
	h, err := parseHeader(val)
	if err != nil {
		return verifier.Token{}, err
	}
	var fields [recordFields][]byte
	if err := h.fields(&fields); err != nil {
		return verifier.Token{}, err
	}
	return verifier.Token{Hash: h.hash, ID: fields[fieldID], User: fields[fieldUser], Kind: h.kind, ExpiresAt: h.expires, RevokedAt: h.revoked,
		Scopes: fields[fieldScopes], Networks: fields[fieldNetworks]}, nil
}

// tokenCountHint estimates the token records in r, if the backend can, so
// the verifier's maps are allocated once at about the right size.
func tokenCountHint(r kv.Reader) int {
	if h, ok := r.(interface{ CountHint(prefix string) int }); ok {
		return h.CountHint(prefixToken)
	}
	return 0
}

// loadTokens adds every user, then every token record of the snapshot r
// to load, streamed so memory holds only the verifier's own. With
// concurrent, several goroutines scan ranges of the records at once. It
// returns the names of missing users that token records still refer to.
func loadTokens(load *verifier.Load, r kv.Reader, concurrent bool) (orphanUsers map[string]bool, err error) {
	err = r.Scan(prefixUser, kv.ScanOptions{}, func(_, val []byte) error {
		u, err := decodeUser(val)
		if err != nil {
			return err
		}
		load.AddUser(verifierUser(u))
		return nil
	})
	if err != nil {
		return nil, err
	}
	parts := 1
	if concurrent {
		parts = min(runtime.GOMAXPROCS(0), 4)
	}
	bounds := loadBounds(parts)
	orphans := make([]map[string]bool, len(bounds)-1)
	errs := make([]error, len(bounds)-1)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			orphans[i], errs[i] = loadRange(load.Part(), r, bounds[i], bounds[i+1])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, o := range orphans {
		for u := range o {
			if orphanUsers == nil {
				orphanUsers = map[string]bool{}
			}
			orphanUsers[u] = true
		}
	}
	return orphanUsers, nil
}

// loadBounds splits the t/ key space into n ranges on the first hex digit
// of the token id; the first and last ranges are open, so ids of any other
// shape are still loaded.
func loadBounds(n int) []string {
	const idPrefix = prefixToken + "tok_"
	b := []string{""}
	for i := 1; i < n; i++ {
		b = append(b, idPrefix+string("0123456789abcdef"[16*i/n]))
	}
	return append(b, "")
}

// loadRange adds the records with keys in [from, to) ("" = the start or
// the end of the t/ prefix) to part, and returns the missing users they
// refer to.
func loadRange(part *verifier.LoadPart, r kv.Reader, from, to string) (orphanUsers map[string]bool, err error) {
	err = r.Scan(prefixToken, kv.ScanOptions{From: from, To: to}, func(_, val []byte) error {
		tok, err := verifierToken(val)
		if err != nil {
			return err
		}
		switch err := part.AddToken(tok); {
		case errors.Is(err, verifier.ErrUnknownUser):
			if orphanUsers == nil {
				orphanUsers = map[string]bool{}
			}
			orphanUsers[string(tok.User)] = true
		case err != nil:
			return err
		}
		return nil
	})
	return orphanUsers, err
}
