package schema

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func addSeeds(f *testing.F, kinds ...string) {
	for _, kind := range kinds {
		files, _ := filepath.Glob(filepath.Join("testdata", kind, "*.toml"))
		for _, name := range files {
			data, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

func FuzzParseFleet(f *testing.F) {
	addSeeds(f, "fleet")
	f.Fuzz(func(t *testing.T, data []byte) {
		fl, err := ParseFleet("fleet.toml", data)
		if err != nil {
			if fl != nil {
				t.Fatal("value returned with an error")
			}
			return
		}
		if err := fl.Validate(); err != nil {
			t.Fatalf("parsed fleet does not validate: %v", err)
		}
	})
}

func FuzzParseRelease(f *testing.F) {
	addSeeds(f, "release")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRelease("release.toml", data)
		if err != nil {
			return
		}
		// Whatever parses must encode, and the encoding must parse back
		// to the same release and be stable.
		enc, err := r.Encode()
		if err != nil {
			t.Fatalf("encode of a parsed release: %v", err)
		}
		r2, err := ParseRelease("release.toml", enc)
		if err != nil {
			t.Fatalf("parse of an encoded release: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the release:\n%s", enc)
		}
		enc2, _ := r2.Encode()
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding is not stable")
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	addSeeds(f, "status")
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStatus("status.toml", data)
		if err != nil {
			return
		}
		enc, err := s.Encode()
		if err != nil {
			t.Fatalf("encode of a parsed status: %v", err)
		}
		s2, err := ParseStatus("status.toml", enc)
		if err != nil {
			t.Fatalf("parse of an encoded status: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the status:\n%s", enc)
		}
	})
}

func FuzzDecodeStrict(f *testing.F) {
	addSeeds(f, "fleet", "release", "status")
	f.Fuzz(func(t *testing.T, data []byte) {
		var v struct {
			Version int64            `toml:"version"`
			Node    []map[string]any `toml:"node"`
		}
		err := DecodeStrict("f.toml", data, &v)
		if err != nil && !strings.HasPrefix(err.Error(), "f.toml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
