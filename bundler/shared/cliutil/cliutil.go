// Package cliutil is the scaffolding the two command lines share: the
// streams a command reads and writes ([Env]), the exit-code policy (one
// table per binary, matched with errors.Is and errors.As in one place and
// printed in --help), usage errors, the signal context, the duration syntax
// of every duration flag (Go durations and whole days, "14d") and the
// logger. Both bundler/cli (pullship) and agent/cli (pullship-agent) import
// it; it imports no command-line framework and no template package, so the
// agent links nothing through it that it would not link anyway.
package cliutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pullship/pullship/schema"
)

// Env is what a command reads and writes besides its flags; tests replace it.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// DefaultEnv is the process's own standard streams and environment.
func DefaultEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// The exit codes both binaries give the same meaning.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // any other failure: network, I/O, a remote that failed, not found
	ExitUsage   = 2 // bad flags, arguments or config
	ExitRefused = 3 // refused: signature, digest, trust root, freshness or rollback check failed
)

// ErrUsage marks bad flags, arguments or config; see [Usage].
var ErrUsage = errors.New("usage")

// Usage marks err as a usage error (exit code 2) without changing its
// message. It returns nil for a nil err.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return usage{err}
}

type usage struct{ err error }

func (u usage) Error() string        { return u.err.Error() }
func (u usage) Unwrap() error        { return u.err }
func (u usage) Is(target error) bool { return target == ErrUsage }

// IsUsage reports whether err is a usage error.
func IsUsage(err error) bool { return errors.Is(err, ErrUsage) }

// IsRefused reports whether err refuses what a repository offered
// ([schema.ErrRefused]): the only errors that exit with code 3.
func IsRefused(err error) bool { return errors.Is(err, schema.ErrRefused) }

// Code is one row of a binary's exit-code table.
type Code struct {
	Code    int
	Meaning string           // as --help lists it
	Match   func(error) bool // nil: matched by nothing (0 and the default)
	Quiet   bool             // a result, not a failure: print nothing
}

// Codes is a binary's exit-code table: the first row whose Match holds
// gives an error its code; an error no row matches exits [ExitFailure].
type Codes []Code

// Of returns the exit code of err (0 for nil) and whether it is a result
// that is not printed.
func (t Codes) Of(err error) (code int, quiet bool) {
	if err == nil {
		return ExitOK, false
	}
	for _, c := range t {
		if c.Match != nil && c.Match(err) {
			return c.Code, c.Quiet
		}
	}
	return ExitFailure, false
}

// Help is the table as --help prints it, in the order of the rows.
func (t Codes) Help() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, c := range t {
		fmt.Fprintf(&b, "  %-3d %s\n", c.Code, c.Meaning)
	}
	return b.String()
}

// Exit prints err on env.Stderr as "prog: err" (unless its row is quiet)
// and returns its exit code.
func (t Codes) Exit(env Env, prog string, err error) int {
	code, quiet := t.Of(err)
	if err != nil && !quiet {
		// Errors quote what servers sent (ref names, messages): flattened,
		// they cannot move the cursor or hide a line.
		fmt.Fprintf(env.Stderr, "%s: %s\n", prog, FlattenLines(err.Error()))
	}
	return code
}

// Flatten makes s safe to print on a terminal on one line: every control
// character (C0, DEL, C1) and every bidirectional-override character is
// written as a visible escape (\x1b, \u202e), so nothing a server or a
// node wrote can move the cursor, clear a line or reorder text.
func Flatten(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\ufffd") {
		switch {
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", r)
		case r >= 0x80 && r < 0xa0, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// FlattenLines is Flatten of each line of s (an error joining several).
func FlattenLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Flatten(l)
	}
	return strings.Join(lines, "\n")
}

// SignalContext is parent, cancelled on SIGINT or SIGTERM; stop releases
// the signals.
func SignalContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// ParseDuration reads a duration as every duration flag of pullship and
// pullship-agent takes it: whole days ("14d", "365d") or a Go duration
// ("36h", "90s", "1h30m").
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != days || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("duration %q: want whole days like 14d, or a duration like 36h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want whole days like 14d, or a duration like 36h", s)
	}
	return d, nil
}

// FormatDuration writes d the way [ParseDuration] reads it: whole days as
// "14d", anything else as Go writes it.
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d != 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// Duration is a duration flag read by [ParseDuration]. It is a flag.Value
// and a pflag.Value.
type Duration struct{ D *time.Duration }

// DurationFlag points a Duration flag at p, set to def.
func DurationFlag(p *time.Duration, def time.Duration) Duration {
	*p = def
	return Duration{p}
}

func (d Duration) String() string {
	if d.D == nil {
		return "0s"
	}
	return FormatDuration(*d.D)
}

// Set parses s.
func (d Duration) Set(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d.D = v
	return nil
}

// Type names the value in pflag's help.
func (Duration) Type() string { return "duration" }

// NewLogger logs to w as text, or as JSON lines when format is "json".
func NewLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
