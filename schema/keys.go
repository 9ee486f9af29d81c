package schema

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Signature algorithms. The strings appear in root-N.toml and in every .sig
// file; docs/format.md specifies them.
const (
	// AlgECDSAP256SHA256 is ECDSA on NIST P-256; the signature is the ASN.1
	// DER encoding of (r, s) over sha256(data), the form `openssl dgst
	// -sha256 -verify` and `cosign verify-blob --key` accept. The default.
	AlgECDSAP256SHA256 = "ecdsa-p256-sha256"
	// AlgEd25519 is pure Ed25519 (RFC 8032) over the raw data bytes.
	AlgEd25519 = "ed25519"
)

// DefaultAlgorithm is the algorithm keygen uses unless told otherwise.
const DefaultAlgorithm = AlgECDSAP256SHA256

// Algorithms lists the known algorithm strings.
func Algorithms() []string { return []string{AlgECDSAP256SHA256, AlgEd25519} }

// KnownAlgorithm reports whether alg is one of [Algorithms].
func KnownAlgorithm(alg string) bool {
	return alg == AlgECDSAP256SHA256 || alg == AlgEd25519
}

// PEM block types of pullship key files.
const (
	// PEMEncryptedPrivateKey is sigstore's (and cosign's) encrypted private
	// key: scrypt + secretbox over the PKCS#8 DER, as
	// cryptoutils.MarshalPrivateKeyToEncryptedDER writes it.
	PEMEncryptedPrivateKey = string(cryptoutils.EncryptedSigstorePrivateKeyPEMType)
	// PEMPrivateKey is an unencrypted PKCS#8 private key.
	PEMPrivateKey = string(cryptoutils.PrivateKeyPEMType)
	// PEMPublicKey is a PKIX SubjectPublicKeyInfo public key.
	PEMPublicKey = string(cryptoutils.PublicKeyPEMType)
)

// ErrNeedPassword is returned by [LoadPrivateKey] when the key is encrypted
// and no password function was given.
var ErrNeedPassword = errors.New("private key is encrypted and needs a password")

// KeyPair is a freshly generated key: its PEM files and its key id.
type KeyPair struct {
	PrivatePEM []byte // encrypted sigstore PEM, or PKCS#8 PEM when no password
	PublicPEM  []byte // PKIX PEM
	KeyID      string // see [KeyID]
	Algorithm  string
	Encrypted  bool
}

// GenerateKey makes a new key for alg (AlgECDSAP256SHA256 or AlgEd25519).
// A non-empty password encrypts the private key in sigstore's format; an
// empty one writes it as plain PKCS#8, which callers must warn about.
func GenerateKey(alg string, password []byte) (*KeyPair, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case AlgECDSAP256SHA256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("generate key: unknown algorithm %q (want %s or %s)", alg, AlgECDSAP256SHA256, AlgEd25519)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return EncodeKeyPair(priv, password)
}

// EncodeKeyPair encodes priv (an ECDSA P-256 or Ed25519 key) as
// [GenerateKey] does.
func EncodeKeyPair(priv crypto.Signer, password []byte) (*KeyPair, error) {
	alg, err := KeyAlgorithm(priv.Public())
	if err != nil {
		return nil, err
	}
	kp := &KeyPair{Algorithm: alg}
	if kp.PublicPEM, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public()); err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	if kp.KeyID, err = KeyID(priv.Public()); err != nil {
		return nil, err
	}
	if len(password) == 0 {
		if kp.PrivatePEM, err = cryptoutils.MarshalPrivateKeyToPEM(priv); err != nil {
			return nil, fmt.Errorf("encode private key: %w", err)
		}
		return kp, nil
	}
	der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv, cryptoutils.StaticPasswordFunc(password))
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	kp.PrivatePEM = cryptoutils.PEMEncode(cryptoutils.EncryptedSigstorePrivateKeyPEMType, der)
	kp.Encrypted = true
	return kp, nil
}

// KeyID is the lowercase hex sha256 of pub's DER SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// KeyAlgorithm names the pullship algorithm of pub, or fails for key types
// pullship does not use (RSA, ECDSA on other curves).
func KeyAlgorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("unsupported ECDSA curve %s (want P-256)", k.Curve.Params().Name)
		}
		return AlgECDSAP256SHA256, nil
	case ed25519.PublicKey:
		return AlgEd25519, nil
	}
	return "", fmt.Errorf("unsupported key type %T (want ECDSA P-256 or Ed25519)", pub)
}

// ParsePublicKeyPEM parses one "PUBLIC KEY" PEM block (nothing else may
// follow it but whitespace) and returns the key and its algorithm.
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, string, error) {
	// pem.Decode skips text before the block; a key must be the block
	// alone, so that one key has one spelling in a root file.
	if !bytes.HasPrefix(trimSpace(data), []byte("-----BEGIN ")) {
		return nil, "", errors.New("no PEM block found at the start")
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("no PEM block found")
	}
	if block.Type != PEMPublicKey {
		return nil, "", fmt.Errorf("PEM block is %q, want %q", block.Type, PEMPublicKey)
	}
	if len(block.Headers) != 0 {
		return nil, "", errors.New("PEM block has headers")
	}
	if len(trimSpace(rest)) != 0 {
		return nil, "", errors.New("data after the PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("parse public key: %w", err)
	}
	alg, err := KeyAlgorithm(pub)
	if err != nil {
		return nil, "", err
	}
	return pub, alg, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// IsEncryptedPrivateKey reports whether data is a private key PEM that needs
// a password.
func IsEncryptedPrivateKey(data []byte) bool {
	block, _ := pem.Decode(data)
	return block != nil && (block.Type == PEMEncryptedPrivateKey || block.Type == "ENCRYPTED COSIGN PRIVATE KEY")
}

// LoadPrivateKey parses a private key file (called name in errors): sigstore's
// encrypted PEM (password is called once to get the password) or plain
// PKCS#8 PEM (password is not called). It returns a signer for the key's
// algorithm: ECDSA P-256 with SHA-256, or Ed25519.
func LoadPrivateKey(name string, data []byte, password func() ([]byte, error)) (signature.SignerVerifier, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", fmt.Errorf("load key %s: no PEM block found", name)
	}
	var pf cryptoutils.PassFunc
	switch block.Type {
	case PEMEncryptedPrivateKey, "ENCRYPTED COSIGN PRIVATE KEY":
		if password == nil {
			return nil, "", fmt.Errorf("load key %s: %w", name, ErrNeedPassword)
		}
		pw, err := password()
		if err != nil {
			return nil, "", fmt.Errorf("load key %s: %w", name, err)
		}
		if len(pw) == 0 {
			return nil, "", fmt.Errorf("load key %s: empty password", name)
		}
		pf = cryptoutils.StaticPasswordFunc(pw)
	case PEMPrivateKey:
	default:
		return nil, "", fmt.Errorf("load key %s: PEM block is %q, want %q or %q", name, block.Type, PEMEncryptedPrivateKey, PEMPrivateKey)
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(data, pf)
	if err != nil {
		if pf != nil {
			return nil, "", fmt.Errorf("load key %s: wrong password or damaged key: %w", name, err)
		}
		return nil, "", fmt.Errorf("load key %s: %w", name, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, "", fmt.Errorf("load key %s: unsupported key type %T", name, priv)
	}
	alg, err := KeyAlgorithm(signer.Public())
	if err != nil {
		return nil, "", fmt.Errorf("load key %s: %w", name, err)
	}
	sv, err := signature.LoadSignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("load key %s: %w", name, err)
	}
	return sv, alg, nil
}

// newVerifier returns the verifier for pub under alg, failing when alg is
// not pub's algorithm.
func newVerifier(pub crypto.PublicKey, alg string) (signature.Verifier, error) {
	got, err := KeyAlgorithm(pub)
	if err != nil {
		return nil, err
	}
	if got != alg {
		return nil, fmt.Errorf("algorithm %q does not match the key (%s)", alg, got)
	}
	return signature.LoadVerifier(pub, crypto.SHA256)
}
