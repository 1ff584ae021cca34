package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// auditPruner deletes audit entries older than audit_retention, at start
// and every hour, for one config generation.
type auditPruner struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *auditPruner) start(a *App) {
	if a.AuditRetention == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		tick := time.NewTicker(auditPruneInterval)
		defer tick.Stop()
		for {
			a.pruneAudit(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// stop cancels a prune in progress between batches and waits for it.
func (p *auditPruner) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

func (a *App) pruneAudit(ctx context.Context) {
	before := a.shared.clock.Now().Add(-time.Duration(a.AuditRetention))
	n, err := a.shared.store.PruneAudit(ctx, before)
	if err != nil {
		a.logger.Error("pruning the audit log", zap.Int("deleted", n), zap.Error(err))
		return
	}
	if n > 0 {
		a.logger.Info("pruned the audit log", zap.Int("deleted", n), zap.Time("older_than", before))
	}
}
