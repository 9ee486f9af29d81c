package cliutil

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pullship/pullship/schema"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"14d": 14 * 24 * time.Hour, "365d": 365 * 24 * time.Hour, "0d": 0,
		"36h": 36 * time.Hour, "90s": 90 * time.Second, "1h30m": 90 * time.Minute,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseDuration(FormatDuration(got)); err != nil || back != got {
			t.Errorf("FormatDuration(%v) = %q does not read back", got, FormatDuration(got))
		}
	}
	for _, in := range []string{"", "d", "1.5d", "-1d", "+1d", "01d", "14 d", "1w", "99999d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestCodes(t *testing.T) {
	errNothing := errors.New("nothing")
	codes := Codes{
		{Code: 0, Meaning: "success"},
		{Code: 1, Meaning: "failure"},
		{Code: 2, Meaning: "usage", Match: IsUsage},
		{Code: 3, Meaning: "refused", Match: IsRefused},
		{Code: 10, Meaning: "nothing to do", Match: func(err error) bool { return errors.Is(err, errNothing) }, Quiet: true},
	}
	for _, c := range []struct {
		err   error
		code  int
		quiet bool
	}{
		{nil, 0, false},
		{errors.New("network"), 1, false},
		{fmt.Errorf("a: %w", Usage(errors.New("bad flag"))), 2, false},
		{fmt.Errorf("verify: %w", schema.Refused(errors.New("bad signature"))), 3, false},
		{errors.Join(errors.New("net"), schema.Refused(errors.New("sig"))), 3, false},
		{errNothing, 10, true},
	} {
		if code, quiet := codes.Of(c.err); code != c.code || quiet != c.quiet {
			t.Errorf("Of(%v) = %d %v, want %d %v", c.err, code, quiet, c.code, c.quiet)
		}
	}
}
