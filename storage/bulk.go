package storage

import (
	"context"
	"fmt"
	"time"
)

// maxBatch bounds CreateTokens so one call stays well inside Badger's
// transaction size limit (each token writes up to five keys and an audit entry).
const maxBatch = 1000

// CreateTokens creates many tokens in one transaction and one fsync: all of
// them or none. It is for bulk provisioning and for seeding load tests with
// millions of tokens, where one fsync per token would take hours. Each
// token is validated and audited exactly as by CreateToken.
func (s *Badger) CreateTokens(ctx context.Context, ts []NewToken) ([]string, []Token, error) {
	if len(ts) > maxBatch {
		return nil, nil, fmt.Errorf("%w: at most %d tokens per batch, got %d", ErrInvalid, maxBatch, len(ts))
	}
	secrets := make([]string, len(ts))
	metas := make([]Token, len(ts))
	err := s.update(func(w *writeTxn) error {
		owners := map[string]bool{} // checked already: a batch usually has one owner
		for i, t := range ts {
			t, err := checkNewToken(ctx, t)
			if err != nil {
				return err
			}
			if !owners[t.User] {
				if err := s.checkTokenOwner(w.txn, t.User); err != nil {
					return err
				}
				owners[t.User] = true
			}
			secrets[i] = NewSecret(t.Kind)
			rec := tokenRecord{Hash: HashSecret(secrets[i]), Token: Token{
				ID: NewTokenID(), User: t.User, Name: t.Name, Kind: t.Kind,
				CreatedAt: w.now, CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt.UTC(),
			}}
			if err := s.insertToken(w, &rec); err != nil {
				return err
			}
			w.record(ctx, ActionTokenCreate, rec.ID, fmt.Sprintf("user=%s name=%q expires_at=%s", rec.User, rec.Name, rec.ExpiresAt.Format(time.RFC3339)))
			metas[i] = rec.Token
			metas[i].Status = rec.StatusAt(w.now)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return secrets, metas, nil
}
