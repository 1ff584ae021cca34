package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A page of another site, open in the visitor's browser, cannot count a
// single failed login against the visitor's address: it can send a login
// only as text/plain or a form (JSON needs a preflight this API never
// answers), which is refused before the throttle sees it, and the browser
// marks it Sec-Fetch-Site, which is refused too.
func TestOtherSitesCannotCountFailedLogins(t *testing.T) {
	env := newEnv(t)
	// The visitor's browser and this test reach the API from 127.0.0.1;
	// the other site is served as localhost, another site to the browser.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>cute cats</title>`)
	}))
	t.Cleanup(evil.Close)
	tab, cancelTab := chromedp.NewContext(sharedBrowser(t))
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(func() { cancel(); cancelTab() })
	p := &page{t: t, ctx: ctx, env: env}
	p.do(chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)))

	sent := eval[float64](p, fmt.Sprintf(`(async () => {
		const login = %q;
		const body = JSON.stringify({username: "admin", password: "wrong"});
		let sent = 0;
		const tries = [];
		for (let i = 0; i < 10; i++) {
			tries.push(fetch(login, {method: "POST", mode: "no-cors", body}));
			tries.push(fetch(login, {method: "POST", mode: "no-cors", body, headers: {"Content-Type": "application/json"}}));
			tries.push(fetch(login, {method: "POST", mode: "no-cors", body: new URLSearchParams({username: "admin", password: "wrong"})}));
		}
		tries.push(navigator.sendBeacon(login, body) ? Promise.resolve() : Promise.reject());
		for (const r of await Promise.allSettled(tries)) if (r.status === "fulfilled") sent++;
		return sent;
	})()`, env.url("/login")))
	if sent != 31 {
		t.Fatalf("the other site's page sent %v of its 31 logins", sent)
	}
	// The beacon is sent in the background; give it time to arrive.
	time.Sleep(500 * time.Millisecond)

	// Had a single one counted, the 20th of these would be refused: the
	// limit is 20 failures per address.
	for i := range 20 {
		res := post(t, env.url("/login"), fmt.Sprintf(`{"username":"user%d","password":"wrong"}`, i))
		if res != http.StatusUnauthorized {
			t.Fatalf("failed login %d of 20 from the visitor's address: %d; want 401 (the page's attempts counted)", i+1, res)
		}
	}
	if res := post(t, env.url("/login"), `{"username":"user0","password":"wrong"}`); res != http.StatusTooManyRequests {
		t.Fatalf("the 21st failed login: %d; want 429", res)
	}
}

func post(t *testing.T, url, body string) int {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
