// Package apicontract checks HTTP exchanges with the admin API against its
// OpenAPI 3.1 document, so the document cannot drift from the code. Tests
// wrap their HTTP client's transport with Contract.Transport (or call
// Contract.Check) and every request they send and every answer they get is
// validated:
//
//   - an answer must have a documented status, a body that matches the
//     documented schema (the schemas refuse unknown fields), a documented
//     content type, and no header that is not documented for it (besides
//     the generic ones, see Options);
//   - a request must name a documented operation, with documented query
//     parameters and headers and a body that matches its schema. A request
//     the document refuses may be sent on purpose (a test of bad input), but
//     then the answer must be a documented 4xx: the server must never accept
//     what the document says it refuses;
//   - a request to an undocumented path or method must get a 4xx error
//     object, never a success.
//
// It uses github.com/pb33f/libopenapi-validator, which implements OpenAPI
// 3.1 (JSON Schema 2020-12), in its strict mode, which reports undeclared
// query parameters, headers and properties. It is meant for tests and has
// no Caddy dependency.
package apicontract

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi-validator/responses"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/pb33f/libopenapi/orderedmap"
)

// Options says which parts of the traffic are outside the contract.
type Options struct {
	// Prefix is the path the API is mounted under, e.g. "/api-tokens";
	// it is stripped before matching. Requests outside it are not checked
	// (a test client may also call the gateway).
	Prefix string
	// IgnorePaths are paths (below Prefix) that are not part of the API,
	// with everything under them, e.g. "/ui" for the web page.
	IgnorePaths []string
	// IgnoreRequestHeaders are request headers a test adds that are not part
	// of the API (e.g. one that fakes the client address).
	IgnoreRequestHeaders []string
	// IgnoreResponseHeaders are response headers added around the API,
	// e.g. Caddy's "Server". The security headers every answer carries
	// (see the document's description) are always ignored.
	IgnoreResponseHeaders []string
}

// genericResponseHeaders are on every answer of the admin API and are
// described once in the document's info.description rather than on each
// of its answers; Content-Type, Content-Length, Cache-Control and Date are
// ignored by the validator itself.
var genericResponseHeaders = []string{
	"x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy",
}

// Contract validates exchanges against one OpenAPI document.
type Contract struct {
	opts  Options
	mu    sync.Mutex // the validator's caches are not documented as safe for concurrent use
	v     validator.Validator
	model *v3.Document
	vopts []config.Option
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Contract{}
)

// New returns a Contract for the OpenAPI 3.1 document spec. Contracts are
// cached by document and options, so calling New in every test is cheap.
func New(spec []byte, opts Options) (*Contract, error) {
	optsJSON, _ := json.Marshal(opts)
	key := fmt.Sprintf("%x", sha256.Sum256(append(append([]byte{}, spec...), optsJSON...)))
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if c, ok := cache[key]; ok {
		return c, nil
	}
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		return nil, fmt.Errorf("parsing the OpenAPI document: %w", err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1") {
		return nil, fmt.Errorf("the document is OpenAPI %q, want 3.1", v)
	}
	ignored := append(slices.Clone(genericResponseHeaders), opts.IgnoreResponseHeaders...)
	ignored = append(ignored, opts.IgnoreRequestHeaders...)
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("building the OpenAPI model: %w", err)
	}
	vopts := []config.Option{
		config.WithStrictMode(),
		// Unknown body properties are refused by the schemas themselves
		// (additionalProperties: false, which the admin package's tests
		// require of every object schema); strict mode would also flag the
		// keys of a free-form object, such as the document served at
		// /openapi.json or a token's scope_usage, in a list too (whose
		// items' paths start $.body[0], which $.body.** does not match).
		// It still reports undeclared query parameters and headers.
		config.WithStrictIgnorePaths("$.body.**", "$.body[*].**"),
		config.WithStrictIgnoredHeadersExtra(lower(ignored)...),
		config.WithFormatAssertions(),
		config.WithContentAssertions(),
	}
	v, errs := validator.NewValidator(doc, vopts...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("building the validator: %w", errors.Join(errs...))
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("the document is not valid OpenAPI 3.1:\n%s", describe(verrs))
	}
	c := &Contract{opts: opts, v: v, model: &model.Model, vopts: vopts}
	cache[key] = c
	return c, nil
}

// MustNew is New for tests: it fails tb on an error.
func MustNew(tb testing.TB, spec []byte, opts Options) *Contract {
	tb.Helper()
	c, err := New(spec, opts)
	if err != nil {
		tb.Fatalf("apicontract: %v", err)
	}
	return c
}

// Check validates one exchange and returns what does not match the
// document, in words; nil means it matches. reqBody and respBody are the
// bodies as sent and received (req.Body and the response's Body are not
// read).
func (c *Contract) Check(req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) []string {
	path, checked := c.apiPath(req.URL.Path)
	if !checked {
		return nil
	}
	r := req.Clone(req.Context())
	r.URL.Path, r.URL.RawPath = path, ""
	r.RequestURI = ""
	what := fmt.Sprintf("%s %s", req.Method, path)
	if req.URL.RawQuery != "" {
		what += "?" + req.URL.RawQuery
	}
	resp := &http.Response{StatusCode: status, Header: header, Request: r}

	c.mu.Lock()
	defer c.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	_, reqErrs := c.v.ValidateHttpRequestSync(r)
	if undocumentedOperation(reqErrs) {
		if status >= 400 && status < 500 && isErrorObject(header, respBody) {
			return nil // an undocumented endpoint, refused: as it should be
		}
		return []string{fmt.Sprintf("%s is not in the OpenAPI document, but the server answered %d %s", what, status, clip(respBody))}
	}

	var problems []string
	if len(reqErrs) > 0 && (status < 400 || status >= 500) {
		problems = append(problems, fmt.Sprintf("%s: the server answered %d to a request the OpenAPI document refuses:\n%s",
			what, status, describe(reqErrs)))
	}
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	_, respErrs := c.v.ValidateHttpResponse(r, resp)
	respErrs = append(respErrs, c.undeclaredHeaders(r, resp)...)
	if len(respErrs) > 0 {
		problems = append(problems, fmt.Sprintf("%s: the answer %d %s does not match the OpenAPI document:\n%s",
			what, status, clip(respBody), describe(respErrs)))
	}
	return problems
}

// undeclaredHeaders reports the headers of an answer whose documented
// response declares no headers at all: the validator checks undeclared
// headers only against a response that declares some.
func (c *Contract) undeclaredHeaders(r *http.Request, resp *http.Response) []*verrors.ValidationError {
	item, errs, template := paths.FindPath(r, c.model, config.NewValidationOptions(c.vopts...))
	if item == nil || len(errs) > 0 {
		return nil
	}
	op := item.GetOperations().GetOrZero(strings.ToLower(r.Method))
	if op == nil || op.Responses == nil {
		return nil
	}
	code := strconv.Itoa(resp.StatusCode)
	documented := op.Responses.Codes.GetOrZero(code)
	if documented == nil || documented.Headers != nil {
		return nil
	}
	_, herrs := responses.ValidateResponseHeaders(r, resp, orderedmap.New[string, *v3.Header](), template, code, c.vopts...)
	return herrs
}

// apiPath strips the prefix and tells whether the path is in the contract.
func (c *Contract) apiPath(p string) (string, bool) {
	if c.opts.Prefix != "" {
		rest, ok := strings.CutPrefix(p, c.opts.Prefix)
		if !ok || !strings.HasPrefix(rest, "/") {
			return "", false
		}
		p = rest
	}
	for _, ig := range c.opts.IgnorePaths {
		if p == ig || strings.HasPrefix(p, strings.TrimSuffix(ig, "/")+"/") {
			return "", false
		}
	}
	return p, true
}

// Transport returns a RoundTripper that sends each request with base (nil
// means http.DefaultTransport) and fails tb (without stopping it) when the
// exchange does not match the document.
func (c *Contract) Transport(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{c: c, tb: tb, base: base}
}

// Client returns a copy of client (nil: a new one) whose transport checks
// every exchange.
func (c *Contract) Client(tb testing.TB, client *http.Client) *http.Client {
	out := &http.Client{}
	if client != nil {
		*out = *client
	}
	out.Transport = c.Transport(tb, out.Transport)
	return out
}

type transport struct {
	c    *Contract
	tb   testing.TB
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if _, checked := t.c.apiPath(req.URL.Path); !checked {
		return resp, nil
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err != nil {
		// A stream the server cut off (a failed backup) is the test's
		// business; there is nothing whole to check.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(respBody), errReader{err}))
		return resp, nil
	}
	for _, p := range t.c.Check(req, reqBody, resp.StatusCode, resp.Header, respBody) {
		t.tb.Errorf("OpenAPI contract: %s", p)
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// undocumentedOperation reports whether the validator could not find the
// path or the method in the document.
func undocumentedOperation(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation &&
			(e.ValidationSubType == helpers.ValidationMissing || e.ValidationSubType == helpers.ValidationMissingOperation) {
			return true
		}
	}
	return false
}

// isErrorObject reports whether an answer is the API's {"error": "..."}.
func isErrorObject(header http.Header, body []byte) bool {
	if header.Get("Content-Type") != "application/json" {
		return false
	}
	var e map[string]any
	if json.Unmarshal(body, &e) != nil || len(e) != 1 {
		return false
	}
	msg, ok := e["error"].(string)
	return ok && msg != ""
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  - %s", e.Message)
		if e.Reason != "" && e.Reason != e.Message {
			fmt.Fprintf(&b, ": %s", e.Reason)
		}
		for _, s := range e.SchemaValidationErrors {
			loc := s.FieldPath
			if loc == "" {
				loc = strings.Join(s.InstancePath, "/")
			}
			fmt.Fprintf(&b, "\n      at %q: %s", loc, s.Reason)
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// secretPattern matches token secrets, which a failure message never shows.
var secretPattern = regexp.MustCompile(`caddy_(pat|tmp)_[A-Za-z0-9]+`)

func clip(b []byte) string {
	const max = 300
	s := secretPattern.ReplaceAllString(strings.TrimSpace(string(b)), "caddy_${1}_<secret>")
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

func lower(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ToLower(s)
	}
	return out
}
