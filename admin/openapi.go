package admin

import (
	"bytes"
	_ "embed"
	"net/http"
)

// openapiJSON is the OpenAPI 3.1 description of this API. It is the
// contract: the tests validate every request they send and every answer
// they get against it (see package apicontract), and lint it with Redocly.
//
//go:embed openapi.json
var openapiJSON []byte

// OpenAPI returns the OpenAPI 3.1 document of the admin API, as served at
// GET /openapi.json.
func OpenAPI() []byte { return bytes.Clone(openapiJSON) }

// serveOpenAPI answers GET /openapi.json. It needs no token: the document
// holds no data.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	setJSONHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openapiJSON)
}
