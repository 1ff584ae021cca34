package storage

import (
	"context"
	"fmt"
	"net/mail"
	"slices"
	"strconv"
	"strings"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
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

// ListSettings returns the settings that are set, in KnownSettings order.
func (s *Store) ListSettings(ctx context.Context) ([]Setting, error) {
	out := []Setting{}
	err := s.view(ctx, func(r kv.Reader) error {
		for _, key := range KnownSettings {
			val, found, err := getValue(r, settingKey(key))
			if err != nil {
				return err
			}
			if found {
				out = append(out, Setting{Type: SettingType, Key: key, Value: string(val)})
			}
		}
		return nil
	})
	return out, err
}

func settingNotSet(key string) error {
	return fmt.Errorf("%w: setting %q is not set", ErrNotFound, short(key))
}

// GetSetting returns a setting's value, or ErrNotFound if it is not set.
func (s *Store) GetSetting(ctx context.Context, key string) (string, error) {
	if !slices.Contains(KnownSettings, key) {
		return "", settingNotSet(key)
	}
	var out string
	err := s.view(ctx, func(r kv.Reader) error {
		val, found, err := getValue(r, settingKey(key))
		if err != nil {
			return err
		}
		if !found {
			return settingNotSet(key)
		}
		out = string(val)
		return nil
	})
	return out, err
}

// PutSetting validates a setting and stores its normalized value.
func (s *Store) PutSetting(ctx context.Context, key, value string) (Setting, error) {
	norm, err := ValidateSetting(key, value)
	if err != nil {
		return Setting{}, err
	}
	err = s.update(ctx, func(w *writeTxn) error {
		if err := set(w, settingKey(key), []byte(norm)); err != nil {
			return err
		}
		w.Publish(settingKey(key), nil)
		w.record(ctx, ActionSettingPut, key, key+"="+norm)
		return nil
	})
	if err != nil {
		return Setting{}, err
	}
	return Setting{Type: SettingType, Key: key, Value: norm}, nil
}

// DeleteSetting removes a setting, or returns ErrNotFound if it is not set.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	if !slices.Contains(KnownSettings, key) {
		return settingNotSet(key)
	}
	return s.update(ctx, func(w *writeTxn) error {
		found, err := exists(w, settingKey(key))
		if err != nil {
			return err
		}
		if !found {
			return settingNotSet(key)
		}
		if err := del(w, settingKey(key)); err != nil {
			return err
		}
		w.Publish(settingKey(key), nil)
		w.record(ctx, ActionSettingDelete, key, "")
		return nil
	})
}
