package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pullship/pullship/schema"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/spf13/cobra"
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
		return nil, withCode(ExitUsage, errNoPassword)
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

// signingKey is a loaded private key and what identifies it.
type signingKey struct {
	path string
	sv   signature.SignerVerifier
	id   string
	alg  string
}

// loadSigningKey reads a private key file, asking for its password only
// when it is encrypted.
func loadSigningKey(path string, pw passwords) (*signingKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sv, alg, err := schema.LoadPrivateKey(path, data, func() ([]byte, error) { return pw.get(path, false) })
	if err != nil {
		return nil, err
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	id, err := schema.KeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	return &signingKey{path: path, sv: sv, id: id, alg: alg}, nil
}

// sign signs data with every key, one signature per distinct key.
func signAll(keys []*signingKey, data []byte) (*schema.SignatureFile, error) {
	var f schema.SignatureFile
	for _, k := range keys {
		s, err := schema.Sign(k.sv, k.id, k.alg, data)
		if err != nil {
			return nil, err
		}
		f.Add(s)
	}
	return &f, nil
}

// writeNew writes a file that must not exist yet, so that no command
// silently replaces a key or a root.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; remove it or choose another name", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// writeAtomic replaces path by rename, so a reader sees the old or the new
// file, never half of one.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// parseExpires reads --expires: a duration from now ("365d", "36h") or an
// RFC 3339 time. The result is UTC, whole seconds, and in the future.
func parseExpires(s string, now time.Time) (time.Time, error) {
	var t time.Time
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || fmt.Sprint(n) != days || n <= 0 {
			return time.Time{}, fmt.Errorf("--expires %q: want a number of days like 365d, a duration like 48h, or an RFC 3339 time", s)
		}
		t = now.AddDate(0, 0, n)
	} else if d, err := time.ParseDuration(s); err == nil {
		t = now.Add(d)
	} else if at, err := time.Parse(time.RFC3339, s); err == nil {
		t = at
	} else {
		return time.Time{}, fmt.Errorf("--expires %q: want a number of days like 365d, a duration like 48h, or an RFC 3339 time", s)
	}
	t = t.UTC().Truncate(time.Second)
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--expires %q: %s is not in the future", s, t.Format(time.RFC3339))
	}
	return t, nil
}

// exactArgs is cobra.ExactArgs with the usage exit code, which cobra's own
// argument errors do not carry.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return withCode(ExitUsage, cobra.ExactArgs(n)(cmd, args))
	}
}

// noArgs is cobra.NoArgs with the usage exit code.
func noArgs(cmd *cobra.Command, args []string) error {
	return withCode(ExitUsage, cobra.NoArgs(cmd, args))
}
