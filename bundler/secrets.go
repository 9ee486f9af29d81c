package bundler

// Node secrets (docs/secrets.md). A secret value lives in the fleet
// repository as secrets/<node>.toml, age-encrypted (ASCII armor) to the
// node's recipient and to every fleet [secrets] recipient. A release decrypts
// the values with the operator's identity, renders them into the templates
// that call {{secret "key"}}, and encrypts each such rendered file to the
// node again: the release holds and pins only ciphertext.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/pullship/pullship/bundler/shared/atomicfile"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/pullship/pullship/bundler/render"
	"github.com/pullship/pullship/schema"
)

// SecretsDir is the directory next to fleet.toml holding secrets/<node>.toml.
const SecretsDir = "secrets"

// Bounds of the secrets files, which are untrusted input.
const (
	MaxSecretLength   = 64 << 10 // bytes of one plaintext value
	MaxSecretsPerNode = 256
	maxSecretsFile    = 32 << 20
)

// ErrNoSecretsIdentity means a template calls secret but the release was
// given no identity to decrypt the secrets with.
var ErrNoSecretsIdentity = errors.New("templates use secrets but no secrets identity was given (pass --secrets-identity FILE, an age identity whose recipient is in fleet.toml [secrets] recipients)")

var secretKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// SecretFile is secrets/<node>.toml: each key's value encrypted with age,
// ASCII-armored.
type SecretFile struct {
	Secrets map[string]string `toml:"secret"`
}

// SecretsPath is the secrets file of node for the fleet at fleetPath.
func SecretsPath(fleetPath, node string) string {
	return filepath.Join(filepath.Dir(fleetPath), SecretsDir, node+".toml")
}

// CheckSecretKey requires a secret name: 1-64 of [A-Za-z0-9_], not starting
// with a digit (so it is a bare TOML key and safe in messages).
func CheckSecretKey(key string) error {
	if !secretKey.MatchString(key) {
		return fmt.Errorf("secret name %q: want 1-64 of [A-Za-z0-9_], not starting with a digit", key)
	}
	return nil
}

// ParseSecretFile decodes and validates a secrets file read from name. It
// checks the shape only: values are armored age files, not decrypted.
func ParseSecretFile(name string, data []byte) (*SecretFile, error) {
	if len(data) > maxSecretsFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxSecretsFile)
	}
	var sf SecretFile
	if err := schema.DecodeStrict(name, data, &sf); err != nil {
		return nil, err
	}
	if len(sf.Secrets) > MaxSecretsPerNode {
		return nil, fmt.Errorf("%s: %d secrets, at most %d allowed", name, len(sf.Secrets), MaxSecretsPerNode)
	}
	for k, v := range sf.Secrets {
		if err := CheckSecretKey(k); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		v = strings.TrimSpace(v)
		// Decoding the armor (not decrypting) checks the shape strictly,
		// so Encode can write it back verbatim.
		_, err := io.Copy(io.Discard, armor.NewReader(strings.NewReader(v)))
		if !strings.HasPrefix(v, armor.Header) || err != nil {
			return nil, fmt.Errorf("%s: secret %q: not an ASCII-armored age file (set it with pullship secret set)", name, k)
		}
	}
	if sf.Secrets == nil {
		sf.Secrets = map[string]string{}
	}
	return &sf, nil
}

// Encode returns the file's canonical bytes (keys sorted).
func (sf *SecretFile) Encode(node string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Secrets of node %s, encrypted with age to the node and to fleet.toml [secrets] recipients.\n# Managed by pullship secret set/rm; see docs/secrets.md.\n\n[secret]\n", node)
	keys := make([]string, 0, len(sf.Secrets))
	for k := range sf.Secrets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		// Armor is base64 and fixed header lines: a literal multi-line
		// string holds it verbatim.
		fmt.Fprintf(&b, "%s = '''\n%s'''\n", k, strings.TrimSpace(sf.Secrets[k])+"\n")
	}
	return b.Bytes()
}

// readSecretFile reads node's secrets file; a missing file is an empty one.
func readSecretFile(path string) (*SecretFile, error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &SecretFile{Secrets: map[string]string{}}, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxSecretsFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return ParseSecretFile(path, data)
}

// loadFleetNode reads fleet.toml and returns it with node's entry.
func loadFleetNode(fleetPath, node string) (*schema.Fleet, *schema.FleetNode, error) {
	data, err := os.ReadFile(fleetPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read fleet: %w", err)
	}
	f, err := render.ParseFleet(fleetPath, data)
	if err != nil {
		return nil, nil, err
	}
	for i := range f.Nodes {
		if f.Nodes[i].Name == node {
			return f, &f.Nodes[i], nil
		}
	}
	return nil, nil, fmt.Errorf("node %q is not in %s", node, fleetPath)
}

// secretRecipients are the recipients of node's secret values: the node and
// every [secrets] recipient.
func secretRecipients(f *schema.Fleet, n *schema.FleetNode) ([]age.Recipient, error) {
	if n.AgeRecipient == "" {
		return nil, fmt.Errorf("node %q has no age_recipient in fleet.toml (run pullship-agent init on its host and copy the age1… line it prints)", n.Name)
	}
	if len(f.Secrets.Recipients) == 0 {
		return nil, errors.New("fleet.toml has no [secrets] recipients: add the age recipient (age1…) of the identity you release with, or no release could read the secret")
	}
	var out []age.Recipient
	for _, s := range append([]string{n.AgeRecipient}, f.Secrets.Recipients...) {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// SetSecret encrypts value to node's recipient and the fleet's [secrets]
// recipients and stores it as key in secrets/<node>.toml (replaced
// atomically). value never appears in errors.
func SetSecret(fleetPath, node, key string, value []byte) error {
	if err := CheckSecretKey(key); err != nil {
		return err
	}
	if len(value) > MaxSecretLength {
		return fmt.Errorf("secret %q: value larger than %d bytes", key, MaxSecretLength)
	}
	f, n, err := loadFleetNode(fleetPath, node)
	if err != nil {
		return err
	}
	rcpts, err := secretRecipients(f, n)
	if err != nil {
		return fmt.Errorf("secret %q of node %q: %w", key, node, err)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, rcpts...)
	if err != nil {
		return fmt.Errorf("secret %q of node %q: %w", key, node, err)
	}
	if _, err := w.Write(value); err != nil {
		return fmt.Errorf("secret %q of node %q: %w", key, node, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("secret %q of node %q: %w", key, node, err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("secret %q of node %q: %w", key, node, err)
	}
	path := SecretsPath(fleetPath, node)
	sf, err := readSecretFile(path)
	if err != nil {
		return err
	}
	if _, ok := sf.Secrets[key]; !ok && len(sf.Secrets) >= MaxSecretsPerNode {
		return fmt.Errorf("secret %q of node %q: node already has %d secrets, the most allowed", key, node, MaxSecretsPerNode)
	}
	sf.Secrets[key] = buf.String()
	return writeSecretFile(path, node, sf)
}

// RemoveSecret deletes key from node's secrets file (the file too when it
// becomes empty). Removing a key that is not set is an error.
func RemoveSecret(fleetPath, node, key string) error {
	if err := CheckSecretKey(key); err != nil {
		return err
	}
	if _, _, err := loadFleetNode(fleetPath, node); err != nil {
		return err
	}
	path := SecretsPath(fleetPath, node)
	sf, err := readSecretFile(path)
	if err != nil {
		return err
	}
	if _, ok := sf.Secrets[key]; !ok {
		return fmt.Errorf("node %q has no secret %q", node, key)
	}
	delete(sf.Secrets, key)
	if len(sf.Secrets) == 0 {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove secret %q of node %q: %w", key, node, err)
		}
		return nil
	}
	return writeSecretFile(path, node, sf)
}

// ListSecrets returns the names (never the values) of node's secrets, sorted.
func ListSecrets(fleetPath, node string) ([]string, error) {
	if _, _, err := loadFleetNode(fleetPath, node); err != nil {
		return nil, err
	}
	sf, err := readSecretFile(SecretsPath(fleetPath, node))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(sf.Secrets))
	for k := range sf.Secrets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// writeSecretFile replaces path by rename so that a crash leaves the old or
// the new file, never half of one.
func writeSecretFile(path, node string, sf *SecretFile) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, bytes.NewReader(sf.Encode(node)), 0o644)
}

// LoadSecretsIdentity reads an age identity file (as age-keygen writes it)
// for decrypting secrets at release time.
func LoadSecretsIdentity(path string) ([]age.Identity, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets identity: %w", err)
	}
	defer fh.Close()
	ids, err := age.ParseIdentities(io.LimitReader(fh, 1<<20))
	if err != nil {
		// age's parse errors do not echo key material.
		return nil, fmt.Errorf("secrets identity %s: %w", path, err)
	}
	return ids, nil
}

// NodeSecrets returns the render.Options.Secrets function of the fleet in
// dir: it reads secrets/<node>.toml and decrypts every value with ids.
func NodeSecrets(dir string, ids []age.Identity) func(node string) (map[string]string, error) {
	return func(node string) (map[string]string, error) {
		if len(ids) == 0 {
			return nil, ErrNoSecretsIdentity
		}
		name := filepath.Join(SecretsDir, node+".toml")
		sf, err := readSecretFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out := make(map[string]string, len(sf.Secrets))
		for k, v := range sf.Secrets {
			r, err := age.Decrypt(armor.NewReader(strings.NewReader(strings.TrimSpace(v))), ids...)
			if err != nil {
				var nm *age.NoIdentityMatchError
				if errors.As(err, &nm) {
					return nil, fmt.Errorf("%s: secret %q: not encrypted to the secrets identity (is its recipient in fleet.toml [secrets] recipients? then set the secret again)", name, k)
				}
				return nil, fmt.Errorf("%s: secret %q: %w", name, k, err)
			}
			b, err := io.ReadAll(io.LimitReader(r, MaxSecretLength+1))
			if err != nil {
				return nil, fmt.Errorf("%s: secret %q: %w", name, k, err)
			}
			if len(b) > MaxSecretLength {
				return nil, fmt.Errorf("%s: secret %q: larger than %d bytes", name, k, MaxSecretLength)
			}
			out[k] = string(b)
		}
		return out, nil
	}
}

// PreviousFile returns a node file's bytes in the previous release and the
// node's age recipient there; ok is false when there is none.
type PreviousFile func(node string, path string) (data []byte, recipient string, ok bool, err error)

// EncryptRendered encrypts every rendered file that used a secret
// (render.File.Secret) with age, binary, to the node's recipient and to the
// fleet's [secrets] recipients, and makes the node's release entry pin the
// ciphertext (sha256, length, encrypted = true). The plaintext is dropped.
//
// age encryption is randomised, so encrypting afresh every time would
// change every such node in every release (no "nothing changed", a reload
// per release). Hence the operator recipients: when prev holds the file
// for the same node recipient and it decrypts with ids to the same
// plaintext, its ciphertext is kept.
func EncryptRendered(r *render.Rendered, f *schema.Fleet, ids []age.Identity, prev PreviousFile) error {
	for ni := range r.Nodes {
		n := &r.Nodes[ni]
		fn := fleetNode(f, n.Release.Name)
		for fi := range n.Files {
			file := &n.Files[fi]
			if !file.Secret {
				continue
			}
			if fn == nil {
				return fmt.Errorf("node %q: not in the fleet", n.Release.Name)
			}
			ct, err := encryptFile(f, fn, file, ids, prev)
			if err != nil {
				return fmt.Errorf("node %q: file %q: %w", fn.Name, file.Path, err)
			}
			file.Data = ct
			sum := sha256.Sum256(ct)
			file.SHA256 = hex.EncodeToString(sum[:])
			rf := &n.Release.Files[fi]
			if rf.Path != file.Path {
				return fmt.Errorf("node %q: file %q: release entry %d is %q", fn.Name, file.Path, fi, rf.Path)
			}
			rf.SHA256, rf.Length, rf.Encrypted = file.SHA256, int64(len(ct)), true
		}
	}
	return nil
}

func encryptFile(f *schema.Fleet, fn *schema.FleetNode, file *render.File, ids []age.Identity, prev PreviousFile) ([]byte, error) {
	rcpts, err := secretRecipients(f, fn)
	if err != nil {
		return nil, err
	}
	if prev != nil && len(ids) > 0 {
		old, oldRcpt, ok, err := prev(fn.Name, file.Path)
		if err != nil {
			return nil, fmt.Errorf("previous release: %w", err)
		}
		if ok && oldRcpt == fn.AgeRecipient {
			// A file we cannot decrypt (another operator's release, a
			// rotated identity) is simply encrypted afresh.
			if r, err := age.Decrypt(bytes.NewReader(old), ids...); err == nil {
				if b, err := io.ReadAll(io.LimitReader(r, schema.MaxFileLength+1)); err == nil && bytes.Equal(b, file.Data) {
					return old, nil
				}
			}
		}
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rcpts...)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(file.Data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if buf.Len() > schema.MaxFileLength {
		return nil, fmt.Errorf("encrypted file larger than %d bytes", schema.MaxFileLength)
	}
	return buf.Bytes(), nil
}

func fleetNode(f *schema.Fleet, name string) *schema.FleetNode {
	for i := range f.Nodes {
		if f.Nodes[i].Name == name {
			return &f.Nodes[i]
		}
	}
	return nil
}

// RenderFleet renders fleet f whose fleet.toml is in dir, reading secrets
// with the age identity file at identityPath (empty: none; then a template
// calling secret fails with ErrNoSecretsIdentity), and encrypts the files
// that used them (EncryptRendered), keeping the ciphertext of prev (the
// current release and its parsed manifest; nil for the first release) where
// the plaintext did not change. It is what Release renders with.
func (r *Repository) RenderFleet(f *schema.Fleet, dir, identityPath string, prev *bundle.Bundle, prevRel *schema.Release) (*render.Rendered, error) {
	var ids []age.Identity
	if identityPath != "" {
		var err error
		if ids, err = LoadSecretsIdentity(identityPath); err != nil {
			return nil, err
		}
	}
	rendered, err := render.RenderWith(f, dir, render.Options{Secrets: NodeSecrets(dir, ids)})
	if err != nil {
		return nil, err
	}
	var pf PreviousFile
	if prev != nil && prevRel != nil {
		pf = func(node, path string) ([]byte, string, bool, error) {
			pn, ok := prevRel.Node(node)
			if !ok {
				return nil, "", false, nil
			}
			for _, pfile := range pn.Files {
				if pfile.Path == path && pfile.Encrypted {
					data, err := bundle.ReadNodeFile(r.Cache, prev.Commit, node, pfile)
					if err != nil {
						return nil, "", false, err
					}
					return data, pn.AgeRecipient, true, nil
				}
			}
			return nil, "", false, nil
		}
	}
	if err := EncryptRendered(rendered, f, ids, pf); err != nil {
		return nil, err
	}
	return rendered, nil
}
