package schema

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// The golden vectors in testdata/sig and testdata/root are what a second
// verifier is checked against. They are generated once, with
//
//	go test ./schema -run TestGenerateVectors -update
//
// and committed; regenerating changes every ECDSA signature (they are
// randomised), so only do it when the format changes. The keys are test-only.
var update = flag.Bool("update", false, "regenerate the golden vectors in testdata/")

// vectorNow is the clock the vectors are checked at.
var vectorNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

const vectorPassword = "pullship test vectors"

type sigVectors struct {
	Key []struct {
		Private  string `toml:"private"`
		Public   string `toml:"public"`
		Password string `toml:"password"`
		ID       string `toml:"id"`
	} `toml:"key"`
	Case []struct {
		Name  string `toml:"name"`
		Root  string `toml:"root"`
		Data  string `toml:"data"`
		Sig   string `toml:"sig"`
		Valid int    `toml:"valid"`
		Error string `toml:"error"`
	} `toml:"case"`
}

type rootVectors struct {
	Pinned string `toml:"pinned"`
	Chain  []struct {
		Name    string `toml:"name"`
		Dir     string `toml:"dir"`
		Version int64  `toml:"version"`
		Error   string `toml:"error"`
	} `toml:"chain"`
	Invalid []struct {
		File  string `toml:"file"`
		Error string `toml:"error"`
	} `toml:"invalid"`
}

func readVectorFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestSigVectors(t *testing.T) {
	dir := filepath.Join("testdata", "sig")
	var v sigVectors
	if _, err := toml.DecodeFile(filepath.Join(dir, "cases.toml"), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Key) == 0 || len(v.Case) == 0 {
		t.Fatal("no vectors")
	}
	for _, k := range v.Key {
		var pw func() ([]byte, error)
		if k.Password != "" {
			pw = func() ([]byte, error) { return []byte(k.Password), nil }
		}
		sv, _, err := LoadPrivateKey(k.Private, readVectorFile(t, filepath.Join(dir, k.Private)), pw)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := sv.PublicKey()
		id, _ := KeyID(pub)
		rk, err := NewRootKey(readVectorFile(t, filepath.Join(dir, k.Public)))
		if err != nil {
			t.Fatal(err)
		}
		if id != k.ID || rk.ID != k.ID {
			t.Errorf("%s: key id %s / %s, want %s", k.Private, id, rk.ID, k.ID)
		}
	}
	for _, c := range v.Case {
		t.Run(c.Name, func(t *testing.T) {
			root, err := ParseRoot(c.Root, readVectorFile(t, filepath.Join(dir, c.Root)))
			if err != nil {
				t.Fatal(err)
			}
			res, err := VerifySigned(root, c.Data, readVectorFile(t, filepath.Join(dir, c.Data)),
				readVectorFile(t, filepath.Join(dir, c.Sig)), vectorNow)
			if c.Error == "" && err != nil {
				t.Fatal(err)
			}
			if c.Error != "" && (err == nil || !strings.Contains(err.Error(), c.Error)) {
				t.Fatalf("err = %v, want %q", err, c.Error)
			}
			if res != nil && len(res.Valid) != c.Valid {
				t.Fatalf("%d valid keys, want %d", len(res.Valid), c.Valid)
			}
		})
	}
}

// loadChainDir reads root-N.toml and root-N.toml.sig from dir in version order.
func loadChainDir(t *testing.T, dir string) []SignedFile {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "root-*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	version := func(p string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "root-"), ".toml"))
		return n
	}
	sort.Slice(names, func(i, j int) bool { return version(names[i]) < version(names[j]) })
	var files []SignedFile
	for _, n := range names {
		files = append(files, SignedFile{Name: filepath.Base(n), Data: readVectorFile(t, n), Sig: readVectorFile(t, n+".sig")})
	}
	return files
}

func TestRootVectors(t *testing.T) {
	dir := filepath.Join("testdata", "root")
	var v rootVectors
	if _, err := toml.DecodeFile(filepath.Join(dir, "cases.toml"), &v); err != nil {
		t.Fatal(err)
	}
	pinned, err := ParseRoot(v.Pinned, readVectorFile(t, filepath.Join(dir, v.Pinned)))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Chain) == 0 || len(v.Invalid) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range v.Chain {
		t.Run(c.Name, func(t *testing.T) {
			got, err := VerifyRootChain(pinned, loadChainDir(t, filepath.Join(dir, c.Dir)), vectorNow)
			if c.Error != "" {
				if err == nil || !strings.Contains(err.Error(), c.Error) {
					t.Fatalf("err = %v, want %q", err, c.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != c.Version {
				t.Fatalf("newest root %d, want %d", got.Version, c.Version)
			}
		})
	}
	for _, c := range v.Invalid {
		t.Run(c.File, func(t *testing.T) {
			_, err := ParseRoot(c.File, readVectorFile(t, filepath.Join(dir, c.File)))
			if err == nil || !strings.Contains(err.Error(), c.Error) {
				t.Fatalf("err = %v, want %q", err, c.Error)
			}
		})
	}
}

// TestGenerateVectors writes testdata/sig and testdata/root; it runs only
// with -update.
func TestGenerateVectors(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate the golden vectors")
	}
	sigDir, rootDir := filepath.Join("testdata", "sig"), filepath.Join("testdata", "root")
	for _, d := range []string{sigDir, rootDir} {
		must(t, os.RemoveAll(d))
	}
	write := func(path string, data []byte) {
		t.Helper()
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, data, 0o644))
	}
	// Keys: a, b (ECDSA), c (Ed25519), d (ECDSA, encrypted).
	keys := map[string]testKey{}
	var cases strings.Builder
	for _, name := range []string{"a", "b", "c", "d"} {
		alg, pw := AlgECDSAP256SHA256, ""
		if name == "c" {
			alg = AlgEd25519
		}
		if name == "d" {
			pw = vectorPassword
		}
		kp, err := GenerateKey(alg, []byte(pw))
		if err != nil {
			t.Fatal(err)
		}
		sv, _, err := LoadPrivateKey(name, kp.PrivatePEM, func() ([]byte, error) { return []byte(pw), nil })
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = testKey{kp: kp, sv: sv, alg: alg}
		write(filepath.Join(sigDir, "keys", name+".key"), kp.PrivatePEM)
		write(filepath.Join(sigDir, "keys", name+".pub"), kp.PublicPEM)
		fmt.Fprintf(&cases, "[[key]]\nprivate = %q\npublic = %q\npassword = %q\nid = %q\n\n", "keys/"+name+".key", "keys/"+name+".pub", pw, kp.KeyID)
	}
	a, b, c, d := keys["a"], keys["b"], keys["c"], keys["d"]
	far := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	mkRoot := func(version int64, expires time.Time, threshold int, ks ...testKey) *Root {
		r := newTestRoot(t, version, threshold, ks...)
		r.Expires = expires
		return r
	}

	// Signature vectors over message.txt against a root of a, b, c (2 of 3).
	write(filepath.Join(sigDir, "root.toml"), encodeRoot(t, mkRoot(1, far, 2, a, b, c)))
	write(filepath.Join(sigDir, "expired-root.toml"), encodeRoot(t, mkRoot(1, past, 2, a, b, c)))
	msg := []byte("version = 42\nprevious = \"\"\n")
	write(filepath.Join(sigDir, "message.txt"), msg)
	write(filepath.Join(sigDir, "message-changed.txt"), []byte("version = 43\nprevious = \"\"\n"))
	flipped := b.sign(t, msg)
	raw, _ := flipped.Bytes()
	raw[len(raw)-1] ^= 1
	flipped.Value = b64(raw)
	sigCases := []struct {
		name, root, data string
		sigs             []Signature
		valid            int
		err              string
	}{
		{"a-b", "root.toml", "message.txt", []Signature{a.sign(t, msg), b.sign(t, msg)}, 2, ""},
		{"a-c-ed25519", "root.toml", "message.txt", []Signature{a.sign(t, msg), c.sign(t, msg)}, 2, ""},
		{"a-b-c", "root.toml", "message.txt", []Signature{a.sign(t, msg), b.sign(t, msg), c.sign(t, msg)}, 3, ""},
		{"unknown-then-two", "root.toml", "message.txt", []Signature{d.sign(t, msg), b.sign(t, msg), c.sign(t, msg)}, 2, ""},
		{"c-only", "root.toml", "message.txt", []Signature{c.sign(t, msg)}, 1, "1 of 2 required signatures valid"},
		{"a-twice", "root.toml", "message.txt", []Signature{a.sign(t, msg), a.sign(t, msg)}, 1, "counted already"},
		{"a-unknown", "root.toml", "message.txt", []Signature{a.sign(t, msg), d.sign(t, msg)}, 1, "key " + short(d.id()) + " unknown"},
		{"b-bit-flipped", "root.toml", "message.txt", []Signature{a.sign(t, msg), flipped}, 1, "key " + short(b.id()) + " signature invalid"},
		{"data-changed", "root.toml", "message-changed.txt", []Signature{a.sign(t, msg), b.sign(t, msg)}, 0, "0 of 2 required signatures valid"},
		{"expired-root", "expired-root.toml", "message.txt", []Signature{a.sign(t, msg), b.sign(t, msg)}, 0, "trust root expired"},
	}
	for _, sc := range sigCases {
		write(filepath.Join(sigDir, sc.name+".sig"), sigFile(sc.sigs...).Encode())
		fmt.Fprintf(&cases, "[[case]]\nname = %q\nroot = %q\ndata = %q\nsig = %q\nvalid = %d\nerror = %q\n\n",
			sc.name, sc.root, sc.data, sc.name+".sig", sc.valid, sc.err)
	}
	write(filepath.Join(sigDir, "not-base64.sig"), []byte("[[signature]]\nkeyid = \""+a.id()+"\"\nalgorithm = \"ecdsa-p256-sha256\"\nvalue = \"***\"\n"))
	fmt.Fprintf(&cases, "[[case]]\nname = \"not-base64\"\nroot = \"root.toml\"\ndata = \"message.txt\"\nsig = \"not-base64.sig\"\nvalid = 0\nerror = \"not base64\"\n")
	write(filepath.Join(sigDir, "cases.toml"), []byte(strings.TrimSpace(cases.String())+"\n"))

	// Root chains from root-1 (a, b; 2 of 2).
	cases.Reset()
	root1 := mkRoot(1, far, 2, a, b)
	write(filepath.Join(rootDir, "root-1.toml"), encodeRoot(t, root1))
	cases.WriteString("pinned = \"root-1.toml\"\n\n")
	root2 := mkRoot(2, far, 2, b, c, d)
	root3 := mkRoot(3, far, 1, d)
	chain := func(dir string, steps ...SignedFile) {
		for _, s := range steps {
			write(filepath.Join(rootDir, dir, s.Name), s.Data)
			write(filepath.Join(rootDir, dir, s.Name+".sig"), s.Sig)
		}
	}
	chain("good", chainStep(t, root2, a, b, c), chainStep(t, root3, c, d))
	chain("only-old", chainStep(t, root2, a, b))
	chain("only-new", chainStep(t, root2, c, d))
	chain("gap", chainStep(t, root3, a, b, d))
	chain("expired-middle", chainStep(t, mkRoot(2, past, 2, b, c, d), a, b, c, d), chainStep(t, root3, c, d))
	chain("expired-final", chainStep(t, mkRoot(2, past, 2, b, c, d), a, b, c, d))
	tampered := chainStep(t, root2, a, b, c, d)
	tampered.Data = []byte(strings.Replace(string(tampered.Data), "threshold = 2", "threshold = 1", 1))
	chain("tampered", tampered)
	for _, cc := range []struct {
		name    string
		version int64
		err     string
	}{
		{"good", 3, ""},
		{"only-old", 0, "signatures by its own keys: 1 of 2 required signatures valid"},
		{"only-new", 0, "signatures by root 1's keys: 0 of 2 required signatures valid"},
		{"gap", 0, "version 3 cannot follow root 1"},
		{"expired-middle", 3, ""},
		{"expired-final", 0, "trust root expired"},
		{"tampered", 0, "signatures by root 1's keys: 0 of 2"},
	} {
		fmt.Fprintf(&cases, "[[chain]]\nname = %q\ndir = %q\nversion = %d\nerror = %q\n\n", cc.name, cc.name, cc.version, cc.err)
	}

	good := string(encodeRoot(t, root2))
	keyA := a.rootKey(t)
	invalid := []struct{ file, data, err string }{
		{"listed-twice.toml", good + good[strings.Index(good, "[[key]]"):], "listed twice"},
		{"id-mismatch.toml", strings.Replace(good, d.id(), keyA.ID, 1), "id does not match the public key"},
		{"alg-mismatch.toml", strings.Replace(good, "algorithm = \"ed25519\"", "algorithm = \"ecdsa-p256-sha256\"", 1), "but the public key is ed25519"},
		{"threshold-zero.toml", strings.Replace(good, "threshold = 2", "threshold = 0", 1), "threshold 0"},
		{"threshold-too-high.toml", strings.Replace(good, "threshold = 2", "threshold = 4", 1), "threshold 4"},
		{"version-zero.toml", strings.Replace(good, "version = 2", "version = 0", 1), "version 0"},
		{"no-expires.toml", strings.Replace(good, "expires = 2099-01-01T00:00:00Z\n", "", 1), "expires is missing"},
		{"not-utc.toml", strings.Replace(good, "2099-01-01T00:00:00Z", "2099-01-01T00:00:00+02:00", 1), "must be a UTC"},
		{"unknown-field.toml", strings.Replace(good, "threshold = 2", "threshold = 2\nquorum = 2", 1), `invalid/unknown-field.toml:4: unknown key "quorum"`},
		{"bad-pem.toml", strings.Replace(good, "-----BEGIN PUBLIC KEY-----\nMF", "-----BEGIN PUBLIC KEY-----\nXF", 1), "public_key"},
	}
	for _, in := range invalid {
		write(filepath.Join(rootDir, "invalid", in.file), []byte(in.data))
		fmt.Fprintf(&cases, "[[invalid]]\nfile = %q\nerror = %q\n\n", "invalid/"+in.file, in.err)
	}
	write(filepath.Join(rootDir, "cases.toml"), []byte(strings.TrimSpace(cases.String())+"\n"))
}
