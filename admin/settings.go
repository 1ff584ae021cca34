package admin

import (
	"net/http"

	"github.com/apitokens/caddy-api-tokens/storage"
)

type putSettingRequest struct {
	Value *string `json:"value"`
}

func (h *handler) listSettings(w http.ResponseWriter, r *http.Request, _ caller) error {
	settings, err := h.cfg.Store.ListSettings(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, orEmpty(settings))
	return nil
}

func (h *handler) getSetting(w http.ResponseWriter, r *http.Request, _ caller) error {
	key := r.PathValue("key")
	value, err := h.cfg.Store.GetSetting(r.Context(), key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, storage.Setting{Type: storage.SettingType, Key: key, Value: value})
	return nil
}

// putSetting stores a validated setting; the store tells the alert loop
// (on whichever node runs it), which reacts at once.
func (h *handler) putSetting(w http.ResponseWriter, r *http.Request, c caller) error {
	var req putSettingRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Value == nil {
		return badRequest(`value is required, e.g. {"value": "30"}`)
	}
	s, err := h.cfg.Store.PutSetting(c.ctx(r), r.PathValue("key"), *req.Value)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (h *handler) deleteSetting(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := h.cfg.Store.DeleteSetting(c.ctx(r), r.PathValue("key")); err != nil {
		return err
	}
	writeNoContent(w)
	return nil
}

func (h *handler) listFaults(w http.ResponseWriter, _ *http.Request, _ caller) error {
	writeJSON(w, http.StatusOK, mapSlice(h.cfg.Faults(), utcFault))
	return nil
}

// listAudit answers a page of the audit log, newest first; limit keeps
// its meaning of before the lists paged (how many entries, 1 to 1000).
func (h *handler) listAudit(w http.ResponseWriter, r *http.Request, _ caller) error {
	p, err := pageQuery(r)
	if err != nil {
		return err
	}
	entries, next, err := h.cfg.Store.ListAuditPage(r.Context(), p.cursor, p.limit)
	if err != nil {
		return err
	}
	h.writePage(w, r, mapSlice(entries, utcAudit), next)
	return nil
}
