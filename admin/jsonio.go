package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// maxBodyBytes bounds every request body; a bigger one gets 413.
const maxBodyBytes = 1 << 20

// errEmptyBody is returned by decodeJSON for a body with nothing in it, so
// endpoints whose body is optional can accept it.
var errEmptyBody = badRequest("request body is empty; send a JSON object")

// decodeJSON reads exactly one JSON object from the request body into dst.
// It refuses unknown fields (so a typo never silently changes what is
// created), trailing data, wrong types and bodies over 1 MiB, each with a
// message that names the problem.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	// encoding/json decodes null into a struct as "no fields", which would
	// make a bare null pass as an empty object (and rotate a token).
	if bytes.Equal(bytes.Trim(body, " \t\r\n"), []byte("null")) {
		return badRequest("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	// Exactly one value: anything after it but whitespace is a client bug.
	if err := dec.Decode(&json.RawMessage{}); !errors.Is(err, io.EOF) {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			return decodeError(err)
		}
		return badRequest("request body has data after the JSON object; send exactly one object")
	}
	return nil
}

// checkContentType accepts only JSON bodies (415 for anything else, or
// none): a page on another origin can send text/plain or a form to this
// API without asking the browser's leave, but application/json needs a
// CORS preflight, which this API never answers. An empty body may come
// without a type, for endpoints whose body is optional.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.ContentLength == 0 {
		return nil
	}
	media, _, err := mime.ParseMediaType(ct)
	if err != nil || media != "application/json" {
		return errNotJSON
	}
	return nil
}

var errNotJSON = newError(http.StatusUnsupportedMediaType,
	"request body must be JSON, sent with Content-Type: application/json")

func decodeError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return newError(http.StatusRequestEntityTooLarge, "request body is larger than 1 MiB")
	}
	if errors.Is(err, io.EOF) {
		return errEmptyBody
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("request body is not valid JSON: it ends too early")
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return badRequest(fmt.Sprintf("request body is not valid JSON (at byte %d): %s", se.Offset, strings.TrimPrefix(se.Error(), "json: ")))
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return badRequest("request body must be a JSON object")
		}
		return badRequest(fmt.Sprintf("field %q must be %s", te.Field, describeType(te.Type)))
	}
	// The decoder reports unknown fields only as text: `json: unknown field "x"`.
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badRequest("unknown field " + field)
	}
	return badRequest("request body is not valid JSON")
}

// describeType names a Go type the way a JSON user thinks of it.
func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice:
		return "an array"
	default:
		return "a different type"
	}
}

// writeJSON sends v with the headers every JSON answer of this API carries.
// It encodes before writing, so an encoding failure can still become a 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(true)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error"}` + "\n")
	}
	setJSONHeaders(w.Header())
	// A client has the whole answer once it has this many bytes, even if
	// the handler goes on working after it (see afterAnswer).
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writeNoContent answers 204 with the same caching rules as JSON answers.
func writeNoContent(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func setJSONHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
}

// errorBody is the one shape of every error answer.
type errorBody struct {
	Error string `json:"error"`
}
