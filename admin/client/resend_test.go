package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/apitokens/caddy-api-tokens/admin/client"
)

// TestDroppedRequestIsResentOnlyIfIdempotent: a `caddy reload` can close a
// new connection without an answer (README.md, Operations). The client
// sends a GET, PUT or DELETE once more, with its body, and a POST never;
// an answer, even an error, is never resent, and a second drop is the
// caller's UnreachableError.
func TestDroppedRequestIsResentOnlyIfIdempotent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		drops     int32 // requests closed unanswered before the first answer
		call      func(*client.Client) error
		wantErr   bool
		wantCalls int32
	}{
		{"GET dropped once", 1, func(c *client.Client) error { _, err := c.Me(context.Background()); return err }, false, 2},
		{"PUT dropped once, body resent", 1, func(c *client.Client) error {
			s, err := c.PutSetting(context.Background(), "EnableUserTokenNotification", "30")
			if err == nil && s.Value != "30" {
				err = errors.New("the resent PUT lost its body: " + s.Value)
			}
			return err
		}, false, 2},
		{"DELETE dropped once", 1, func(c *client.Client) error { return c.DeleteToken(context.Background(), "alice", "tok_1") }, false, 2},
		{"GET dropped twice", 2, func(c *client.Client) error { _, err := c.Me(context.Background()); return err }, true, 2},
		{"POST dropped once is not resent", 1, func(c *client.Client) error { return c.Logout(context.Background()) }, true, 1},
		{"an answer is not resent", 0, func(c *client.Client) error { return c.DeleteUser(context.Background(), "nobody") }, true, 1},
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
				w.Header().Set("Content-Type", "application/json")
				switch {
				case r.Method == http.MethodGet && r.URL.Path == "/me":
					_, _ = io.WriteString(w, `{"username":"root","admin":true}`)
				case r.Method == http.MethodPut:
					var in struct{ Value string }
					_ = json.NewDecoder(r.Body).Decode(&in)
					_ = json.NewEncoder(w).Encode(client.Setting{Type: "AppConfig", Key: "EnableUserTokenNotification", Value: in.Value})
				case r.Method == http.MethodDelete && r.URL.Path == "/users/alice/tokens/tok_1":
					w.WriteHeader(http.StatusNoContent)
				default:
					w.WriteHeader(http.StatusNotFound)
					_, _ = io.WriteString(w, `{"error":"not found"}`)
				}
			}))
			defer srv.Close()
			c := &client.Client{BaseURL: srv.URL, Token: "caddy_tmp_x"}
			err := tc.call(c)
			if tc.wantErr != (err != nil) {
				t.Fatalf("error %v, want an error: %v", err, tc.wantErr)
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("the server got %d requests, want %d", got, tc.wantCalls)
			}
			if tc.drops > 0 && tc.wantErr {
				if _, ok := errors.AsType[*client.UnreachableError](err); !ok {
					t.Errorf("error %T %v, want an UnreachableError", err, err)
				}
			}
		})
	}
}
