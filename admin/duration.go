package admin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxDuration bounds every duration the API accepts: nothing in this product
// needs more than a century, and a bound keeps arithmetic far from overflow.
const maxDuration = 100 * 365 * 24 * time.Hour

// ParseDuration parses a duration in Caddy's forms: anything
// time.ParseDuration accepts ("90m", "1h30m", "1.5h") plus a "d" unit of 24
// hours that may be mixed with the others ("30d", "1d12h", "1.5d"). It
// rejects empty, negative and absurd (more than 100 years) values, so a
// caller never has to check the sign or worry about overflow.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("duration is empty; use a form like 90m, 12h or 30d")
	}
	if len(s) > 64 {
		return 0, errors.New("duration is too long; use a form like 90m, 12h or 30d")
	}
	if s == "0" {
		return 0, nil // the one unitless value Go accepts too
	}
	rest := strings.TrimPrefix(s, "+")
	if rest == "" {
		return 0, fmt.Errorf("invalid duration %q; use a form like 90m, 12h or 30d", s)
	}
	var total time.Duration
	for rest != "" {
		var seg string
		seg, rest = nextSegment(rest)
		d, err := parseSegment(seg)
		switch {
		case errors.Is(err, errTooLong) || err == nil && d > maxDuration-total:
			return 0, fmt.Errorf("duration %q is longer than 100 years", s)
		case err != nil && strings.HasPrefix(s, "-"):
			return 0, fmt.Errorf("duration %q is negative; durations must be zero or more", s)
		case err != nil:
			return 0, fmt.Errorf("invalid duration %q; use a form like 90m, 12h or 30d", s)
		}
		total += d
	}
	return total, nil
}

// nextSegment splits off one "<number><unit>" segment, e.g. "1.5d" from "1.5d3h".
func nextSegment(s string) (seg, rest string) {
	i := 0
	for i < len(s) && isNumberByte(s[i]) {
		i++
	}
	for i < len(s) && !isNumberByte(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isNumberByte(c byte) bool { return c >= '0' && c <= '9' || c == '.' }

var errTooLong = errors.New("longer than the maximum")

// parseSegment parses one segment. Days are handled here; every other unit is
// left to time.ParseDuration, so the forms Go accepts keep Go's meaning.
func parseSegment(seg string) (time.Duration, error) {
	num, isDays := strings.CutSuffix(seg, "d")
	if !isDays {
		// Each segment needs a unit: Go takes a bare "0" only as the whole
		// input (handled above), never inside "0m0".
		if num == "" || !isNumberByte(num[0]) || isNumberByte(num[len(num)-1]) {
			return 0, errors.New("segment needs a number and a unit")
		}
		return time.ParseDuration(seg)
	}
	if num == "" || strings.Trim(num, "0123456789.") != "" {
		return 0, errors.New("bad day count")
	}
	days, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	if days*24*float64(time.Hour) > float64(maxDuration) {
		return 0, errTooLong
	}
	return time.Duration(days * 24 * float64(time.Hour)), nil
}
