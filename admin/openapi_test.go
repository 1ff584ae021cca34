package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/apicontract"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// TestOpenAPILint lints openapi.json with the pinned Redocly CLI and its
// recommended-strict rules (redocly.yaml; warnings are errors).
func TestOpenAPILint(t *testing.T) {
	redocly := testtools.NPMTool(t, testtools.RedoclyCLI, "redocly")
	cmd := exec.Command(redocly, "lint", "openapi.json", "--format=stylish")
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redocly lint openapi.json: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("Your API description is valid")) {
		t.Fatalf("redocly lint did not say the document is valid:\n%s", out)
	}
}

// TestOpenAPIServed: GET /openapi.json needs no token and serves the
// embedded document byte for byte.
func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	r := e.must(http.StatusOK, "GET", "/openapi.json", "", "")
	if !bytes.Equal(r.body, openapiJSON) {
		t.Error("GET /openapi.json is not the embedded openapi.json")
	}
	file, err := os.ReadFile("openapi.json")
	if err != nil || !bytes.Equal(file, OpenAPI()) {
		t.Errorf("OpenAPI() differs from openapi.json (%v)", err)
	}
	var doc struct{ OpenAPI string }
	r.decode(t, &doc)
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi = %q; want 3.1.x", doc.OpenAPI)
	}
}

// TestOpenAPISchemasAreClosed: every object schema refuses unknown fields
// (additionalProperties: false), so a field the code sends but the document
// does not describe fails the contract check. The exceptions are the
// document itself, served as a free-form object, and maps (an object with
// no properties whose values all follow one schema).
func TestOpenAPISchemasAreClosed(t *testing.T) {
	var doc any
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	freeForm := "/paths/~1openapi.json/get/responses/200/content/application~1json/schema"
	checked := 0
	var walk func(ptr string, v any)
	walk = func(ptr string, v any) {
		switch v := v.(type) {
		case map[string]any:
			_, hasProps := v["properties"].(map[string]any)
			_, isMap := v["additionalProperties"].(map[string]any)
			if v["type"] == "object" && !hasProps && isMap {
				checked++
			} else if v["type"] == "object" || hasProps {
				checked++
				if v["additionalProperties"] != false && ptr != freeForm {
					t.Errorf("schema at %s does not say additionalProperties: false", ptr)
				}
			}
			for k, child := range v {
				walk(ptr+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k), child)
			}
		case []any:
			for i, child := range v {
				walk(fmt.Sprintf("%s/%d", ptr, i), child)
			}
		}
	}
	walk("", doc)
	if checked < 10 {
		t.Errorf("only %d object schemas found; is the walk broken?", checked)
	}
}

// TestOpenAPIEveryRouteDocumented: each route the handler serves is an
// operation of the document, and each operation is a route.
func TestOpenAPIEveryRouteDocumented(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for p, item := range doc.Paths {
		for method := range item {
			if method != "parameters" {
				documented = append(documented, strings.ToUpper(method)+" "+p)
			}
		}
	}
	h := &handler{cfg: withDefaults(Config{}), mux: http.NewServeMux()}
	h.routes()
	routed := slices.Clone(h.patterns)
	slices.Sort(documented)
	slices.Sort(routed)
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routed, d) {
			t.Errorf("openapi.json documents %s, which the handler does not serve", d)
		}
	}
}

// TestContractCatchesDrift shows what the contract check refuses, with the
// changes the API is expected to go through: a field removed from the
// document or added by the code, a status, a query parameter, a header or
// a request field that the document does not describe.
func TestContractCatchesDrift(t *testing.T) {
	e := newEnv(t)
	real := contract(t)
	get := func(path, token string) (*http.Request, *http.Response, []byte) {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(res.Body)
		return req, res, b.Bytes()
	}
	req, res, body := get("/me", e.root)
	if p := real.Check(req, nil, res.StatusCode, res.Header, body); p != nil {
		t.Fatalf("GET /me does not match the document: %v", p)
	}

	mustFail := func(name string, c *apicontract.Contract, req *http.Request, reqBody []byte, status int, header http.Header, body []byte, want string) {
		t.Helper()
		p := c.Check(req, reqBody, status, header, body)
		if !strings.Contains(strings.Join(p, "\n"), want) {
			t.Errorf("%s: problems %q; want one mentioning %q", name, p, want)
		}
	}

	// A field removed from the document.
	var doc map[string]any
	_ = json.Unmarshal(openapiJSON, &doc)
	user := doc["components"].(map[string]any)["schemas"].(map[string]any)["User"].(map[string]any)
	delete(user["properties"].(map[string]any), "email")
	user["required"] = slices.DeleteFunc(user["required"].([]any), func(v any) bool { return v == "email" })
	edited, _ := json.Marshal(doc)
	withoutEmail := apicontract.MustNew(t, edited, apicontract.Options{})
	mustFail("field removed from the document", withoutEmail, req, nil, res.StatusCode, res.Header, body, "additional properties 'email' not allowed")

	// A field the code adds.
	extra := bytes.Replace(body, []byte(`{`), []byte(`{"last_login_at":"2030-01-02T03:04:05Z",`), 1)
	mustFail("undocumented field", real, req, nil, res.StatusCode, res.Header, extra, "additional properties 'last_login_at' not allowed")

	// A map the document allows (scope_usage) in a list's item passes;
	// an undeclared field there does not.
	reqList, resList, bodyList := get("/tokens", e.root)
	used := bytes.Replace(bodyList, []byte(`{`), []byte(`{"scope_usage":{"deploy":{"last_needed_at":"2030-01-02T03:04:05Z"}},`), 1)
	if p := real.Check(reqList, nil, resList.StatusCode, resList.Header, used); p != nil {
		t.Errorf("a token list with scope_usage does not match the document: %v", p)
	}
	mustFail("undocumented field in a list", real, reqList, nil, resList.StatusCode, resList.Header,
		bytes.Replace(bodyList, []byte(`{`), []byte(`{"owner_email":"x@example.com",`), 1), "additional properties 'owner_email' not allowed")

	// A status the document does not list for the operation.
	mustFail("undocumented status", real, req, nil, 502, res.Header.Clone(), []byte(`{"error":"bad gateway"}`), "502")

	// Offset paging, which the API does not do: a query parameter and a
	// header with the total.
	reqPage, resPage, bodyPage := get("/tokens?limit=10&page=2", e.root)
	mustFail("undocumented query parameter", real, reqPage, nil, resPage.StatusCode, resPage.Header, bodyPage, "query parameter 'page'")
	reqTokens, resTokens, bodyTokens := get("/tokens", e.root)
	hTotal := resTokens.Header.Clone()
	hTotal.Set("X-Total-Count", "1")
	mustFail("undocumented response header", real, reqTokens, nil, resTokens.StatusCode, hTotal, bodyTokens, "header 'X-Total-Count'")
	// A Link header where the document has none.
	reqSettings, resSettings, bodySettings := get("/settings", e.root)
	hLink := resSettings.Header.Clone()
	hLink.Set("Link", `</settings?cursor=abc>; rel="next"`)
	mustFail("undocumented Link header", real, reqSettings, nil, resSettings.StatusCode, hLink, bodySettings, "header 'Link'")

	// A request field the server accepts but the document does not know.
	patch, _ := http.NewRequest("PATCH", e.srv.URL+"/users/root", strings.NewReader(""))
	patch.Header.Set("Authorization", "Bearer "+e.root)
	patch.Header.Set("Content-Type", "application/json")
	mustFail("undocumented request field accepted", real, patch, []byte(`{"email":"r@example.com","nickname":"x"}`),
		http.StatusOK, res.Header, body, "refuses")

	// An endpoint that is not in the document must not succeed.
	reqUI, _ := http.NewRequest("GET", e.srv.URL+"/sessions", nil)
	mustFail("undocumented endpoint", real, reqUI, nil, http.StatusOK, res.Header, []byte(`[]`), "not in the OpenAPI document")
}
