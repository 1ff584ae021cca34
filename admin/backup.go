package admin

import (
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// backup streams a consistent snapshot of the whole database, for
// `caddy api-tokens backup --url ...`. It is audited before the stream
// starts, so the snapshot holds its own audit entry. The snapshot contains
// password and token hashes (never a secret): it is as sensitive as the
// database directory, hence admin only and never cached.
func (h *handler) backup(w http.ResponseWriter, r *http.Request, c caller) error {
	if !h.cfg.Store.CanBackup() {
		return newError(http.StatusNotImplemented, "this database has no online backup through the API: back up PostgreSQL with pg_dump")
	}
	now := h.cfg.Clock.Now().UTC()
	entry := storage.AuditEntry{Time: now, Action: storage.ActionBackup}
	if err := h.cfg.Store.AppendAudit(c.ctx(r), entry); err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="api-tokens-%s.backup"`, now.Format("20060102T150405Z")))
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := h.cfg.Store.Backup(r.Context(), w); err != nil {
		// The status is sent; only a broken stream can tell the client the
		// backup is incomplete, so abort instead of ending it cleanly.
		h.cfg.Logger.Error("online backup failed", zap.String("actor", c.Username), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	return nil
}
