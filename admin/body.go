package admin

import (
	"io"
	"net/http"
	"unicode/utf8"
)

// readBody reads the whole request body, at most 1 MiB, and refuses bytes
// that are not UTF-8. encoding/json would otherwise replace them with
// U+FFFD and store a value the client never sent (a token name of "��").
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return nil, decodeError(err)
	}
	if !utf8.Valid(body) {
		return nil, badRequest("request body is not valid UTF-8")
	}
	return body, nil
}
