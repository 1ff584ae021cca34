package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestOnlineBackupResendsADroppedRequest: a backup that runs while Caddy
// reloads can have its connection closed before any answer (README.md,
// Operations); the CLI sends the GET once more and writes the backup. It
// does not resend more than once, nor after an answer, even an error.
func TestOnlineBackupResendsADroppedRequest(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("caddy_pat_secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		drops     int32 // requests closed unanswered before the first answer
		status    int
		wantErr   string // "" for success
		wantCalls int32
	}{
		{"one request dropped, as a reload does", 1, http.StatusOK, "", 2},
		{"every request dropped", 1000, http.StatusOK, "EOF", 2},
		{"an error answer is not resent", 0, http.StatusUnauthorized, "401", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= tc.drops {
					if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
						conn.Close()
					}
					return
				}
				if r.URL.Path != "/api-tokens/backup" || r.Header.Get("Authorization") != "Bearer caddy_pat_secret" {
					http.Error(w, "wrong request "+r.URL.Path, http.StatusBadRequest)
					return
				}
				if tc.status != http.StatusOK {
					http.Error(w, "token is invalid", tc.status)
					return
				}
				w.Header().Set("Content-Type", "application/octet-stream")
				_, _ = io.WriteString(w, "the backup")
			}))
			defer srv.Close()

			var out bytes.Buffer
			err := backupOnline(srv.URL+"/api-tokens", tokenFile, &out)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("backup failed: %v", err)
			case tc.wantErr == "" && out.String() != "the backup":
				t.Fatalf("backup wrote %q", out.String())
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("backup returned %v, want an error mentioning %q", err, tc.wantErr)
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("the server got %d requests, want %d", got, tc.wantCalls)
			}
		})
	}
}
