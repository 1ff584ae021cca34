package caddymodule

import "testing"

func TestHasPathTricks(t *testing.T) {
	for path, want := range map[string]bool{
		"/users/alice":                          false,
		"/users/alice/tokens/tok_1/rotate":      false,
		"/users/a.b-c_d/tokens":                 false,
		"/settings/EnableUserTokenNotification": false,
		"/users/alice%2F..%2Froot":              true,
		"/users/alice%2f..%2froot":              true,
		"/users/%2e%2e/settings":                true,
		"/users/%2E/x":                          true,
		"/users/alice%5C..":                     true,
		"/users/alice/../root":                  true,
		"/users/./alice":                        true,
		"/users/alice/..":                       true,
		"/users/..alice":                        false,
	} {
		if got := hasPathTricks(path); got != want {
			t.Errorf("hasPathTricks(%q) = %v, want %v", path, got, want)
		}
	}
}
