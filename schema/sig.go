package schema

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strconv"

	"github.com/sigstore/sigstore/pkg/signature"
)

// Bounds of a signature file. A root has at most MaxRootKeys keys, so more
// signatures than that can only be padding.
const (
	MaxSignatures       = 64
	MaxSignatureFileLen = 64 << 10
	// maxSignatureLen bounds one decoded signature: a P-256 DER signature is
	// at most 72 bytes, an Ed25519 one exactly 64.
	maxSignatureLen = 72
)

// Signature is one detached signature over the exact bytes of a file.
type Signature struct {
	KeyID     string `toml:"keyid"`     // see KeyID
	Algorithm string `toml:"algorithm"` // AlgECDSAP256SHA256 or AlgEd25519
	Value     string `toml:"value"`     // standard base64 of the raw signature bytes
}

// SignatureFile is a .sig file: the signatures over the file it sits next
// to, in no particular order.
type SignatureFile struct {
	Signatures []Signature `toml:"signature"`
}

// SigFileName is the name of the detached signature file of name.
func SigFileName(name string) string { return name + ".sig" }

// ParseSignatures decodes and validates a .sig file (called name in errors).
// Every entry must have a 64-hex key id, a known algorithm and a value that
// is base64 of a signature of plausible length; the same key may appear more
// than once (it still counts once). Nothing is verified here.
func ParseSignatures(name string, data []byte) (*SignatureFile, error) {
	if len(data) > MaxSignatureFileLen {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d bytes a signature file may have", name, len(data), MaxSignatureFileLen)
	}
	var f SignatureFile
	if err := DecodeStrict(name, data, &f); err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &f, nil
}

// Validate checks the rules of [ParseSignatures].
func (f *SignatureFile) Validate() error {
	if len(f.Signatures) == 0 {
		return errors.New("no signatures")
	}
	if len(f.Signatures) > MaxSignatures {
		return fmt.Errorf("%d signatures, at most %d allowed", len(f.Signatures), MaxSignatures)
	}
	for i, s := range f.Signatures {
		if err := s.validate(); err != nil {
			return fmt.Errorf("signature %d: %w", i+1, err)
		}
	}
	return nil
}

func (s Signature) validate() error {
	if !validKeyID(s.KeyID) {
		return fmt.Errorf("keyid %q is not 64 lowercase hex digits", s.KeyID)
	}
	if !KnownAlgorithm(s.Algorithm) {
		return fmt.Errorf("key %s: unknown algorithm %q", s.KeyID, s.Algorithm)
	}
	raw, err := s.Bytes()
	if err != nil {
		return fmt.Errorf("key %s: %w", s.KeyID, err)
	}
	switch {
	case s.Algorithm == AlgEd25519 && len(raw) != 64:
		return fmt.Errorf("key %s: ed25519 signature is %d bytes, want 64", s.KeyID, len(raw))
	case s.Algorithm == AlgECDSAP256SHA256 && (len(raw) < 8 || len(raw) > maxSignatureLen):
		return fmt.Errorf("key %s: ecdsa signature is %d bytes, want 8 to %d", s.KeyID, len(raw), maxSignatureLen)
	}
	return nil
}

func validKeyID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Bytes decodes the signature value (strict standard base64, padded).
func (s Signature) Bytes() ([]byte, error) {
	if len(s.Value) > base64.StdEncoding.EncodedLen(maxSignatureLen) {
		return nil, fmt.Errorf("signature value is %d characters, too long", len(s.Value))
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(s.Value)
	if err != nil {
		return nil, fmt.Errorf("signature value is not base64: %w", err)
	}
	return raw, nil
}

// Add puts s into f, replacing an earlier signature by the same key so that
// re-signing never duplicates an entry.
func (f *SignatureFile) Add(s Signature) {
	for i := range f.Signatures {
		if f.Signatures[i].KeyID == s.KeyID {
			f.Signatures[i] = s
			return
		}
	}
	f.Signatures = append(f.Signatures, s)
}

// Encode renders f in the canonical .sig layout: one [[signature]] table
// per entry, keys in the order keyid, algorithm, value.
func (f *SignatureFile) Encode() []byte {
	var b bytes.Buffer
	for i, s := range f.Signatures {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[[signature]]\nkeyid = %s\nalgorithm = %s\nvalue = %s\n",
			strconv.Quote(s.KeyID), strconv.Quote(s.Algorithm), strconv.Quote(s.Value))
	}
	return b.Bytes()
}

// Sign signs data with signer, whose key id and algorithm the caller states
// (as [LoadPrivateKey] and [KeyID] return them); a mismatch is an error
// rather than a signature nobody can verify.
func Sign(signer signature.Signer, keyID, alg string, data []byte) (Signature, error) {
	pub, err := signer.PublicKey()
	if err != nil {
		return Signature{}, fmt.Errorf("sign: %w", err)
	}
	gotID, err := KeyID(pub)
	if err != nil {
		return Signature{}, fmt.Errorf("sign: %w", err)
	}
	gotAlg, err := KeyAlgorithm(pub)
	if err != nil {
		return Signature{}, fmt.Errorf("sign: %w", err)
	}
	if gotID != keyID || gotAlg != alg {
		return Signature{}, fmt.Errorf("sign: signer is key %s (%s), not %s (%s)", short(gotID), gotAlg, short(keyID), alg)
	}
	raw, err := signer.SignMessage(bytes.NewReader(data))
	if err != nil {
		return Signature{}, fmt.Errorf("sign with key %s: %w", short(keyID), err)
	}
	return Signature{KeyID: keyID, Algorithm: alg, Value: base64.StdEncoding.EncodeToString(raw)}, nil
}

// SignWith signs data with signer, deriving the key id and algorithm from
// its public key.
func SignWith(signer signature.Signer, data []byte) (Signature, error) {
	pub, err := signer.PublicKey()
	if err != nil {
		return Signature{}, fmt.Errorf("sign: %w", err)
	}
	id, err := KeyID(pub)
	if err != nil {
		return Signature{}, fmt.Errorf("sign: %w", err)
	}
	alg, err := KeyAlgorithm(pub)
	if err != nil {
		return Signature{}, fmt.Errorf("sign: %w", err)
	}
	return Sign(signer, id, alg, data)
}

// verifySignature checks raw against data under v. ECDSA signatures must be
// strict ASN.1 DER: sigstore also takes IEEE P1363 (r||s), which the format
// does not allow, and non-canonical encodings would make one signature
// have many spellings.
func verifySignature(v signature.Verifier, alg string, raw, data []byte) error {
	if alg == AlgECDSAP256SHA256 {
		var rs struct{ R, S *big.Int }
		rest, err := asn1.Unmarshal(raw, &rs)
		if err != nil || len(rest) != 0 {
			return errors.New("not an ASN.1 DER ECDSA signature")
		}
		again, err := asn1.Marshal(rs)
		if err != nil || !bytes.Equal(again, raw) {
			return errors.New("not canonical ASN.1 DER")
		}
	}
	return v.VerifySignature(bytes.NewReader(raw), bytes.NewReader(data))
}

// short abbreviates a key id for messages; full ids are in `pullship keygen`
// output and root files, and 12 hex digits are plenty to tell keys apart.
func short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:12] + "…"
}
