package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// tsProgram calls the gateway with a client generated from the OpenAPI
// document. tsc type-checks every call against the generated types.
const tsProgram = `import createClient from "openapi-fetch";
import type { paths } from "./api.js";

declare const process: { argv: string[] };

const [baseUrl, username, password] = process.argv.slice(2);
const api = createClient<paths>({ baseUrl });

const login = await api.POST("/login", { body: { username, password } });
if (!login.data) throw new Error("login: " + login.response.status + " " + JSON.stringify(login.error));
const auth = { Authorization: "Bearer " + login.data.token };

const user = await api.POST("/users", {
  headers: auth,
  body: { username: "ts-bot", email: "ts@example.com", password: "ts-password-1" },
});
const token = await api.POST("/users/{username}/tokens", {
  headers: auth,
  params: { path: { username: "ts-bot" } },
  body: { name: "from-typescript" },
});
const listed = await api.GET("/tokens", { headers: auth, params: { query: { kind: "permanent" } } });
const setting = await api.PUT("/settings/{key}", {
  headers: auth,
  params: { path: { key: "EnableUserTokenNotification" } },
  body: { value: "30" },
});
const audit = await api.GET("/audit", { headers: auth });
const refused = await api.PUT("/settings/{key}", {
  headers: auth,
  params: { path: { key: "EnableUserTokenNotification" } },
  body: { value: "0" },
});

console.log(JSON.stringify({
  user: user.data?.username,
  tokenName: token.data?.name,
  tokenKind: token.data?.kind,
  secretPrefix: token.data?.token.slice(0, 10),
  listed: listed.data?.map((t) => t.name),
  setting: setting.data?.value,
  auditActions: audit.data?.map((a) => a.action),
  refusedStatus: refused.response.status,
  refusedError: refused.error?.error,
}));
`

// TestGeneratedTypeScriptClient generates a TypeScript client from the
// OpenAPI document with openapi-typescript, compiles a program that uses it
// with openapi-fetch under tsc --strict, and runs it with node against a
// real Caddy: the document is good enough for a standard generator.
func TestGeneratedTypeScriptClient(t *testing.T) {
	modules := testtools.NPMPackages(t, testtools.OpenAPITypeScript, testtools.OpenAPIFetch, testtools.TypeScript)
	node := testtools.NodeProgram(t)
	t.Setenv("API_TOKENS_TEST_ADMIN", "ts-admin")
	t.Setenv("API_TOKENS_TEST_ADMIN_PASSWORD", "ts-admin-password-1")
	port := freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin {env.API_TOKENS_TEST_ADMIN} {env.API_TOKENS_TEST_ADMIN_PASSWORD}
	}
}
http://127.0.0.1:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
}
`, globalOptions, t.TempDir(), port))
	base := fmt.Sprintf("http://127.0.0.1:%d/api-tokens", port)

	work := t.TempDir()
	files := map[string]string{
		"package.json":  `{"private": true, "type": "module"}`,
		"tsconfig.json": `{"compilerOptions": {"target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true, "noEmitOnError": true, "outDir": "out"}, "files": ["main.ts"]}`,
		"main.ts":       tsProgram,
	}
	// The document as the gateway serves it, not the file in the repo.
	served := send(t, "GET", base+"/openapi.json", "", nil)
	if served.status != 200 || string(served.body) != string(admin.OpenAPI()) {
		t.Fatalf("GET /openapi.json through Caddy: %d", served.status)
	}
	files["openapi.json"] = string(served.body)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(modules, "node_modules"), filepath.Join(work, "node_modules")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "node_modules", ".bin")
	step := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
		}
		return string(out)
	}
	step(node, filepath.Join(bin, "openapi-typescript"), "openapi.json", "-o", "api.d.ts")
	step(node, filepath.Join(bin, "tsc"), "-p", ".")
	out := step(node, "out/main.js", base, "ts-admin", "ts-admin-password-1")

	var got struct {
		User, TokenName, TokenKind, SecretPrefix, Setting, RefusedError string
		Listed, AuditActions                                            []string
		RefusedStatus                                                   int
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("the program printed %q: %v", out, err)
	}
	if got.User != "ts-bot" || got.TokenName != "from-typescript" || got.TokenKind != "permanent" || got.SecretPrefix != "caddy_pat_" ||
		len(got.Listed) != 1 || got.Listed[0] != "from-typescript" || got.Setting != "30" ||
		got.RefusedStatus != 400 || got.RefusedError == "" || len(got.AuditActions) == 0 || got.AuditActions[0] != "setting_put" {
		t.Errorf("the generated client saw %+v", got)
	}
}
