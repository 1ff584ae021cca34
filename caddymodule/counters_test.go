package caddymodule

import (
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// BenchmarkDecisionCount is the cost of counting a decision with every
// core counting at once, as under load.
func BenchmarkDecisionCount(b *testing.B) {
	c := new(decisionCounters)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.count(verifier.ResultOK)
		}
	})
}
