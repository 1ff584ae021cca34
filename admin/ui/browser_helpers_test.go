package ui_test

// Helpers that drive the page as a person does: controls are found by their
// accessible role and visible name (as a screen reader announces them),
// clicked with the mouse at their centre, and typed into with key events.
// An element that is hidden, or behind an open modal dialog, cannot be found
// and so cannot be clicked.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

var updateScreenshots = flag.Bool("update-screenshots", false,
	"write the browser tests' screenshots to docs/screenshots for the README")

// The viewport of every page: small enough for light PNGs in the README.
const viewportW, viewportH = 1024, 640

// findTimeout bounds how long a step waits for the page to show something.
const findTimeout = 15 * time.Second

// One headless Chromium serves every test of the package; each test gets
// its own tab, so sessionStorage and the page state are its own.
var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserErr    error
	browserCancel = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	browserCancel()
	os.Exit(code)
}

func sharedBrowser(t *testing.T) context.Context {
	t.Helper()
	browserOnce.Do(func() {
		exe := testtools.DebianProgram(t, "chromium", "chromium")
		profile, err := os.MkdirTemp("", "ui-test-chromium-")
		if err != nil {
			browserErr = err
			return
		}
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
			chromedp.ExecPath(exe),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.UserDataDir(profile),
			chromedp.WindowSize(viewportW, viewportH),
		)
		ctx, cancelBrowser := chromedp.NewContext(allocCtx)
		browserCancel = func() {
			cancelBrowser()
			cancelAlloc()
			os.RemoveAll(profile)
		}
		// Start the browser now, on a context without a deadline: the first
		// Run's context lives as long as the browser.
		browserErr = chromedp.Do(ctx)
		browserCtx = ctx
	})
	if browserErr != nil {
		t.Fatalf("starting headless Chromium: %v", browserErr)
	}
	return browserCtx
}

// page is one browser tab under test.
type page struct {
	t   *testing.T
	ctx context.Context
	env *testEnv

	mu       sync.Mutex
	problems []string // script errors, CSP violations, console errors
}

// openPage opens the admin page of env in a new tab. When the test ends it
// fails the test if the page logged any script error or CSP violation.
func openPage(t *testing.T, env *testEnv) *page {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(sharedBrowser(t))
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(func() { cancel(); cancelTab() })
	p := &page{t: t, ctx: ctx, env: env}
	// Subscribe before navigating so nothing the page logs is missed.
	go collect(p, chromedp.Events(ctx, runtime.ExceptionThrown), func(e runtime.EventExceptionThrown) string {
		return "exception: " + e.ExceptionDetails.Text + " " + describe(e.ExceptionDetails.Exception)
	})
	go collect(p, chromedp.Events(ctx, cdplog.EntryAdded), func(e cdplog.EventEntryAdded) string {
		// A 4xx answer is logged by the network layer; the tests expect
		// some. Everything else at error level is a fault of the page.
		if e.Entry.Level != cdplog.EntryLevelError || e.Entry.Source == cdplog.EntrySourceNetwork {
			return ""
		}
		return fmt.Sprintf("%s: %s (%s)", e.Entry.Source, e.Entry.Text, e.Entry.URL)
	})
	go collect(p, chromedp.Events(ctx, runtime.ConsoleAPICalled), func(e runtime.EventConsoleAPICalled) string {
		if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeWarning {
			return ""
		}
		return "console." + string(e.Type)
	})
	t.Cleanup(p.checkNoProblems)

	origin := env.srv.URL
	for _, perm := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: perm},
			Setting:    browser.PermissionSettingGranted,
			Origin:     origin,
		})
		p.check(err, "granting "+perm)
	}
	p.do(
		chromedp.EmulateViewport(viewportW, viewportH),
		// A background tab is never focused; the clipboard needs focus.
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true})
			return err
		}),
		chromedp.Navigate(env.url("/ui/")),
	)
	return p
}

// collect records the events that format turns into a problem ("" is none),
// until the tab closes.
func collect[E any](p *page, events iter.Seq2[E, error], format func(E) string) {
	for e, err := range events {
		if err != nil {
			return
		}
		if msg := format(e); msg != "" {
			p.mu.Lock()
			p.problems = append(p.problems, msg)
			p.mu.Unlock()
		}
	}
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	return o.Description
}

func (p *page) checkNoProblems() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, msg := range p.problems {
		p.t.Errorf("the page logged an error: %s", msg)
	}
}

func (p *page) check(err error, what string) {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	p.check(chromedp.Do(p.ctx, steps...), "browser")
}

// eval runs JavaScript in the page and decodes its value into T.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	p.check(err, "evaluating "+js)
	return v
}

// axNodes returns the elements a screen reader would find with this role
// and accessible name: hidden elements and those behind a modal dialog are
// ignored by the accessibility tree and so left out.
func (p *page) axNodes(role, name string) []*accessibility.Node {
	p.t.Helper()
	nodes, err := p.queryAX(role, name)
	p.check(err, fmt.Sprintf("querying the accessibility tree for %s %q", role, name))
	return nodes
}

func (p *page) queryAX(role, name string) ([]*accessibility.Node, error) {
	return chromedp.Run(p.ctx, func(ctx context.Context, t *chromedp.Target) ([]*accessibility.Node, error) {
		doc, err := cdp.Call(ctx, t, dom.GetDocument, dom.GetDocumentParams{})
		if err != nil {
			return nil, err
		}
		res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{
			NodeID: doc.Root.NodeID, Role: role, AccessibleName: name,
		})
		if err != nil {
			return nil, err
		}
		var shown []*accessibility.Node
		for _, n := range res.Nodes {
			if !n.Ignored {
				shown = append(shown, n)
			}
		}
		return shown, nil
	})
}

// find waits until exactly one element with this role and name is shown.
func (p *page) find(role, name string) *accessibility.Node {
	p.t.Helper()
	deadline := time.Now().Add(findTimeout)
	for {
		// An error here is the document being replaced under the query
		// (a navigation): ask again.
		nodes, err := p.queryAX(role, name)
		if err == nil && len(nodes) == 1 {
			return nodes[0]
		}
		if time.Now().After(deadline) {
			p.screenshotOnFailure()
			p.t.Fatalf("want one %s named %q on the page, found %d (%v)\nvisible text:\n%s", role, name, len(nodes), err, p.visibleText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gone waits until no element with this role and name is shown.
func (p *page) gone(role, name string) {
	p.t.Helper()
	deadline := time.Now().Add(findTimeout)
	for len(p.axNodes(role, name)) > 0 {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s %q is still shown\nvisible text:\n%s", role, name, p.visibleText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// absent checks at once that nothing with this role and name is shown.
func (p *page) absent(role, name string) {
	p.t.Helper()
	if n := len(p.axNodes(role, name)); n > 0 {
		p.t.Errorf("%s %q should not be shown, found %d", role, name, n)
	}
}

// click finds the control and clicks its centre with the mouse.
func (p *page) click(role, name string) {
	p.t.Helper()
	id := p.find(role, name).BackendDOMNodeID
	p.do(func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := cdp.Call(ctx, t, dom.ScrollIntoViewIfNeeded, dom.ScrollIntoViewIfNeededParams{BackendNodeID: id}); err != nil {
			return chromedp.Void{}, err
		}
		quads, err := cdp.Call(ctx, t, dom.GetContentQuads, dom.GetContentQuadsParams{BackendNodeID: id})
		if err != nil {
			return chromedp.Void{}, err
		}
		if len(quads.Quads) == 0 || len(quads.Quads[0]) != 8 {
			return chromedp.Void{}, fmt.Errorf("%s %q has no box to click", role, name)
		}
		q := quads.Quads[0]
		x, y := (q[0]+q[2]+q[4]+q[6])/4, (q[1]+q[3]+q[5]+q[7])/4
		return chromedp.MouseClickXY(x, y)(ctx, t)
	})
}

// focus moves the keyboard focus to the control.
func (p *page) focus(role, name string) {
	p.t.Helper()
	id := p.find(role, name).BackendDOMNodeID
	p.do(func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, dom.Focus, dom.FocusParams{BackendNodeID: id})
		return chromedp.Void{}, err
	})
}

// fill replaces the text of a field the way a person does: focus it,
// select what is there, and type.
func (p *page) fill(name, text string) {
	p.t.Helper()
	p.focus("textbox", name)
	eval[chromedp.Void](p, `document.activeElement.select()`)
	p.keys(text)
}

// keys types on the keyboard into whatever has the focus.
func (p *page) keys(keys string, opts ...chromedp.KeyOption) {
	p.t.Helper()
	p.do(chromedp.KeyEvent(keys, opts...))
}

// choose picks an option of a select by typing its visible label, as a
// keyboard user does, and checks that it took.
func (p *page) choose(name, option string) {
	p.t.Helper()
	p.focus("combobox", name)
	p.keys(option)
	if got := p.value("combobox", name); got != option {
		p.t.Fatalf("select %q shows %q after typing %q", name, got, option)
	}
}

// value is what a field or select shows, as the accessibility tree reports.
func (p *page) value(role, name string) string {
	p.t.Helper()
	n := p.find(role, name)
	if n.Value == nil {
		return ""
	}
	var s string
	if err := json.Unmarshal(n.Value.Value, &s); err != nil {
		p.t.Fatalf("value of %s %q: %v", role, name, err)
	}
	return s
}

// hasState reports a boolean state (focused, selected, disabled...) of the
// control.
func (p *page) hasState(role, name, state string) bool {
	p.t.Helper()
	for _, prop := range p.find(role, name).Properties {
		if string(prop.Name) == state {
			var b bool
			_ = json.Unmarshal(prop.Value.Value, &b)
			return b
		}
	}
	return false
}

// text is the rendered text of the element that the CSS selector picks.
func (p *page) text(selector string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(document.querySelector(%q) || {innerText: ''}).innerText.trim()`, selector))
}

// waitText waits until the element that the CSS selector picks shows
// exactly want.
func (p *page) waitText(selector, want string) {
	p.t.Helper()
	deadline := time.Now().Add(findTimeout)
	for {
		got := p.text(selector)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s shows %q, want %q", selector, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor waits until ok reports true.
func (p *page) waitFor(what string, ok func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(findTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rows returns the rendered text of each cell of the table body with this
// id, which is what a person reads.
func (p *page) rows(tbodyID string) [][]string {
	p.t.Helper()
	return eval[[][]string](p, fmt.Sprintf(`[...document.getElementById(%q).rows].map(r => [...r.cells].map(c => c.innerText.trim()))`, tbodyID))
}

// waitRows waits until the table shows want.
func (p *page) waitRows(tbodyID string, want [][]string) {
	p.t.Helper()
	deadline := time.Now().Add(findTimeout)
	for {
		got := p.rows(tbodyID)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("table %s shows\n  %q\nwant\n  %q", tbodyID, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *page) visibleText() string {
	s, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}

func (p *page) sessionToken() string {
	p.t.Helper()
	return eval[string](p, `sessionStorage.getItem('api-tokens.token') || ''`)
}

// screenshot captures the viewport as a PNG, checks it decodes at the
// viewport's size, and with -update-screenshots writes it to
// docs/screenshots/<name> for the README.
func (p *page) screenshot(name string) {
	p.t.Helper()
	buf, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	p.check(err, "screenshot")
	img, err := png.Decode(bytes.NewReader(buf))
	p.check(err, "decoding screenshot")
	if b := img.Bounds(); b.Dx() != viewportW || b.Dy() != viewportH {
		p.t.Errorf("screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), viewportW, viewportH)
	}
	dir := p.t.TempDir()
	if *updateScreenshots {
		dir = filepath.Join(testtools.RepoRoot(p.t), "docs", "screenshots")
	}
	p.check(os.WriteFile(filepath.Join(dir, name), buf, 0o644), "writing screenshot")
}

// screenshotOnFailure keeps what the page looked like when a step failed.
func (p *page) screenshotOnFailure() {
	buf, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + ".png"
	path := filepath.Join(os.TempDir(), "ui-test-failure-"+name)
	if os.WriteFile(path, buf, 0o644) == nil {
		p.t.Logf("screenshot of the failure: %s", path)
	}
}
