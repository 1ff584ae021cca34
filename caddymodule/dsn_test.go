package caddymodule

import "testing"

// A password written in the DSN is warned about, even next to
// placeholders that keep the DSN from parsing as written.
func TestLiteralPasswordInDSN(t *testing.T) {
	for dsn, want := range map[string]bool{
		"postgres://u:S3cret@db.example.com/tokens":               true,
		"postgres://u:S3cret@db.example.com:{env.PGPORT}/db":      true,
		"postgres://{env.PGUSER}:S3cret@{env.PGHOST}/db":          true,
		"host={env.PGHOST} port={env.PGPORT} password=S3cret":     true,
		"postgres://u:pre{env.PGPASSWORD}@db/db":                  true,
		"postgres://u:{env.PGPASSWORD}@db.example.com:{env.P}/db": false,
		"host=db password={env.PGPASSWORD} port={env.PGPORT}":     false,
		"{env.API_TOKENS_DATABASE_URL}":                           false,
		"postgres://u@db.example.com/tokens":                      false,
	} {
		if got := literalPassword(dsn); got != want {
			t.Errorf("literalPassword(%q) = %v, want %v", dsn, got, want)
		}
	}
}
