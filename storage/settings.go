package storage

import (
	"fmt"
	"net/mail"
	"slices"
	"strconv"
	"strings"
)

// The seed's App Config keys. The names are part of the contract.
const (
	SettingType               = "AppConfig"
	SettingNotificationDays   = "EnableUserTokenNotification"
	SettingNotificationEmails = "UserTokenExpirationNotificationEmails"
)

// maxSettingValue bounds a setting value; longer input is refused, not cut.
const maxSettingValue = 4096

// KnownSettings lists the setting keys in display order.
var KnownSettings = []string{SettingNotificationDays, SettingNotificationEmails}

// ValidateSetting checks a setting value and returns it normalized (spaces
// trimmed, list items in a canonical form). The error says what is wrong in
// words a person can act on, and wraps ErrInvalid.
func ValidateSetting(key, value string) (string, error) {
	if len(value) > maxSettingValue {
		return "", fmt.Errorf("%w: value is longer than %d characters", ErrInvalid, maxSettingValue)
	}
	switch key {
	case SettingNotificationDays:
		days, err := ParseNotificationDays(value)
		if err != nil {
			return "", err
		}
		parts := make([]string, len(days))
		for i, d := range days {
			parts[i] = strconv.Itoa(d)
		}
		return strings.Join(parts, ";"), nil
	case SettingNotificationEmails:
		addrs, err := ParseNotificationEmails(value)
		if err != nil {
			return "", err
		}
		return strings.Join(addrs, ";"), nil
	default:
		return "", fmt.Errorf("%w: unknown setting key %q (known keys: %s)", ErrInvalid, key, strings.Join(KnownSettings, ", "))
	}
}

// ParseNotificationDays parses EnableUserTokenNotification: a whole number
// of days from 1 to 365, or a semicolon-separated list of them such as
// "30;7;1". The result is sorted from largest to smallest, without repeats.
func ParseNotificationDays(value string) ([]int, error) {
	var days []int
	for part := range strings.SplitSeq(value, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || n > 365 {
			return nil, fmt.Errorf("%w: %s must be a whole number of days from 1 to 365, or a list like 30;7;1 (got %q)", ErrInvalid, SettingNotificationDays, part)
		}
		if !slices.Contains(days, n) {
			days = append(days, n)
		}
	}
	if len(days) == 0 {
		return nil, fmt.Errorf("%w: %s needs at least one number of days from 1 to 365", ErrInvalid, SettingNotificationDays)
	}
	slices.Sort(days)
	slices.Reverse(days)
	return days, nil
}

// ParseNotificationEmails parses UserTokenExpirationNotificationEmails:
// plain email addresses separated by semicolons.
func ParseNotificationEmails(value string) ([]string, error) {
	var addrs []string
	for part := range strings.SplitSeq(value, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		a, err := mail.ParseAddress(part)
		if err != nil || a.Name != "" || a.Address != part || strings.ContainsAny(part, "\r\n") {
			return nil, fmt.Errorf("%w: %q is not a plain email address like ops@example.com; separate addresses with semicolons", ErrInvalid, part)
		}
		if !slices.Contains(addrs, part) {
			addrs = append(addrs, part)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s needs at least one email address", ErrInvalid, SettingNotificationEmails)
	}
	return addrs, nil
}
