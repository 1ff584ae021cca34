package admin

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	good := map[string]time.Duration{
		"0": 0, "0s": 0, "90m": 90 * time.Minute, "12h": 12 * time.Hour, "30d": 30 * day,
		"1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, ".5d": 12 * time.Hour, "1h30m": 90 * time.Minute,
		"2d3h4m5s": 2*day + 3*time.Hour + 4*time.Minute + 5*time.Second, "+1h": time.Hour,
		"250ms": 250 * time.Millisecond, "1µs": time.Microsecond, "36500d": 36500 * day,
	}
	for in, want := range good {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"": "empty", "-1h": "negative", "-0": "negative", "-30d": "negative", "36501d": "100 years",
		"876001h": "100 years", "5": "invalid", "d": "invalid", "h": "invalid", "1x": "invalid",
		"1e3d": "invalid", "30 d": "invalid", " 1h": "invalid", "1hd": "invalid", "1..5d": "invalid",
		"0x10d": "invalid", "NaNd": "invalid", "Infd": "invalid", "+": "invalid", "1d-1h": "invalid",
		"9999999999999999999h": "invalid", strings.Repeat("1", 65) + "s": "too long",
	}
	for in, want := range bad {
		if got, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want an error mentioning %q", in, got, err, want)
		}
	}
}

// FuzzParseDuration checks that any input either fails or gives a duration
// in range, and that inputs without days mean exactly what Go says they mean.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"0", "90m", "12h", "30d", "1d12h", "1.5d", "-1h", "", "1e3d", "+5m", "1µs", ".5h", "7d", "100000d", "1.d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDuration(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if got < 0 || got > maxDuration {
			t.Fatalf("ParseDuration(%q) = %v: out of range", s, got)
		}
		if !strings.Contains(s, "d") {
			if want, err := time.ParseDuration(s); err != nil || want != got {
				t.Fatalf("ParseDuration(%q) = %v; time.ParseDuration says %v, %v", s, got, want, err)
			}
		}
	})
}
