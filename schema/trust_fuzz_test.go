package schema

import (
	"os"
	"path/filepath"
	"testing"
)

// addTrustSeeds adds every file matching the globs under testdata as a seed.
func addTrustSeeds(f *testing.F, globs ...string) {
	for _, g := range globs {
		names, _ := filepath.Glob(filepath.Join("testdata", g))
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

func FuzzParseRoot(f *testing.F) {
	addTrustSeeds(f, "root/*.toml", "root/*/*.toml", "sig/root.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRoot("root.toml", data)
		if err != nil {
			if r != nil {
				t.Fatal("root returned with an error")
			}
			return
		}
		// Whatever parses re-encodes (unless it has fractional seconds,
		// which Encode refuses) and parses back to the same root.
		enc, err := r.Encode()
		if err != nil {
			if r.Expires.Nanosecond() != 0 {
				return
			}
			t.Fatalf("parsed root does not encode: %v", err)
		}
		again, err := ParseRoot("root.toml", enc)
		if err != nil {
			t.Fatalf("encoded root does not parse: %v\n%s", err, enc)
		}
		if again.Version != r.Version || again.Threshold != r.Threshold || len(again.Keys) != len(r.Keys) || !again.Expires.Equal(r.Expires) {
			t.Fatal("round trip changed the root")
		}
	})
}

func FuzzParseSignatures(f *testing.F) {
	addTrustSeeds(f, "sig/*.sig", "root/*/*.sig")
	root, err := ParseRoot("root.toml", mustReadSeed(f, "testdata/sig/root.toml"))
	if err != nil {
		f.Fatal(err)
	}
	msg := mustReadSeed(f, "testdata/sig/message.txt")
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSignatures("x.sig", data)
		if err != nil {
			if s != nil {
				t.Fatal("signatures returned with an error")
			}
			return
		}
		again, err := ParseSignatures("x.sig", s.Encode())
		if err != nil || len(again.Signatures) != len(s.Signatures) {
			t.Fatalf("encoded file does not parse back: %v", err)
		}
		// Verifying anything that parses must not panic, and never counts
		// a key twice.
		res, _ := VerifyThreshold(root, msg, s)
		seen := map[string]bool{}
		for _, id := range res.Valid {
			if seen[id] {
				t.Fatalf("key %s counted twice", id)
			}
			seen[id] = true
		}
	})
}

func mustReadSeed(f *testing.F, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return data
}
