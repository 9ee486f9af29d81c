package schema

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
)

// testKey is a generated key ready to sign in tests.
type testKey struct {
	kp  *KeyPair
	sv  signature.SignerVerifier
	alg string
}

func (k testKey) id() string { return k.kp.KeyID }

func (k testKey) rootKey(t testing.TB) RootKey {
	t.Helper()
	rk, err := NewRootKey(k.kp.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	return rk
}

func (k testKey) sign(t testing.TB, data []byte) Signature {
	t.Helper()
	s, err := Sign(k.sv, k.kp.KeyID, k.alg, data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestKey(t testing.TB, alg string) testKey {
	t.Helper()
	kp, err := GenerateKey(alg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sv, gotAlg, err := LoadPrivateKey("test.key", kp.PrivatePEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if gotAlg != alg {
		t.Fatalf("loaded algorithm %q, want %q", gotAlg, alg)
	}
	return testKey{kp: kp, sv: sv, alg: alg}
}

func TestGenerateKeyRoundTrip(t *testing.T) {
	for _, alg := range Algorithms() {
		t.Run(alg, func(t *testing.T) {
			kp, err := GenerateKey(alg, []byte("correct horse"))
			if err != nil {
				t.Fatal(err)
			}
			if !kp.Encrypted || !IsEncryptedPrivateKey(kp.PrivatePEM) {
				t.Fatal("key with a password is not encrypted")
			}
			block, _ := pem.Decode(kp.PrivatePEM)
			if block.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" {
				t.Fatalf("PEM type %q", block.Type)
			}
			// The key id is sha256 of the DER SPKI in the public PEM.
			pb, _ := pem.Decode(kp.PublicPEM)
			sum := sha256.Sum256(pb.Bytes)
			if kp.KeyID != hex.EncodeToString(sum[:]) {
				t.Fatalf("key id %s is not sha256 of the SPKI", kp.KeyID)
			}
			if _, _, err := LoadPrivateKey("k", kp.PrivatePEM, nil); !errors.Is(err, ErrNeedPassword) {
				t.Fatalf("no password: err = %v, want ErrNeedPassword", err)
			}
			_, _, err = LoadPrivateKey("k", kp.PrivatePEM, func() ([]byte, error) { return []byte("wrong"), nil })
			if err == nil || !strings.Contains(err.Error(), "wrong password") {
				t.Fatalf("wrong password: err = %v", err)
			}
			sv, gotAlg, err := LoadPrivateKey("k", kp.PrivatePEM, func() ([]byte, error) { return []byte("correct horse"), nil })
			if err != nil {
				t.Fatal(err)
			}
			if gotAlg != alg {
				t.Fatalf("algorithm %q, want %q", gotAlg, alg)
			}
			pub, err := sv.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := KeyID(pub)
			if id != kp.KeyID {
				t.Fatal("loaded key has another id")
			}
		})
	}
}

func TestGenerateKeyUnencrypted(t *testing.T) {
	kp, err := GenerateKey(AlgEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(kp.PrivatePEM)
	if kp.Encrypted || block.Type != "PRIVATE KEY" {
		t.Fatalf("type %q encrypted=%v", block.Type, kp.Encrypted)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := priv.(ed25519.PrivateKey); !ok {
		t.Fatalf("PKCS#8 holds %T", priv)
	}
	called := false
	if _, _, err := LoadPrivateKey("k", kp.PrivatePEM, func() ([]byte, error) { called = true; return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if called {
		t.Fatal("password asked for an unencrypted key")
	}
}

func TestGenerateKeyECDSAIsP256(t *testing.T) {
	k := newTestKey(t, AlgECDSAP256SHA256)
	pub, err := k.sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if ec, ok := pub.(*ecdsa.PublicKey); !ok || ec.Curve.Params().Name != "P-256" {
		t.Fatalf("public key %T", pub)
	}
}

func TestGenerateKeyUnknownAlgorithm(t *testing.T) {
	if _, err := GenerateKey("rsa", nil); err == nil || !strings.Contains(err.Error(), `unknown algorithm "rsa"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParsePublicKeyPEMRejects(t *testing.T) {
	k := newTestKey(t, AlgECDSAP256SHA256)
	cases := map[string][]byte{
		"empty":       nil,
		"private key": k.kp.PrivatePEM,
		"trailing":    append(bytes.Clone(k.kp.PublicPEM), "junk"...),
		"bad der":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
		"leading":     append([]byte("x\"\"\"\n"), k.kp.PublicPEM...),
		"headers":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"A": "b"}, Bytes: mustPEMBytes(k.kp.PublicPEM)}),
	}
	for name, data := range cases {
		if _, _, err := ParsePublicKeyPEM(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, alg, err := ParsePublicKeyPEM(k.kp.PublicPEM); err != nil || alg != AlgECDSAP256SHA256 {
		t.Fatalf("good key: %v %q", err, alg)
	}
}

func TestLoadPrivateKeyRejects(t *testing.T) {
	k := newTestKey(t, AlgEd25519)
	for name, data := range map[string][]byte{
		"empty":      nil,
		"public key": k.kp.PublicPEM,
		"garbage":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}),
	} {
		if _, _, err := LoadPrivateKey("k", data, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustPEMBytes(data []byte) []byte {
	b, _ := pem.Decode(data)
	return b.Bytes
}
