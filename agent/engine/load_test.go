package engine_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/engine/enginetest"
)

func tarEntries(t testing.TB, data []byte) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatalf("read filtered tar: %v", err)
		}
		b, _ := io.ReadAll(tr)
		m[hdr.Name] = b
	}
}

func TestFilterSaveTarDropsTags(t *testing.T) {
	var in bytes.Buffer
	img := enginetest.Image{
		Files:    []enginetest.File{{Name: "hello", Mode: 0o644, Data: []byte("hi")}},
		RepoTags: []string{"example/app:1", "localhost:5000/x:latest"},
	}
	id, err := enginetest.WriteImage(&in, img)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	facts, err := engine.FilterSaveTar(&out, bytes.NewReader(in.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if facts.ConfigDigest != id {
		t.Fatalf("config digest %s, want %s", facts.ConfigDigest, id)
	}
	got := tarEntries(t, out.Bytes())
	if _, ok := got["repositories"]; ok {
		t.Error("repositories file passed through")
	}
	if bytes.Contains(got["manifest.json"], []byte("RepoTags")) {
		t.Errorf("manifest.json still tagged: %s", got["manifest.json"])
	}
	want := tarEntries(t, in.Bytes())
	for name, b := range want {
		if name == "manifest.json" || name == "repositories" {
			continue
		}
		if !bytes.Equal(got[name], b) {
			t.Errorf("entry %s changed", name)
		}
	}
}

// hostileLayout is a tarball holding image a as manifest.json names it and
// image b as an OCI layout (index.json, oci-layout and b's entries), which
// the containerd image store would load instead of a.
func hostileLayout(t *testing.T) (data []byte, a, b string, aConfig []byte) {
	t.Helper()
	var ta, tb bytes.Buffer
	a, err := enginetest.WriteImage(&ta, enginetest.Image{Files: []enginetest.File{{Name: "good", Mode: 0o644, Data: []byte("good")}}, Labels: map[string]string{"t": uniq("good")}})
	if err != nil {
		t.Fatal(err)
	}
	b, err = enginetest.WriteImage(&tb, enginetest.Image{Files: []enginetest.File{{Name: "evil", Mode: 0o644, Data: []byte("evil")}}, Labels: map[string]string{"t": uniq("evil")}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	put := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+b+`","size":1}]}`))
	for name, data := range tarEntries(t, tb.Bytes()) {
		if name != "manifest.json" && name != "repositories" {
			put("evil/"+name, data)
		}
	}
	ea := tarEntries(t, ta.Bytes())
	var m []struct{ Config string }
	if err := json.Unmarshal(ea["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	aConfig = ea[m[0].Config]
	for _, name := range entryNames(t, ta.Bytes()) {
		put(name, ea[name])
	}
	tw.Close()
	return out.Bytes(), a, b, aConfig
}

// TestFilterSaveTarDropsOCILayout: only the image manifest.json names (its
// config checked) reaches the engine; index.json and oci-layout, by which
// the containerd image store would load another image under the signed ID,
// are dropped, and a link or directory under their names is refused.
func TestFilterSaveTarDropsOCILayout(t *testing.T) {
	in, a, _, aConfig := hostileLayout(t)
	var out bytes.Buffer
	facts, err := engine.FilterSaveTar(&out, bytes.NewReader(in), func(cfg string) error {
		if cfg != a {
			return &engine.ImageMismatchError{Want: a, Got: cfg}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := tarEntries(t, out.Bytes())
	for _, name := range []string{"index.json", "oci-layout"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s passed to the engine", name)
		}
	}
	if facts.ConfigDigest != a || !bytes.Equal(facts.Config, aConfig) {
		t.Fatalf("facts: config %s (%d bytes), want %s", facts.ConfigDigest, len(facts.Config), a)
	}

	for _, meta := range []string{"index.json", "oci-layout", "manifest.json", "./index.json"} {
		for _, typ := range []byte{tar.TypeSymlink, tar.TypeLink, tar.TypeDir} {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			tw.WriteHeader(&tar.Header{Name: meta, Linkname: "evil/manifest.json", Mode: 0o755, Typeflag: typ})
			tr := tar.NewReader(bytes.NewReader(in))
			for {
				hdr, err := tr.Next()
				if err != nil {
					break
				}
				tw.WriteHeader(hdr)
				io.Copy(tw, tr)
			}
			tw.Close()
			if _, err := engine.FilterSaveTar(io.Discard, &b, nil); err == nil {
				t.Errorf("%s as type %q accepted", meta, typ)
			}
		}
	}
}

// TestFilterSaveTarLaterEntryReplacesConfig: an entry after the checked
// config under its name (a link, or one too big to hash) replaces it where
// the engine unpacks, so the load is refused.
func TestFilterSaveTarLaterEntryReplacesConfig(t *testing.T) {
	var in bytes.Buffer
	id, err := enginetest.WriteImage(&in, enginetest.Image{Files: []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}})
	if err != nil {
		t.Fatal(err)
	}
	entries := tarEntries(t, in.Bytes())
	var m []struct{ Config string }
	if err := json.Unmarshal(entries["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	for name, extra := range map[string]*tar.Header{
		"link":  {Name: m[0].Config, Linkname: "evil.json", Typeflag: tar.TypeSymlink, Mode: 0o644},
		"big":   {Name: m[0].Config, Size: 2 << 20, Typeflag: tar.TypeReg, Mode: 0o644},
		"small": {Name: "./" + m[0].Config, Size: 2, Typeflag: tar.TypeReg, Mode: 0o644},
	} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tr := tar.NewReader(bytes.NewReader(in.Bytes()))
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			tw.WriteHeader(hdr)
			io.Copy(tw, tr)
		}
		tw.WriteHeader(extra)
		tw.Write(bytes.Repeat([]byte(" "), int(extra.Size)))
		tw.Close()
		_, err := engine.FilterSaveTar(io.Discard, &b, func(cfg string) error {
			if cfg != id {
				return &engine.ImageMismatchError{Want: id, Got: cfg}
			}
			return nil
		})
		if err == nil {
			t.Errorf("%s entry over the config accepted", name)
		}
	}
}

func TestCheckDiffIDs(t *testing.T) {
	cfg := []byte(`{"rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}`)
	if err := engine.CheckDiffIDs(cfg, []string{"sha256:aa", "sha256:bb"}); err != nil {
		t.Fatal(err)
	}
	for _, layers := range [][]string{{"sha256:aa"}, {"sha256:bb", "sha256:aa"}, {"sha256:aa", "sha256:bb", "sha256:cc"}, nil} {
		if err := engine.CheckDiffIDs(cfg, layers); !errors.Is(err, engine.ErrLayersMismatch) {
			t.Errorf("layers %v: %v", layers, err)
		}
	}
	if err := engine.CheckDiffIDs(nil, nil); !errors.Is(err, engine.ErrLayersMismatch) {
		t.Errorf("no config: %v", err)
	}
}

func TestFilterSaveTarCheckCutsStream(t *testing.T) {
	var in bytes.Buffer
	id, _ := enginetest.WriteImage(&in, enginetest.Image{Files: []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}})
	var out bytes.Buffer
	refuse := errors.New("refused")
	var seen string
	_, err := engine.FilterSaveTar(&out, &in, func(cfg string) error { seen = cfg; return refuse })
	if !errors.Is(err, refuse) || seen != id {
		t.Fatalf("err = %v, check saw %s; want refused after seeing %s", err, seen, id)
	}
	if bytes.HasSuffix(out.Bytes(), make([]byte, 1024)) {
		t.Fatal("end-of-archive written although check failed")
	}
}

func TestFilterSaveTarRejects(t *testing.T) {
	mk := func(entries ...string) []byte { // name, content pairs
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for i := 0; i < len(entries); i += 2 {
			tw.WriteHeader(&tar.Header{Name: entries[i], Mode: 0o644, Size: int64(len(entries[i+1])), Typeflag: tar.TypeReg})
			tw.Write([]byte(entries[i+1]))
		}
		tw.Close()
		return b.Bytes()
	}
	for name, data := range map[string][]byte{
		"empty":          {},
		"not a tar":      []byte(strings.Repeat("x", 2000)),
		"no manifest":    mk("a.json", "{}"),
		"bad manifest":   mk("manifest.json", "{"),
		"two images":     mk("c", "{}", "manifest.json", `[{"Config":"c"},{"Config":"c"}]`),
		"missing config": mk("manifest.json", `[{"Config":"c"}]`),
		"null entry":     mk("manifest.json", `[null]`),
		"big manifest":   mk("manifest.json", strings.Repeat(" ", 2<<20)),
	} {
		if _, err := engine.FilterSaveTar(io.Discard, bytes.NewReader(data), nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestReadLoadOutput(t *testing.T) {
	for _, tc := range []struct {
		file   string
		json   bool
		ids    []string
		names  []string
		errSub string
	}{
		{"load-classic.jsonl", true, []string{"sha256:d1633c2fa35f20dfdad105d59e677686c222bc80ed470426f8996ab5b5e11f02"}, nil, ""},
		{"load-tagged.jsonl", true, nil, []string{"pullship-test:x"}, ""},
		{"load-error.jsonl", true, nil, nil, "invalid diffID for layer 0"},
		{"load-plain.txt", false, []string{"sha256:d1633c2fa35f20dfdad105d59e677686c222bc80ed470426f8996ab5b5e11f02"}, nil, ""},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		ids, names, err := engine.ReadLoadOutput(data, tc.json)
		if tc.errSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("%s: err = %v, want %q", tc.file, err, tc.errSub)
			}
			continue
		}
		if err != nil || !equal(ids, tc.ids) || !equal(names, tc.names) {
			t.Errorf("%s: ids %q names %q err %v; want %q %q", tc.file, ids, names, err, tc.ids, tc.names)
		}
	}
	// Only image IDs are taken as IDs: they are inspected and removed.
	for _, bad := range []string{"ubuntu:22.04", "sha256:abc", "\xff", "sha256:" + strings.Repeat("A", 64)} {
		data := []byte(`{"stream":"Loaded image ID: ` + bad + `\n"}`)
		if ids, _, err := engine.ReadLoadOutput(data, true); err == nil || !strings.Contains(err.Error(), "malformed image ID") || len(ids) != 0 {
			t.Errorf("ID %q: ids %q err %v", bad, ids, err)
		}
	}
}

func TestReadImportOutput(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "import.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := engine.ReadImportOutput(data); err != nil || id != "sha256:ef8f11d4d8fed95887bb4dc697f31a8a68f0939d43d800240d8a14ca74180484" {
		t.Errorf("import.jsonl: id %q err %v", id, err)
	}
	data, err = os.ReadFile(filepath.Join("testdata", "import-error.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := engine.ReadImportOutput(data); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("import-error.jsonl: id %q err %v, want the engine's error", id, err)
	}
	for _, bad := range []string{``, `{"status":"sha256:abc"}`, `{"status":"Downloading"}`, `{"status":`, `[]`} {
		if id, err := engine.ReadImportOutput([]byte(bad)); err == nil {
			t.Errorf("%q: id %q accepted", bad, id)
		}
	}
}

func FuzzReadImportOutput(f *testing.F) {
	for _, n := range []string{"import.jsonl", "import-error.jsonl"} {
		if data, err := os.ReadFile(filepath.Join("testdata", n)); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := engine.ReadImportOutput(data)
		if err == nil && (!engine.ValidImageID(id) || !bytes.Contains(data, []byte(id[len("sha256:"):]))) {
			t.Fatalf("id %q taken from %q", id, data)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzReadLoadOutput(f *testing.F) {
	for _, n := range []string{"load-classic.jsonl", "load-tagged.jsonl", "load-error.jsonl", "load-plain.txt"} {
		if data, err := os.ReadFile(filepath.Join("testdata", n)); err == nil {
			f.Add(data, strings.HasSuffix(n, ".jsonl"))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		ids, _, err := engine.ReadLoadOutput(data, isJSON)
		for _, id := range ids {
			if !engine.ValidImageID(id) {
				t.Fatalf("malformed id %q taken (err %v)", id, err)
			}
			if err == nil && !isJSON && !bytes.Contains(data, []byte(id)) {
				t.Fatalf("id %q not in input", id)
			}
		}
	})
}

func FuzzFilterSaveTar(f *testing.F) {
	var b bytes.Buffer
	enginetest.WriteImage(&b, enginetest.Image{Files: []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}, RepoTags: []string{"x:y"}})
	f.Add(b.Bytes())
	b.Reset()
	enginetest.WriteImage(&b, enginetest.Image{Files: []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}, RandomSize: 100, PlanFirst: true})
	f.Add(b.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var out, staged bytes.Buffer
		facts, err := engine.FilterSaveTar(&out, bytes.NewReader(data), nil)
		// Loading layers ahead changes nothing of the verdict, and the
		// engine gets every entry once: in the image's stream or taken.
		sfacts, taken, serr := engine.FilterSaveTarStaged(&staged, bytes.NewReader(data), nil)
		if (err == nil) != (serr == nil) {
			t.Fatalf("filter: %v; staged: %v", err, serr)
		}
		if err != nil {
			return
		}
		if sfacts.ConfigDigest != facts.ConfigDigest {
			t.Fatalf("config digest %s, staged %s", facts.ConfigDigest, sfacts.ConfigDigest)
		}
		rest := entryNames(t, staged.Bytes())
		for _, n := range entryNames(t, out.Bytes()) {
			if len(rest) > 0 && rest[0] == n {
				rest = rest[1:]
			} else if len(taken) > 0 && path.Clean(n) == taken[0] {
				taken = taken[1:]
			} else {
				t.Fatalf("entry %q of the filtered stream neither in the staged stream nor taken (left: %q, %q)", n, rest, taken)
			}
		}
		if len(rest) > 0 || len(taken) > 0 {
			t.Fatalf("staged stream has %q, taken %q beyond the filtered stream", rest, taken)
		}
		if !engine.ValidImageID(facts.ConfigDigest) {
			t.Fatalf("accepted with config digest %q", facts.ConfigDigest)
		}
		tr := tar.NewReader(&out)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if hdr.Name == "repositories" {
				t.Fatal("repositories passed")
			}
			if strings.TrimPrefix(hdr.Name, "./") == "manifest.json" {
				var m []map[string]json.RawMessage
				data, _ := io.ReadAll(tr)
				if json.Unmarshal(data, &m) != nil {
					t.Fatalf("filtered manifest.json unparsable: %s", data)
				}
				for _, e := range m {
					if _, ok := e["RepoTags"]; ok {
						t.Fatal("RepoTags passed")
					}
				}
			}
		}
	})
}

// entrySizes returns the sizes of a tarball's entries by clean path.
func entrySizes(t *testing.T, data []byte) map[string]int64 {
	t.Helper()
	sizes := map[string]int64{}
	for name, b := range tarEntries(t, data) {
		sizes[path.Clean(name)] = int64(len(b))
	}
	return sizes
}

// entryNames lists a tarball's entry names in order.
func entryNames(t *testing.T, data []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("filtered stream: %v", err)
		}
		names = append(names, hdr.Name)
	}
}

// TestFilterSaveTarStaged: layers that come after manifest.json and the
// config go to the sink, in order, but for the last one, which the image's
// own load takes (a single layer goes to the sink), or with the sizes known,
// but for the small ones that end the image; in docker save's own order
// (config and manifest last) none does.
func TestFilterSaveTarStaged(t *testing.T) {
	a := []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}
	// Four layers: a (2 KiB as a tarball), 4 KiB of random data, a, a.
	four := enginetest.Image{Files: a, RandomSize: 4096, More: [][]enginetest.File{a, a}}
	for i, tc := range []struct {
		img       enginetest.Image
		sizes     bool
		partBytes int64 // 0: as loads have it
		want      []string
	}{
		{enginetest.Image{Files: a}, false, 0, []string{"layer0/layer.tar"}},
		{enginetest.Image{Files: a, RandomSize: 4096}, false, 0, []string{"layer0/layer.tar"}},
		{enginetest.Image{Files: a, RandomSize: 4096, More: [][]enginetest.File{a}}, false, 0, []string{"layer0/layer.tar", "layer1/layer.tar"}},
		{four, false, 0, []string{"layer0/layer.tar", "layer1/layer.tar", "layer2/layer.tar"}},
		{enginetest.Image{Files: a}, true, 0, []string{"layer0/layer.tar"}},
		// Less than partBytes after each of the three last: they stay.
		{four, true, 0, []string{"layer0/layer.tar"}},
		// 4 KiB after the random layer: it goes ahead, the last two stay.
		{four, true, 4096, []string{"layer0/layer.tar", "layer1/layer.tar"}},
	} {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if tc.partBytes != 0 {
				engine.SetPartBytes(t, tc.partBytes)
			}
			for _, planFirst := range []bool{true, false} {
				img := tc.img
				img.PlanFirst = planFirst
				var in, out bytes.Buffer
				id, err := enginetest.WriteImage(&in, img)
				if err != nil {
					t.Fatal(err)
				}
				var sizes map[string]int64
				if tc.sizes {
					sizes = entrySizes(t, in.Bytes())
				}
				facts, taken, err := engine.FilterSaveTarStaged(&out, bytes.NewReader(in.Bytes()), sizes)
				if err != nil || facts.ConfigDigest != id {
					t.Fatalf("plan first %v: %v, digest %s want %s", planFirst, err, facts.ConfigDigest, id)
				}
				want := tc.want
				if !planFirst {
					want = nil
				}
				if !slices.Equal(taken, want) {
					t.Errorf("%d layers, plan first %v: taken %q, want %q", len(facts.Layers), planFirst, taken, want)
				}
				passed := entryNames(t, out.Bytes())
				for _, n := range facts.Layers {
					if slices.Contains(taken, n) == slices.Contains(passed, n) {
						t.Errorf("%d layers, plan first %v: %s taken %v, passed on %v: want exactly one", len(facts.Layers), planFirst, n, slices.Contains(taken, n), slices.Contains(passed, n))
					}
				}
			}
		})
	}
}

// withoutEntries returns the tarball data without the entries named drop.
func withoutEntries(t *testing.T, data []byte, drop ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	tr := tar.NewReader(bytes.NewReader(data))
	tw := tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(drop, hdr.Name) {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestFilterSaveTarHeld: the layers the plan says the engine holds reach
// neither the sink nor the image's own load, whether the tarball carries
// them or leaves them out; the layers after them are staged as ever.
func TestFilterSaveTarHeld(t *testing.T) {
	a := []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}
	four := enginetest.Image{Files: a, RandomSize: 4096, More: [][]enginetest.File{a, a}, PlanFirst: true}
	var in bytes.Buffer
	id, err := enginetest.WriteImage(&in, four)
	if err != nil {
		t.Fatal(err)
	}
	layers := []string{"layer0/layer.tar", "layer1/layer.tar", "layer2/layer.tar", "layer3/layer.tar"}
	for _, tc := range []struct {
		held        int
		taken, kept []string // to the sink, to the image's own load
	}{
		{0, layers[:3], layers[3:]},
		{1, layers[1:3], layers[3:]},
		{2, layers[2:3], layers[3:]},
		{3, nil, layers[3:]},
		{4, nil, nil},
	} {
		for _, leftOut := range []bool{false, true} {
			data := in.Bytes()
			if leftOut {
				data = withoutEntries(t, data, layers[:tc.held]...)
			}
			var out bytes.Buffer
			facts, taken, err := engine.FilterSaveTarHeld(&out, bytes.NewReader(data), tc.held, nil)
			if err != nil || facts.ConfigDigest != id {
				t.Fatalf("held %d, left out %v: %v, digest %s want %s", tc.held, leftOut, err, facts.ConfigDigest, id)
			}
			var kept []string
			for _, n := range entryNames(t, out.Bytes()) {
				if strings.HasSuffix(n, "/layer.tar") {
					kept = append(kept, n)
				}
			}
			if !slices.Equal(taken, tc.taken) || !slices.Equal(kept, tc.kept) {
				t.Errorf("held %d, left out %v: taken %q and kept %q, want %q and %q", tc.held, leftOut, taken, kept, tc.taken, tc.kept)
			}
		}
	}
}

// writeSkipping copies the tarball data to w entry by entry, as
// chunks.RebuildSkipping writes an image, leaving out the files skip names;
// it returns their names.
func writeSkipping(w io.Writer, data []byte, skip func(string) bool) ([]string, error) {
	var skipped []string
	tr := tar.NewReader(bytes.NewReader(data))
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return skipped, tw.Close()
		}
		if err != nil {
			return skipped, err
		}
		if hdr.Typeflag == tar.TypeReg && skip(hdr.Name) {
			skipped = append(skipped, hdr.Name)
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return skipped, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return skipped, err
		}
	}
}

// TestFilterSaveTarOmit: the writer of the stream learns, before it writes
// the first layer, which layers the plan says the engine holds, and leaves
// them out; every time, although it writes while the filter plans.
func TestFilterSaveTarOmit(t *testing.T) {
	a := []enginetest.File{{Name: "a", Mode: 0o644, Data: []byte("a")}}
	var in bytes.Buffer
	if _, err := enginetest.WriteImage(&in, enginetest.Image{Files: a, RandomSize: 4096, More: [][]enginetest.File{a, a}, PlanFirst: true}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		for _, held := range []int{0, 2, 4} {
			omit := engine.NewOmit()
			pr, pw := io.Pipe()
			skipped := make(chan []string, 1)
			go func() {
				s, err := writeSkipping(pw, in.Bytes(), omit.Skip)
				pw.CloseWithError(err)
				skipped <- s
			}()
			_, _, err := engine.FilterSaveTarHeld(io.Discard, pr, held, omit)
			pr.CloseWithError(errors.New("filter returned"))
			if err != nil {
				t.Fatalf("round %d, held %d: %v", i, held, err)
			}
			want := []string{"layer0/layer.tar", "layer1/layer.tar", "layer2/layer.tar", "layer3/layer.tar"}[:held]
			if got := <-skipped; !slices.Equal(got, want) {
				t.Fatalf("round %d, held %d: the writer left out %q, want %q", i, held, got, want)
			}
		}
	}
	// Without a config the filter plans nothing; the writer waits for
	// nothing and leaves nothing out.
	omit := engine.NewOmit()
	if omit.Skip("layer0/layer.tar") || (*engine.Omit)(nil).Skip("x") {
		t.Fatal("Skip before any plan")
	}
}

// TestChainIDs: a layer's chain ID is its diff ID on top of the chain
// below it, as the engine's layer store names it; a malformed diff ID
// gives none.
func TestChainIDs(t *testing.T) {
	a, b := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	// sha256("<chain of a> <b>"), then sha256("<chain of a, b> <a>").
	want := []string{a, "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c",
		"sha256:406364a4bd8d39df8107071d4494fa73814420337124657ec5999b072e5d3352"}
	got := engine.ChainIDs([]string{a, b, a})
	if !slices.Equal(got, want) {
		t.Fatalf("chain IDs %q, want %q", got, want)
	}
	if again := engine.ChainIDs([]string{a, b}); !slices.Equal(again, got[:2]) {
		t.Fatalf("chain IDs of a prefix %q, want %q", again, got[:2])
	}
	if got := engine.ChainIDs([]string{a, "sha256:b"}); got != nil {
		t.Fatalf("chain IDs of a malformed diff ID: %q", got)
	}
}

// TestLoadImageIgnoresOCILayout: on the real engine, a tarball that names
// the signed image in manifest.json and another one in index.json loads the
// signed image (its config digest and diff_ids checked) and nothing else.
func TestLoadImageIgnoresOCILayout(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	in, a, b, _ := hostileLayout(t)
	cleanupImage(t, a)
	cleanupImage(t, b)
	if err := d.LoadImage(ctx, bytes.NewReader(in), a, engine.LoadOptions{}); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	if ok, err := d.HasImage(ctx, a); err != nil || !ok {
		t.Fatalf("signed image after load: %v %v", ok, err)
	}
	if ok, _ := d.HasImage(ctx, b); ok {
		t.Fatal("the image index.json names was loaded")
	}
	if err := d.LoadImage(ctx, bytes.NewReader(in), b, engine.LoadOptions{}); err == nil {
		t.Fatal("the index.json image loaded under its own ID")
	}
}
