// Package secrets holds a node's age identity on its host and decrypts the
// files a release encrypted to it.
//
// The bundler encrypts every rendered file that used a node secret to the
// node's age X25519 recipient (fleet.toml age_recipient). The release pins
// the ciphertext, so the agent verifies it like any other file and only
// then decrypts it here, with the identity that never leaves the host. See
// docs/secrets.md.
package secrets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pullship/pullship/bundler/shared/atomicfile"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// maxIdentityFile bounds an identity file: one key line and a few comments.
const maxIdentityFile = 64 << 10

// ErrWrongIdentity means the ciphertext is not encrypted to the identity:
// the host's identity does not match the node's age_recipient in fleet.toml.
var ErrWrongIdentity = errors.New("not encrypted to this host's age identity (does fleet.toml age_recipient match `pullship-agent init`'s output?)")

// GenerateIdentity makes sure an age X25519 identity file exists at path and
// returns its recipient ("age1…"). A missing file is created with mode 0600
// (and its directory with 0700); an existing one is only read, so running
// it twice keeps the node's key.
func GenerateIdentity(path string) (string, error) {
	if id, err := LoadIdentity(path); err == nil {
		return id.Recipient().String(), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fmt.Errorf("age identity %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("age identity %s: %w", path, err)
	}
	rcpt := id.Recipient().String()
	data := fmt.Sprintf("# pullship node age identity; public key: %s\n%s\n", rcpt, id.String())
	// WriteNew: never overwrite an identity another process just wrote.
	if err := atomicfile.WriteNew(path, []byte(data), 0o600); err != nil {
		return "", fmt.Errorf("age identity: %w", err)
	}
	return rcpt, nil
}

// LoadIdentity reads an age identity file holding exactly one X25519
// identity ("AGE-SECRET-KEY-1…"; blank lines and # comments allowed). The
// error wraps fs.ErrNotExist when the file is missing.
func LoadIdentity(path string) (*age.X25519Identity, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("age identity %s: %w", path, err)
	}
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("age identity %s: larger than %d bytes", path, maxIdentityFile)
	}
	id, err := ParseIdentity(data)
	if err != nil {
		return nil, fmt.Errorf("age identity %s: %w", path, err)
	}
	return id, nil
}

// ParseIdentity parses the contents of an identity file (see LoadIdentity).
// The error never quotes the file, which holds a private key.
func ParseIdentity(data []byte) (*age.X25519Identity, error) {
	var id *age.X25519Identity
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if id != nil {
			return nil, fmt.Errorf("line %d: more than one identity (want exactly one X25519 identity)", line)
		}
		var err error
		if id, err = age.ParseX25519Identity(l); err != nil {
			// age's error does not echo the key; keep it that way.
			return nil, fmt.Errorf("line %d: not an age X25519 identity (AGE-SECRET-KEY-1…)", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if id == nil {
		return nil, fmt.Errorf("no identity (want a line AGE-SECRET-KEY-1…)")
	}
	return id, nil
}

// Decrypt decrypts an age file (binary or ASCII-armored) with the identity
// at identityPath and returns the plaintext, refusing more than max bytes.
// The error wraps ErrWrongIdentity when the file is not encrypted to it.
func Decrypt(identityPath string, ciphertext []byte, max int64) ([]byte, error) {
	id, err := LoadIdentity(identityPath)
	if err != nil {
		return nil, err
	}
	return DecryptWith(id, ciphertext, max)
}

// DecryptWith is Decrypt with a loaded identity.
func DecryptWith(id age.Identity, ciphertext []byte, max int64) ([]byte, error) {
	var in io.Reader = bytes.NewReader(ciphertext)
	if bytes.HasPrefix(ciphertext, []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
		in = armor.NewReader(in)
	}
	r, err := age.Decrypt(in, id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("decrypt: %w", ErrWrongIdentity)
		}
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if int64(len(out)) > max {
		return nil, fmt.Errorf("decrypt: plaintext larger than the %d bytes allowed", max)
	}
	return out, nil
}
