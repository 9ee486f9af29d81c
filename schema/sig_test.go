package schema

import (
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignatureFileRoundTrip(t *testing.T) {
	a, b := newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgEd25519)
	data := []byte("version = 1\n")
	var f SignatureFile
	f.Add(a.sign(t, data))
	f.Add(b.sign(t, data))
	enc := f.Encode()
	got, err := ParseSignatures("x.sig", enc)
	if err != nil {
		t.Fatalf("%v\n%s", err, enc)
	}
	if len(got.Signatures) != 2 || got.Signatures[0] != f.Signatures[0] || got.Signatures[1] != f.Signatures[1] {
		t.Fatalf("round trip changed the file:\n%s", enc)
	}
	if !bytes.Equal(got.Encode(), enc) {
		t.Fatal("encoding is not canonical")
	}
}

func TestSignatureFileAddReplaces(t *testing.T) {
	a := newTestKey(t, AlgECDSAP256SHA256)
	var f SignatureFile
	f.Add(a.sign(t, []byte("one")))
	s2 := a.sign(t, []byte("two"))
	f.Add(s2)
	if len(f.Signatures) != 1 || f.Signatures[0] != s2 {
		t.Fatalf("same key twice gave %d entries", len(f.Signatures))
	}
}

func TestSignRejectsWrongKeyID(t *testing.T) {
	a, b := newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgECDSAP256SHA256)
	if _, err := Sign(a.sv, b.id(), AlgECDSAP256SHA256, []byte("x")); err == nil {
		t.Fatal("signed under another key's id")
	}
	if _, err := Sign(a.sv, a.id(), AlgEd25519, []byte("x")); err == nil {
		t.Fatal("signed under the wrong algorithm")
	}
}

func TestParseSignaturesRejects(t *testing.T) {
	id := strings.Repeat("ab", 32)
	ed := base64.StdEncoding.EncodeToString(make([]byte, 64))
	entry := func(keyid, alg, value string) string {
		return "[[signature]]\nkeyid = \"" + keyid + "\"\nalgorithm = \"" + alg + "\"\nvalue = \"" + value + "\"\n"
	}
	cases := map[string]struct{ data, want string }{
		"empty":         {"", "no signatures"},
		"unknown key":   {entry(id, "ed25519", ed) + "extra = 1\n", `unknown key "signature.extra"`},
		"short keyid":   {entry("abcd", "ed25519", ed), "not 64 lowercase hex"},
		"upper keyid":   {entry(strings.ToUpper(id), "ed25519", ed), "not 64 lowercase hex"},
		"algorithm":     {entry(id, "rsa-pss", ed), `unknown algorithm "rsa-pss"`},
		"not base64":    {entry(id, "ed25519", "!!!"), "not base64"},
		"unpadded":      {entry(id, "ed25519", strings.TrimRight(ed, "=")), "not base64"},
		"ed25519 short": {entry(id, "ed25519", "AAAA"), "want 64"},
		"ecdsa long":    {entry(id, "ecdsa-p256-sha256", base64.StdEncoding.EncodeToString(make([]byte, 73))), "too long"},
		"too many":      {strings.Repeat(entry(id, "ed25519", ed), MaxSignatures+1), "at most 64"},
		"huge":          {strings.Repeat("#", MaxSignatureFileLen+1), "larger than"},
		"not toml":      {"[[signature]\n", "x.sig:2"},
	}
	for name, c := range cases {
		_, err := ParseSignatures("x.sig", []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	if _, err := ParseSignatures("x.sig", []byte(entry(id, "ed25519", ed)+"\n"+entry(id, "ed25519", ed))); err != nil {
		t.Errorf("the same key twice must parse (it counts once): %v", err)
	}
}

// TestSignatureOpenSSL checks the signatures are the standard ones: openssl
// verifies them with nothing but the public key PEM.
func TestSignatureOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	data := []byte("release = \"signed bytes\"\n")
	file := filepath.Join(dir, "release.toml")
	must(t, os.WriteFile(file, data, 0o644))
	for _, alg := range Algorithms() {
		t.Run(alg, func(t *testing.T) {
			k := newTestKey(t, alg)
			raw, err := k.sign(t, data).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			pub := filepath.Join(dir, alg+".pub")
			sig := filepath.Join(dir, alg+".der")
			must(t, os.WriteFile(pub, k.kp.PublicPEM, 0o644))
			must(t, os.WriteFile(sig, raw, 0o644))
			var args []string
			if alg == AlgECDSAP256SHA256 {
				args = []string{"dgst", "-sha256", "-verify", pub, "-signature", sig, file}
			} else {
				args = []string{"pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", file, "-sigfile", sig}
			}
			out, err := exec.Command("openssl", args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Verified OK") && !strings.Contains(string(out), "Signature Verified Successfully") {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
			// and openssl refuses it over other bytes, so the check can fail
			must(t, os.WriteFile(file+".other", append(bytes.Clone(data), '!'), 0o644))
			args[len(args)-1] = file + ".other"
			if alg == AlgEd25519 {
				args = []string{"pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", file + ".other", "-sigfile", sig}
			}
			if out, err := exec.Command("openssl", args...).CombinedOutput(); err == nil {
				t.Fatalf("openssl accepted a signature over other bytes:\n%s", out)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
