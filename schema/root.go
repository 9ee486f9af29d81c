package schema

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxRootKeys bounds the keys of one root.
const MaxRootKeys = 64

// MaxRootFileLen bounds root-N.toml: MaxRootKeys keys of a few hundred
// bytes each fit with room to spare. Roots are read before they are
// trusted, so they get a bound fit for them, not the manifest's.
const MaxRootFileLen = 64 << 10

// Root is a trust root, root-N.toml: the keys that sign releases and the
// next root, and how many of them must sign (threshold, k of n).
type Root struct {
	Version   int64     `toml:"version"`   // N of root-N.toml, from 1, consecutive
	Expires   time.Time `toml:"expires"`   // RFC 3339 UTC; an expired root verifies nothing
	Threshold int       `toml:"threshold"` // distinct keys whose signatures are needed
	Keys      []RootKey `toml:"key"`
}

// RootKey is one key of a root.
type RootKey struct {
	ID        string `toml:"id"`         // KeyID of PublicKey
	Algorithm string `toml:"algorithm"`  // AlgECDSAP256SHA256 or AlgEd25519; must be the key's
	PublicKey string `toml:"public_key"` // PKIX "PUBLIC KEY" PEM
}

// RootFileName is the file name of root version n: "root-N.toml".
func RootFileName(n int64) string { return "root-" + strconv.FormatInt(n, 10) + ".toml" }

// ParseRoot decodes and validates root-N.toml (called name in errors); see
// [Root.Validate] for the rules.
func ParseRoot(name string, data []byte) (*Root, error) {
	if len(data) > MaxRootFileLen {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d bytes a root may have", name, len(data), MaxRootFileLen)
	}
	var r Root
	if err := DecodeStrict(name, data, &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &r, nil
}

// NewRootKey makes the root entry for a PEM public key file.
func NewRootKey(publicPEM []byte) (RootKey, error) {
	pub, alg, err := ParsePublicKeyPEM(publicPEM)
	if err != nil {
		return RootKey{}, err
	}
	id, err := KeyID(pub)
	if err != nil {
		return RootKey{}, err
	}
	return RootKey{ID: id, Algorithm: alg, PublicKey: string(bytes.TrimSpace(publicPEM)) + "\n"}, nil
}

// Validate checks a root: version ≥ 1, expires set (UTC, whole seconds), 1
// to MaxRootKeys keys, each listed once, each PEM a P-256 or Ed25519 public
// key whose algorithm is the stated one and whose KeyID is the stated id,
// and 1 ≤ threshold ≤ number of keys. Expiry against a clock is not checked
// here (see [Root.CheckExpiry]).
func (r *Root) Validate() error {
	if r.Version < 1 {
		return fmt.Errorf("version %d: must be 1 or more", r.Version)
	}
	if r.Expires.IsZero() {
		return errors.New("expires is missing")
	}
	if _, off := r.Expires.Zone(); off != 0 || r.Expires.Location().String() != "UTC" {
		return fmt.Errorf("expires %s: must be a UTC date-time (ending in Z)", r.Expires.Format(time.RFC3339))
	}
	if len(r.Keys) == 0 {
		return errors.New("no keys")
	}
	if len(r.Keys) > MaxRootKeys {
		return fmt.Errorf("%d keys, at most %d allowed", len(r.Keys), MaxRootKeys)
	}
	seen := make(map[string]bool, len(r.Keys))
	for i, k := range r.Keys {
		if _, err := k.parse(); err != nil {
			return fmt.Errorf("key %d: %w", i+1, err)
		}
		if seen[k.ID] {
			return fmt.Errorf("key %d: key %s listed twice", i+1, short(k.ID))
		}
		seen[k.ID] = true
	}
	if r.Threshold < 1 || r.Threshold > len(r.Keys) {
		return fmt.Errorf("threshold %d: must be between 1 and the number of keys (%d)", r.Threshold, len(r.Keys))
	}
	return nil
}

// parse checks one key entry and returns its public key.
func (k RootKey) parse() (crypto.PublicKey, error) {
	if !validKeyID(k.ID) {
		return nil, fmt.Errorf("id %q is not 64 lowercase hex digits", k.ID)
	}
	if !KnownAlgorithm(k.Algorithm) {
		return nil, fmt.Errorf("key %s: unknown algorithm %q", short(k.ID), k.Algorithm)
	}
	pub, alg, err := ParsePublicKeyPEM([]byte(k.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("key %s: public_key: %w", short(k.ID), err)
	}
	if alg != k.Algorithm {
		return nil, fmt.Errorf("key %s: algorithm is %q but the public key is %s", short(k.ID), k.Algorithm, alg)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	if id != k.ID {
		return nil, fmt.Errorf("key %s: id does not match the public key, whose id is %s", short(k.ID), id)
	}
	return pub, nil
}

// Key returns the entry for key id, if the root lists it.
func (r *Root) Key(id string) (RootKey, bool) {
	for _, k := range r.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return RootKey{}, false
}

// Expired reports whether the root has expired at now (expires ≤ now).
func (r *Root) Expired(now time.Time) bool { return !now.Before(r.Expires) }

// CheckExpiry returns an error wrapping [ErrExpired] when the root has
// expired at now.
func (r *Root) CheckExpiry(now time.Time) error {
	if r.Expired(now) {
		return fmt.Errorf("root %d expired at %s: %w", r.Version, r.Expires.UTC().Format(time.RFC3339), ErrExpired)
	}
	return nil
}

// Encode renders r in the canonical root-N.toml layout. It validates r
// first, so what it writes is what [ParseRoot] accepts.
func (r *Root) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode root %d: %w", r.Version, err)
	}
	if r.Expires.Nanosecond() != 0 {
		return nil, fmt.Errorf("encode root %d: expires has fractional seconds", r.Version)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "version = %d\nexpires = %s\nthreshold = %d\n",
		r.Version, r.Expires.UTC().Format(time.RFC3339), r.Threshold)
	for _, k := range r.Keys {
		pemText := strings.TrimSpace(k.PublicKey)
		// A PEM block holds only base64, dashes and letters, so it needs no
		// escaping inside a multi-line basic string.
		fmt.Fprintf(&b, "\n[[key]]\nid = %s\nalgorithm = %s\npublic_key = \"\"\"\n%s\n\"\"\"\n",
			strconv.Quote(k.ID), strconv.Quote(k.Algorithm), pemText)
	}
	return b.Bytes(), nil
}
