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
// does not describe fails the contract check. The one exception is the
// document itself, served as a free-form object.
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
			if v["type"] == "object" || hasProps {
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
