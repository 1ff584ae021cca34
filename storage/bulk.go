package storage

import (
	"context"
	"fmt"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// maxBatch bounds CreateTokens so one call stays well inside Badger's
// transaction size limit (each token writes up to six keys and an audit entry).
const maxBatch = 1000

// CreateTokens creates many tokens in one transaction and one fsync: all of
// them or none. It is for bulk provisioning and for seeding load tests with
// millions of tokens, where one fsync per token would take hours. Each
// token is validated, minted and audited exactly as by CreateToken.
func (s *Store) CreateTokens(ctx context.Context, ts []NewToken) ([]string, []Token, error) {
	if len(ts) > maxBatch {
		return nil, nil, fmt.Errorf("%w: at most %d tokens per batch, got %d", ErrInvalid, maxBatch, len(ts))
	}
	c := s.catalogue()
	checked := make([]NewToken, len(ts))
	for i, t := range ts {
		var err error
		if checked[i], err = checkNewToken(ctx, c, t); err != nil {
			return nil, nil, err
		}
	}
	secrets := make([]string, len(ts))
	metas := make([]Token, len(ts))
	err := s.update(ctx, func(w *writeTxn) error {
		owners := map[string]*User{} // checked already: a batch usually has one owner
		scopes := make([][]string, len(checked))
		for i, t := range checked {
			if owners[t.User] == nil {
				owner, err := checkTokenOwner(w, t.User)
				if err != nil {
					return err
				}
				owners[t.User] = &owner.User
			}
			var err error
			if scopes[i], err = withinCeiling(c, owners[t.User], t.Scopes); err != nil {
				return err
			}
		}
		if err := namesFree(w, checked); err != nil {
			return err
		}
		for i, t := range checked {
			var err error
			t.Scopes = scopes[i]
			if secrets[i], metas[i], err = s.mint(ctx, w, t, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return secrets, metas, nil
}

// namesFree checks, in one read, that no permanent token of the batch
// takes a name its user has already, or that another of the batch takes.
func namesFree(r kv.Reader, ts []NewToken) error {
	var keys []string
	var named []NewToken // the token of each key
	inBatch := map[string]bool{}
	for _, t := range ts {
		if t.Kind != Permanent {
			continue
		}
		k := nameKey(t.User, t.Name)
		if inBatch[k] {
			return nameTaken(t.User, t.Name)
		}
		inBatch[k] = true
		keys, named = append(keys, k), append(named, t)
	}
	var taken error
	err := r.GetMany(keys, func(i int, _ []byte) error {
		if taken == nil {
			taken = nameTaken(named[i].User, named[i].Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: read token name index: %w", err)
	}
	return taken
}
