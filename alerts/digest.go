package alerts

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// digest is one composed email.
type digest struct {
	subject, body string
}

const dateFormat = "2006-01-02 15:04 UTC"

// composeDigest writes the plain-text email that lists every token in
// notices, with the steps an administrator takes to replace each one.
// overdue counts tokens that did not fit and will follow in the next email.
func composeDigest(now time.Time, notices []notice, overdue int) digest {
	subject := digestSubject(notices, overdue)

	var b strings.Builder
	fmt.Fprintf(&b, "These permanent API tokens have come within a notification threshold of their expiry (as of %s).\n", now.UTC().Format(dateFormat))
	b.WriteString("Automation that still uses them will start getting 401 responses when they expire.\n\n")
	for _, n := range notices {
		writeNotice(&b, n)
	}
	if overdue > 0 {
		fmt.Fprintf(&b, "%d more tokens are due a warning; they follow in the next email.\n\n", overdue)
	}
	b.WriteString("What to do, for each token (paths are on the gateway's admin API):\n")
	b.WriteString("  1. An administrator creates a new token for the user: POST /users/{user}/tokens with {\"name\": \"...\"}.\n")
	b.WriteString("     (Or rotates it: POST /users/{user}/tokens/{id}/rotate, which keeps the name.)\n")
	b.WriteString("  2. Put the new token into the automation that uses the old one.\n")
	b.WriteString("  3. Delete the old token: DELETE /users/{user}/tokens/{id}.\n")
	b.WriteString("\nYou get one email per token and threshold; the list of thresholds is the EnableUserTokenNotification setting.\n")
	return digest{subject: subject, body: b.String()}
}

func digestSubject(notices []notice, overdue int) string {
	total := len(notices) + overdue
	expired := slices.ContainsFunc(notices, func(n notice) bool { return n.fault.State == storage.FaultExpired })
	switch {
	case total == 1 && expired:
		return "[API tokens] 1 permanent token has expired"
	case total == 1:
		return "[API tokens] 1 permanent token expires soon"
	case expired:
		return fmt.Sprintf("[API tokens] %d permanent tokens expire soon or have expired", total)
	default:
		return fmt.Sprintf("[API tokens] %d permanent tokens expire soon", total)
	}
}

func writeNotice(b *strings.Builder, n notice) {
	f := n.fault
	user, name := printable(f.User), printable(f.TokenName)
	fmt.Fprintf(b, "- user %s, token %q (id %s)\n", user, name, f.TokenID)
	if f.State == storage.FaultExpired {
		fmt.Fprintf(b, "  EXPIRED on %s\n", f.ExpiresAt.UTC().Format(dateFormat))
	} else {
		fmt.Fprintf(b, "  expires %s: %s left (%d-day warning)\n",
			f.ExpiresAt.UTC().Format(dateFormat), daysText(f.DaysLeft), n.threshold)
	}
	fmt.Fprintf(b, "  replace: POST /users/%s/tokens, then DELETE /users/%s/tokens/%s\n\n", user, user, f.TokenID)
}

func daysText(days int) string {
	switch days {
	case 0:
		return "less than a day"
	case 1:
		return "1 day"
	default:
		return fmt.Sprintf("%d days", days)
	}
}

// printable drops control characters, so that a stored name cannot add
// lines of its own to the email.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}
