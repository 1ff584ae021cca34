package alerts

import (
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// FuzzNotificationRule walks one token towards and past its expiry in
// random steps while the thresholds change once on the way, applying the
// pass's rule (tightestCrossed, emailDue) at each step. Whatever happens:
// each email is for a tighter threshold than the one before (so never the
// same threshold twice, never a wider one after a tighter one), and a
// token that expires while notifications are on has been warned.
func FuzzNotificationRule(f *testing.F) {
	f.Add("30;7;1", "30", []byte{10, 200, 3, 90, 255, 7})
	f.Add("7", "30;14;3", []byte{1, 1, 1, 250, 250})
	f.Add("1", "365", []byte{255, 255, 255})
	f.Fuzz(func(t *testing.T, before, after string, steps []byte) {
		first, err1 := storage.ParseNotificationDays(before)
		second, err2 := storage.ParseNotificationDays(after)
		if err1 != nil || err2 != nil || len(steps) == 0 {
			t.Skip()
		}
		remaining := 40 * day
		var state storage.AlertState
		var emailed []int
		for i, step := range steps {
			thresholds := first
			if i >= len(steps)/2 {
				thresholds = second
			}
			remaining -= time.Duration(step) * time.Hour
			threshold := tightestCrossed(thresholds, remaining)
			if emailDue(state, threshold) {
				if len(emailed) > 0 && threshold >= emailed[len(emailed)-1] {
					t.Fatalf("emailed for %d days after %v", threshold, emailed)
				}
				emailed = append(emailed, threshold)
				state.NotifiedDays = threshold
			}
		}
		if remaining <= 0 && state.NotifiedDays == 0 {
			t.Fatalf("token expired (steps %v, thresholds %v then %v) without a warning", steps, first, second)
		}
	})
}
