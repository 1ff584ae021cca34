package admin

import (
	"fmt"
	"net/http"
	"strconv"

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

func (h *handler) listAudit(w http.ResponseWriter, r *http.Request, _ caller) error {
	limit := storage.DefaultAuditLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > storage.MaxAuditLimit {
			return badRequest(fmt.Sprintf("limit must be a whole number from 1 to %d", storage.MaxAuditLimit))
		}
		limit = n
	}
	entries, err := h.cfg.Store.ListAudit(r.Context(), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, mapSlice(entries, utcAudit))
	return nil
}
