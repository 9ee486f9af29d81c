package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/pullship/pullship/bundler/shared/cliutil"
	"golang.org/x/term"
)

// errNoPassword is what a command says when a key needs a password and
// nothing can give one (no flag, no variable, no terminal: CI, cron).
var errNoPassword = errors.New("no password: set PULLSHIP_PASSWORD or use --password-file")

// passwords reads private key passwords, from the first of: --password-file
// (its first line), $PULLSHIP_PASSWORD, a prompt on the terminal. The flag
// wins over the variable because it is the more explicit of the two.
type passwords struct {
	env  Env
	file string
}

// get returns the password for what (a key file name). With confirm, a
// terminal prompt asks twice; files and the variable are taken as they are.
func (p passwords) get(what string, confirm bool) ([]byte, error) {
	if p.file != "" {
		data, err := os.ReadFile(p.file)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		line, _, _ := bytes.Cut(data, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return nil, fmt.Errorf("password file %s: first line is empty", p.file)
		}
		return line, nil
	}
	if pw := p.env.Getenv("PULLSHIP_PASSWORD"); pw != "" {
		return []byte(pw), nil
	}
	f, ok := p.env.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, cliutil.Usage(errNoPassword)
	}
	fmt.Fprintf(p.env.Stderr, "Enter password for %s: ", what)
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(p.env.Stderr)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	if len(pw) == 0 {
		return nil, errors.New("empty password (use --no-password for an unencrypted key)")
	}
	if confirm {
		fmt.Fprintf(p.env.Stderr, "Enter password for %s again: ", what)
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(p.env.Stderr)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if !bytes.Equal(pw, again) {
			return nil, errors.New("passwords do not match")
		}
	}
	return pw, nil
}
