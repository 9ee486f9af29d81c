package schema

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func sigFile(sigs ...Signature) *SignatureFile { return &SignatureFile{Signatures: sigs} }

func TestVerifyThreshold(t *testing.T) {
	a, b, c := newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgEd25519), newTestKey(t, AlgECDSAP256SHA256)
	stranger := newTestKey(t, AlgECDSAP256SHA256)
	root := newTestRoot(t, 1, 2, a, b, c)
	data := []byte("version = 7\n")
	changed := []byte("version = 8\n") // one byte changed
	bad := a.sign(t, changed)
	bad.KeyID = b.id() // a's signature claimed for b
	bad.Algorithm = AlgEd25519
	wrongAlg := c.sign(t, data)
	wrongAlg.Algorithm = AlgEd25519

	cases := []struct {
		name  string
		sigs  *SignatureFile
		data  []byte
		valid int
		err   string // "" when the threshold is met
	}{
		{"two keys", sigFile(a.sign(t, data), b.sign(t, data)), data, 2, ""},
		{"all three", sigFile(a.sign(t, data), b.sign(t, data), c.sign(t, data)), data, 3, ""},
		{"one byte changed", sigFile(a.sign(t, data), b.sign(t, data)), changed, 0,
			"0 of 2 required signatures valid: key " + short(a.id()) + " signature invalid; key " + short(b.id()) + " signature invalid"},
		{"one key twice", sigFile(a.sign(t, data), a.sign(t, data)), data, 1,
			"1 of 2 required signatures valid: key " + short(a.id()) + " counted already"},
		{"unknown key", sigFile(a.sign(t, data), stranger.sign(t, data)), data, 1,
			"1 of 2 required signatures valid: key " + short(stranger.id()) + " unknown"},
		{"invalid among enough valid", sigFile(stranger.sign(t, data), a.sign(t, changed), a.sign(t, data), c.sign(t, data)), data, 2, ""},
		{"signature of another key", sigFile(a.sign(t, data), bad), data, 1, "key " + short(b.id()) + " signature invalid"},
		{"algorithm mismatch", sigFile(a.sign(t, data), wrongAlg), data, 1, "key " + short(c.id()) + " algorithm mismatch"},
		{"no signatures", sigFile(), data, 0, "0 of 2 required signatures valid: no signatures"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := VerifyThreshold(root, tc.data, tc.sigs)
			if res == nil {
				t.Fatalf("no result: %v", err)
			}
			if len(res.Valid) != tc.valid {
				t.Errorf("%d valid, want %d", len(res.Valid), tc.valid)
			}
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var te *ThresholdError
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want *ThresholdError", err)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %q\nwant %q", err, tc.err)
			}
		})
	}
}

func TestVerifyThresholdRejectsP1363(t *testing.T) {
	// sigstore would accept r||s; the format allows only DER.
	a := newTestKey(t, AlgECDSAP256SHA256)
	root := newTestRoot(t, 1, 1, a)
	data := []byte("x")
	s := a.sign(t, data)
	raw, _ := s.Bytes()
	// DER: 30 len 02 lr r 02 ls s
	lr := int(raw[3])
	r := raw[4 : 4+lr]
	ss := raw[4+lr+2:]
	p := make([]byte, 64)
	copy(p[32-min(32, len(trimZero(r))):32], trimZero(r))
	copy(p[64-len(trimZero(ss)):], trimZero(ss))
	s.Value = b64(p)
	// sigstore itself takes it, so only the DER rule can refuse it
	if err := a.sv.VerifySignature(bytes.NewReader(p), bytes.NewReader(data)); err != nil {
		t.Fatalf("test vector is not a valid P1363 signature: %v", err)
	}
	if _, err := VerifyThreshold(root, data, sigFile(s)); err == nil {
		t.Fatal("IEEE P1363 signature accepted")
	}
}

func trimZero(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

func TestVerifySigned(t *testing.T) {
	a := newTestKey(t, AlgEd25519)
	root := newTestRoot(t, 1, 1, a)
	data := []byte("payload")
	sig := sigFile(a.sign(t, data)).Encode()
	res, err := VerifySigned(root, "release.toml", data, sig, testNow)
	if err != nil || len(res.Valid) != 1 || res.Valid[0] != a.id() {
		t.Fatalf("res %+v err %v", res, err)
	}
	_, err = VerifySigned(root, "release.toml", data, sig, testExpires)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("expired root: err = %v, want ErrExpired", err)
	}
	v := &Verifier{Root: root, Now: func() time.Time { return testExpires.Add(-time.Second) }}
	if _, err := v.Verify("release.toml", data, sig); err != nil {
		t.Fatalf("Verifier a second before expiry: %v", err)
	}
	v.Now = func() time.Time { return testExpires }
	if _, err := v.Verify("release.toml", data, sig); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verifier at expiry: err = %v, want ErrExpired", err)
	}
	_, err = VerifySigned(root, "release.toml", data, []byte("junk"), testNow)
	if err == nil || !strings.Contains(err.Error(), "verify release.toml: release.toml.sig:") {
		t.Fatalf("bad sig file: err = %v", err)
	}
	_, err = VerifySigned(root, "release.toml", []byte("payloaD"), sig, testNow)
	if err == nil || !strings.Contains(err.Error(), "verify release.toml: 0 of 1 required signatures valid") {
		t.Fatalf("changed data: err = %v", err)
	}
}

// chainStep signs root r's encoding with signers.
func chainStep(t *testing.T, r *Root, signers ...testKey) SignedFile {
	t.Helper()
	data := encodeRoot(t, r)
	var f SignatureFile
	for _, k := range signers {
		f.Add(k.sign(t, data))
	}
	return SignedFile{Name: RootFileName(r.Version), Data: data, Sig: f.Encode()}
}

func TestVerifyRootChain(t *testing.T) {
	a, b, c, d := newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgEd25519), newTestKey(t, AlgEd25519)
	root1 := newTestRoot(t, 1, 2, a, b)
	root2 := newTestRoot(t, 2, 2, b, c, d) // rotates a out, c and d in
	root3 := newTestRoot(t, 3, 1, d)
	good2 := chainStep(t, root2, a, b, c)
	good3 := chainStep(t, root3, c, d)

	got, err := VerifyRootChain(root1, []SignedFile{good2, good3}, testNow)
	if err != nil || got.Version != 3 {
		t.Fatalf("good chain: %v, %v", got, err)
	}
	if got, err := VerifyRootChain(root1, nil, testNow); err != nil || got != root1 {
		t.Fatalf("empty chain: %v %v", got, err)
	}

	expired2 := *root2
	expired2.Expires = testNow.Add(-time.Hour)
	expired3 := *root3
	expired3.Expires = testNow.Add(-time.Hour)
	tampered := good2
	tampered.Data = []byte(strings.Replace(string(good2.Data), "threshold = 2", "threshold = 1", 1))

	cases := []struct {
		name  string
		chain []SignedFile
		want  string // error substring, "" for success
		isExp bool
	}{
		{"only old keys", []SignedFile{chainStep(t, root2, a, b)}, "verify root-2.toml: signatures by its own keys: 1 of 2 required signatures valid: key " + short(a.id()) + " unknown", false},
		{"only new keys", []SignedFile{chainStep(t, root2, c, d)}, "verify root-2.toml: signatures by root 1's keys: 0 of 2 required signatures valid: key " + short(c.id()) + " unknown; key " + short(d.id()) + " unknown", false},
		{"root-3 after root-1", []SignedFile{chainStep(t, root3, a, b, d)}, "verify root-3.toml: version 3 cannot follow root 1 (want version 2", false},
		{"same version again", []SignedFile{chainStep(t, root1, a, b)}, "version 1 cannot follow root 1", false},
		{"tampered after signing", []SignedFile{tampered}, "signatures by root 1's keys: 0 of 2", false},
		{"one old key twice", []SignedFile{{Name: "root-2.toml", Data: good2.Data, Sig: sigFile(a.sign(t, good2.Data), a.sign(t, good2.Data), c.sign(t, good2.Data), d.sign(t, good2.Data)).Encode()}}, "counted already", false},
		{"expired intermediate", []SignedFile{chainStep(t, &expired2, a, b, c), chainStep(t, root3, c, d)}, "", false},
		{"expired final", []SignedFile{good2, chainStep(t, &expired3, c, d)}, "root 3 expired", true},
		{"missing sig", []SignedFile{{Name: "root-2.toml", Data: good2.Data}}, "root-2.toml.sig", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := VerifyRootChain(root1, tc.chain, testNow)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Version != int64(len(tc.chain))+1 {
					t.Fatalf("newest version %d", got.Version)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant %q", err, tc.want)
			}
			if errors.Is(err, ErrExpired) != tc.isExp {
				t.Fatalf("errors.Is(err, ErrExpired) = %v", !tc.isExp)
			}
		})
	}

	expired1 := *root1
	expired1.Expires = testNow.Add(-time.Hour)
	if _, err := VerifyRootChain(&expired1, nil, testNow); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired pinned root alone: %v", err)
	}
	if got, err := VerifyRootChain(&expired1, []SignedFile{good2}, testNow); err != nil || got.Version != 2 {
		t.Fatalf("expired pinned root, fresh successor: %v %v", got, err)
	}
}

func TestRootChainAfter(t *testing.T) {
	f := func(name string) SignedFile { return SignedFile{Name: name} }
	got, err := RootChainAfter([]SignedFile{f("root/root-10.toml"), f("root/root-2.toml"), f("root/root-1.toml"), f("root/root-3.toml")}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, g.Name)
	}
	if strings.Join(names, " ") != "root/root-2.toml root/root-3.toml root/root-10.toml" {
		t.Fatalf("order %v", names)
	}
	for _, bad := range [][]SignedFile{
		{f("root-01.toml")}, {f("root-0.toml")}, {f("root-x.toml")}, {f("root-2.toml.sig")}, {f("release.toml")},
		{f("a/root-2.toml"), f("b/root-2.toml")},
	} {
		if _, err := RootChainAfter(bad, 0); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
