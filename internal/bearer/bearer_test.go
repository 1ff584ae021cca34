package bearer_test

import (
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/bearer"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name   string
		values []string
		token  string
		result bearer.Result
	}{
		{"no header", nil, "", bearer.Missing},
		{"empty value", []string{""}, "", bearer.Missing},
		{"scheme only", []string{"Bearer"}, "", bearer.Missing},
		{"scheme and blanks", []string{"Bearer  \t "}, "", bearer.Missing},
		{"Basic credentials", []string{"Basic YWxpY2U6eA=="}, "", bearer.Missing},
		{"another scheme with a token", []string{"Token caddy_pat_x"}, "", bearer.Missing},
		{"a token without a scheme", []string{"caddy_pat_x"}, "", bearer.Missing},
		{"scheme joined to the token", []string{"Bearercaddy_pat_x"}, "", bearer.Missing},
		{"bearer token", []string{"Bearer caddy_pat_x"}, "caddy_pat_x", bearer.Found},
		{"scheme in any case", []string{"bEARER caddy_pat_x"}, "caddy_pat_x", bearer.Found},
		{"blanks around the token", []string{"Bearer \t caddy_pat_x \t"}, "caddy_pat_x", bearer.Found},
		{"junk after the token stays in it", []string{"Bearer caddy_pat_x y"}, "caddy_pat_x y", bearer.Found},
		{"two headers", []string{"Bearer caddy_pat_x", "Bearer caddy_pat_y"}, "", bearer.Multiple},
		{"two headers, one empty", []string{"", "Bearer caddy_pat_x"}, "", bearer.Multiple},
		{"two headers, one Basic", []string{"Bearer caddy_pat_x", "Basic YWxpY2U6eA=="}, "", bearer.Multiple},
	} {
		t.Run(c.name, func(t *testing.T) {
			token, result := bearer.Parse(c.values)
			if token != c.token || result != c.result {
				t.Errorf("Parse(%q) = %q, %v; want %q, %v", c.values, token, result, c.token, c.result)
			}
		})
	}
}

// TestChallengeAndCount checks what each refusal answers and how it is
// counted: no error code only when no bearer token was sent at all.
func TestChallengeAndCount(t *testing.T) {
	if got := bearer.Missing.VerifyResult(); got != verifier.ResultMissing {
		t.Errorf("Missing counts as %v", got)
	}
	if got := bearer.Multiple.VerifyResult(); got != verifier.ResultMalformed {
		t.Errorf("Multiple counts as %v", got)
	}
	if got := bearer.Challenge(verifier.ResultMissing); got != `Bearer realm="api_tokens"` {
		t.Errorf("challenge for missing: %q", got)
	}
	for _, res := range verifier.AllResults() {
		if res == verifier.ResultMissing || res == verifier.ResultOK || res == verifier.ResultForbidden {
			continue
		}
		if got := bearer.Challenge(res); got != `Bearer realm="api_tokens", error="invalid_token"` {
			t.Errorf("challenge for %v: %q", res, got)
		}
		if bearer.Message(res) == "" {
			t.Errorf("no message for %v", res)
		}
	}
	if bearer.Message(verifier.ResultMalformed) != bearer.Message(verifier.ResultUnknown) {
		t.Error("malformed and unknown tokens get different messages: that tells a guesser which guesses had a valid checksum")
	}
}

// TestParseAllocatesNothing: Parse is on every gateway request's path.
func TestParseAllocatesNothing(t *testing.T) {
	values := []string{"Bearer caddy_pat_x"}
	if n := testing.AllocsPerRun(100, func() { bearer.Parse(values) }); n != 0 {
		t.Errorf("Parse allocates %v times per call", n)
	}
}

// FuzzParse checks Parse against its definition written the plain way:
// one value, the scheme in any case, the token with the spaces and tabs
// around it removed.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "Bearer caddy_pat_x", "bearer \t x \t", "Bearer", "Basic x", "Bearer\tx", "BEARER  "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		wantToken, wantResult := "", bearer.Missing
		if len(value) >= 7 && strings.EqualFold(value[:7], "Bearer ") {
			if tok := strings.Trim(value[7:], " \t"); tok != "" {
				wantToken, wantResult = tok, bearer.Found
			}
		}
		token, result := bearer.Parse([]string{value})
		if token != wantToken || result != wantResult {
			t.Errorf("Parse(%q) = %q, %v; want %q, %v", value, token, result, wantToken, wantResult)
		}
	})
}
