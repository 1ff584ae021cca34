package admin

import (
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// TestInternalErrors: a failure that is not the client's doing answers a
// generic 500 and is logged with context, but never with a secret.
func TestInternalErrors(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	panicky := false
	e := newEnv(t, func(c *Config) {
		c.Logger = zap.New(core)
		c.Faults = func() []storage.Fault {
			if panicky {
				panic("fault source broke")
			}
			return nil
		}
	})

	panicky = true
	r := e.must(http.StatusInternalServerError, "GET", "/faults", e.root, "")
	if msg := r.errMsg(t); msg != "internal error" {
		t.Errorf("panic answered %q", msg)
	}
	if logs.FilterMessage("admin API handler panicked").FilterField(zap.String("path", "/faults")).Len() != 1 {
		t.Errorf("panic not logged with its path: %v", logs.All())
	}

	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	r = e.must(http.StatusInternalServerError, "POST", "/users", e.root, `{"username":"bob","password":"pw-bob-1"}`)
	if msg := r.errMsg(t); msg != "internal error" {
		t.Errorf("store failure answered %q; want a generic message", msg)
	}
	failed := logs.FilterMessage("admin API request failed")
	if failed.FilterField(zap.String("path", "/users")).FilterField(zap.String("actor", rootName)).Len() != 1 {
		t.Errorf("store failure not logged with path and actor: %v", logs.All())
	}
	for _, entry := range logs.All() {
		line := entry.Message
		for _, f := range entry.Context {
			line += " " + f.String + " " + f.Key
			if err, ok := f.Interface.(error); ok {
				line += " " + err.Error()
			}
		}
		if strings.Contains(line, e.root) || strings.Contains(line, "pw-bob-1") {
			t.Errorf("log line leaks a secret: %s", line)
		}
	}
}
