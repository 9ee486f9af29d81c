package schema

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parsers maps each golden-vector directory to its parser.
var parsers = map[string]func(name string, data []byte) (any, error){
	"fleet":   func(n string, d []byte) (any, error) { return ParseFleet(n, d) },
	"release": func(n string, d []byte) (any, error) { return ParseRelease(n, d) },
	"status":  func(n string, d []byte) (any, error) { return ParseStatus(n, d) },
}

// TestGoldenVectors parses every testdata/<kind>/*.toml and checks the
// result listed in testdata/<kind>/results.txt: "ok" or an error substring.
// Invalid vectors are parsed under the name of the valid file they were
// derived from, so expected errors can quote file:line.
func TestGoldenVectors(t *testing.T) {
	for kind, parse := range parsers {
		dir := filepath.Join("testdata", kind)
		want := readResults(t, filepath.Join(dir, "results.txt"))
		files, _ := filepath.Glob(filepath.Join(dir, "*.toml"))
		if len(files) != len(want) {
			t.Errorf("%s: %d .toml files but %d results", kind, len(files), len(want))
		}
		base := map[string]string{"fleet": "vernemq.toml", "release": "vernemq.toml", "status": "sg.toml"}[kind]
		for _, f := range files {
			name := filepath.Base(f)
			exp, ok := want[name]
			if !ok {
				t.Errorf("%s/%s: not listed in results.txt", kind, name)
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parseAs := name
			if exp != "ok" {
				parseAs = base
			}
			_, err = parse(parseAs, data)
			switch {
			case exp == "ok" && err != nil:
				t.Errorf("%s/%s: want ok, got %v", kind, name, err)
			case exp != "ok" && err == nil:
				t.Errorf("%s/%s: want error containing %q, got ok", kind, name, exp)
			case exp != "ok" && !strings.Contains(err.Error(), exp):
				t.Errorf("%s/%s: want error containing %q, got %v", kind, name, exp, err)
			}
		}
	}
}

func readResults(t *testing.T, name string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, exp, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("%s: bad line %q", name, line)
		}
		m[file] = exp
	}
	return m
}

// TestEncodeRoundTrip: parse → encode → parse gives equal values, and the
// golden release is already in canonical form.
func TestEncodeRoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/release/vernemq.toml", "testdata/release/v1.toml"} {
		data := readFile(t, f)
		r, err := ParseRelease(f, data)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, data) {
			t.Errorf("%s: not canonical; Encode gives:\n%s", f, enc)
		}
		r2, err := ParseRelease(f, enc)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Errorf("%s: round trip changed the release", f)
		}
		n, ok := r.Node("sg")
		if !ok || n.Name != "sg" || n.Files[0].Target != "/etc/vernemq/vernemq.conf" {
			t.Errorf("%s: Node(sg) = %+v, %v", f, n, ok)
		}
		if _, ok := r.Node("xx"); ok {
			t.Errorf("Node(xx) found")
		}
	}
	for _, f := range []string{"testdata/status/sg.toml", "testdata/status/fresh.toml"} {
		s, err := ParseStatus(f, readFile(t, f))
		if err != nil {
			t.Fatal(err)
		}
		enc, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		s2, err := ParseStatus(f, enc)
		if err != nil {
			t.Fatalf("%v\n%s", err, enc)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Errorf("%s: round trip changed the status:\n%+v\n%+v", f, s, s2)
		}
		enc2, _ := s2.Encode()
		if !bytes.Equal(enc, enc2) {
			t.Errorf("%s: encoding is not stable", f)
		}
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	r, err := ParseRelease("r", readFile(t, "testdata/release/vernemq.toml"))
	if err != nil {
		t.Fatal(err)
	}
	r.Nodes[0].Files[0].Target = "../etc/passwd"
	if _, err := r.Encode(); err == nil || !strings.HasPrefix(err.Error(), "encode release 2: node \"cn\"") {
		t.Fatalf("got %v", err)
	}
	s := &Status{Node: "sg", Region: "sg", Sequence: 1, Time: time.Now().In(time.FixedZone("x", 3600))}
	if _, err := s.Encode(); err == nil || !strings.Contains(err.Error(), "must be UTC") {
		t.Fatalf("got %v", err)
	}
}

func TestParseFleetDefaults(t *testing.T) {
	f, err := ParseFleet("minimal.toml", readFile(t, "testdata/fleet/minimal.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Service.Restart != DefaultRestart || f.Rollout.Expires != DefaultReleaseLifetime {
		t.Fatalf("defaults not applied: %+v", f)
	}
	if f.ImageName() != "nginx-1.27" {
		t.Fatalf("image name %q", f.ImageName())
	}
	v, err := ParseFleet("vernemq.toml", readFile(t, "testdata/fleet/vernemq.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Templates[0].Mode != 0o644 || v.Service.Health.Timeout.D() != 10*time.Second || v.AttachOf(&v.Nodes[3]).Driver != DriverDocker {
		t.Fatalf("fleet: %+v", v)
	}
}

func TestPathChecks(t *testing.T) {
	good := []string{"a", "a/b.c", "nodes/cn/vernemq.conf", "..a", "a..", "é"}
	bad := []string{"", "/a", "a/", "a//b", ".", "./a", "a/..", "a\\b", "a\x00", "a\nb", "\xff", strings.Repeat("a", 256)}
	for _, p := range good {
		if err := CheckRelPath(p); err != nil {
			t.Errorf("CheckRelPath(%q): %v", p, err)
		}
		if err := CheckAbsPath("/" + p); err != nil {
			t.Errorf("CheckAbsPath(/%q): %v", p, err)
		}
	}
	for _, p := range bad {
		if err := CheckRelPath(p); err == nil {
			t.Errorf("CheckRelPath(%q) ok", p)
		}
	}
	for _, p := range []string{"/", "a", "//a", "/a/../b", "/a/./b"} {
		if err := CheckAbsPath(p); err == nil {
			t.Errorf("CheckAbsPath(%q) ok", p)
		}
	}
	for _, n := range []string{"cn", "0", "a-b_c.d", strings.Repeat("a", 63)} {
		if err := CheckName(n); err != nil {
			t.Errorf("CheckName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", ".a", "A", "a b", "a/b", "a..b", "a.", "a.lock", strings.Repeat("a", 64)} {
		if err := CheckName(n); err == nil {
			t.Errorf("CheckName(%q) ok", n)
		}
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
