package storage

import (
	"context"
	"fmt"
)

// maxBatch bounds CreateTokens so one call stays well inside Badger's
// transaction size limit (each token writes up to five keys and an audit entry).
const maxBatch = 1000

// CreateTokens creates many tokens in one transaction and one fsync: all of
// them or none. It is for bulk provisioning and for seeding load tests with
// millions of tokens, where one fsync per token would take hours. Each
// token is validated, minted and audited exactly as by CreateToken.
func (s *Store) CreateTokens(ctx context.Context, ts []NewToken) ([]string, []Token, error) {
	if len(ts) > maxBatch {
		return nil, nil, fmt.Errorf("%w: at most %d tokens per batch, got %d", ErrInvalid, maxBatch, len(ts))
	}
	checked := make([]NewToken, len(ts))
	for i, t := range ts {
		var err error
		if checked[i], err = checkNewToken(ctx, t); err != nil {
			return nil, nil, err
		}
	}
	secrets := make([]string, len(ts))
	metas := make([]Token, len(ts))
	err := s.update(ctx, func(w *writeTxn) error {
		owners := map[string]bool{} // checked already: a batch usually has one owner
		for i, t := range checked {
			if !owners[t.User] {
				if err := checkTokenOwner(w, t.User); err != nil {
					return err
				}
				owners[t.User] = true
			}
			var err error
			if secrets[i], metas[i], err = s.mint(ctx, w, t); err != nil {
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
