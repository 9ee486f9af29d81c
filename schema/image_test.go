package schema

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// goldenIndex parses the golden index file name, which is in canonical
// form: encoding it again is byte-exact.
func goldenIndex(t *testing.T, name string) *ImageIndex {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "image", name))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := ParseImageIndex("images/hello.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := idx.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, data) {
		t.Fatalf("Encode differs from the golden file %s:\n%s", name, enc)
	}
	return idx
}

func TestParseImageIndexValid(t *testing.T) {
	idx := goldenIndex(t, "valid.toml")
	if idx.Name != "hello" || len(idx.Entries) != 4 || len(idx.Entries[1].Chunks) != 2 || idx.Entries[1].Mode != 0o644 {
		t.Fatalf("decoded %+v", idx)
	}
	if got := idx.TotalSize(); got != 1572864 {
		t.Fatalf("TotalSize = %d", got)
	}
	if got := idx.StoredSize(); got != 1572864 {
		t.Fatalf("StoredSize = %d, want the chunks' sizes (raw blobs)", got)
	}
	// Files only: not the directory, not the symlink.
	want := map[string]int64{"0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9/layer.tar": 1572864, "manifest.json": 0}
	if got := idx.FileSizes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("FileSizes = %v, want %v", got, want)
	}
}

// TestParseImageIndexZstd: an index of zstd-encoded chunks keeps each
// blob's size.
func TestParseImageIndexZstd(t *testing.T) {
	idx := goldenIndex(t, "valid-zstd.toml")
	c := idx.Entries[1].Chunks
	if idx.ChunkEncoding != ChunkZstd || !c[0].Encoded() || c[0].StoredSize() != 301234 || c[1].StoredSize() != 524805 {
		t.Fatalf("decoded %+v", idx)
	}
	if got := idx.StoredSize(); got != 301234+524805 {
		t.Fatalf("StoredSize = %d", got)
	}
}

// TestParseImageIndexSplit: a version 2 index keeps a split layer's header
// chunks, counts them in the stored size and lists them first.
func TestParseImageIndexSplit(t *testing.T) {
	idx := goldenIndex(t, "valid-split.toml")
	e := idx.Entries[1]
	if idx.Version != 2 || !e.Split() || e.HeaderSize() != 5123 || e.ContentSize() != 1572864 {
		t.Fatalf("decoded %+v", idx)
	}
	if got := idx.StoredSize(); got != 412+301234+524805 {
		t.Fatalf("StoredSize = %d", got)
	}
	if sc := e.StreamChunks(); len(sc) != 3 || sc[0] != e.Headers[0] || sc[1] != e.Chunks[0] {
		t.Fatalf("StreamChunks = %+v", sc)
	}
	// An index of the previous version stays readable; version 1 is the
	// version of an index without one.
	old := goldenIndex(t, "valid-zstd.toml")
	data, _ := os.ReadFile("testdata/image/valid-zstd.toml")
	v1, err := ParseImageIndex("x.toml", bytes.Replace(data, []byte("format = \"docker-save\"\n"), []byte("format = \"docker-save\"\nversion = 1\n"), 1))
	if err != nil || !reflect.DeepEqual(v1, old) {
		t.Fatalf("version = 1: %v", err)
	}
	// A newer index is refused as such, with the sentinel callers test.
	data, _ = os.ReadFile("testdata/image/bad-version.toml")
	if _, err := ParseImageIndex("x.toml", data); !errors.Is(err, ErrIndexVersion) || !errors.Is(err, ErrRefused) {
		t.Fatalf("version 3: %v, want ErrIndexVersion", err)
	}
}

func TestParseImageIndexInvalid(t *testing.T) {
	want := map[string]string{
		"bad-abs.toml":              `path "/manifest.json" is absolute`,
		"bad-backslash.toml":        `contains a backslash`,
		"bad-bigchunk.toml":         `size 9437185 not in 1..8388608`,
		"bad-blobsize.toml":         `chunk 1: blob_size 525825 not in 1..525824 (zstd chunks)`,
		"bad-blobsize-missing.toml": `chunk 0: blob_size 0 not in 1..1050624 (zstd chunks)`,
		"bad-blobsize-raw.toml":     `chunk 0: blob_size without a chunk_encoding`,
		"bad-encoding.toml":         `chunk_encoding "gzip" unsupported`,
		"bad-chunk-hex.toml":        `chunk 0: want sha256 of 64 and blob of 40 lowercase hex`,
		"bad-digest.toml":           `digest "sha512:`,
		"bad-dotdot.toml":           `path "../manifest.json" contains a ".." element`,
		"bad-dup.toml":              `entry "manifest.json": duplicate path`,
		"bad-format.toml":           `format "oci", this pullship reads "docker-save": upgrade it`,
		"bad-version.toml":          `the index is version 3, this pullship reads versions 1 to 2: upgrade it`,
		"bad-split-noversion.toml":  `headers (a split layer) need version = 2`,
		"bad-split-size.toml":       `a split layer of 1577984 bytes cannot hold 1572864 bytes of contents and a header stream of 4000`,
		"bad-split-nosum.toml":      `a split layer needs its sha256`,
		"bad-hardlink.toml":         `type "hardlink" not allowed`,
		"bad-link-escape.toml":      `points outside the image`,
		"bad-setuid.toml":           `mode 04755: only permission bits`,
		"bad-sum.toml":              `chunk sizes sum to 1572863, file size is 1572864`,
		"bad-type.toml":             `type "fifo" not allowed`,
		"bad-under-symlink.toml":    `is a symlink`,
		"bad-unknown-key.toml":      `images/x.toml:5: unknown key "compression"`,
	}
	files, _ := filepath.Glob("testdata/image/bad-*.toml")
	if len(files) != len(want) {
		t.Fatalf("%d bad files, %d expectations", len(files), len(want))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseImageIndex("images/x.toml", data)
		w := want[filepath.Base(f)]
		if err == nil || w == "" || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: got %v, want error containing %q", f, err, w)
		}
	}
}

func TestImageIndexLimits(t *testing.T) {
	base := func() *ImageIndex {
		return &ImageIndex{Name: "x", Digest: "sha256:" + strings.Repeat("a", 64), Format: ImageFormat,
			Entries: []ImageEntry{{Path: "a", Type: EntryFile, Mode: 0o644}}}
	}
	idx := base()
	if err := idx.Validate(); err != nil {
		t.Fatal(err)
	}
	// Total size: many entries each claiming a 8 GiB file made of max chunks.
	idx = base()
	c := Chunk{SHA256: strings.Repeat("b", 64), Size: MaxImageChunk, Blob: strings.Repeat("c", 40)}
	chunks := make([]Chunk, 1024)
	for i := range chunks {
		chunks[i] = c
	}
	idx.Entries = nil
	for i := 0; i < 9; i++ {
		idx.Entries = append(idx.Entries, ImageEntry{Path: string(rune('a' + i)), Type: EntryFile, Size: 1024 * MaxImageChunk, Chunks: chunks})
	}
	if err := idx.Validate(); err == nil || !strings.Contains(err.Error(), "files total more than 68719476736 bytes") {
		t.Fatalf("total size: %v", err)
	}
	idx = base()
	idx.Entries = make([]ImageEntry, MaxImageEntries+1)
	if err := idx.Validate(); err == nil || !strings.Contains(err.Error(), "more than 65536") {
		t.Fatalf("entry count: %v", err)
	}
	for _, p := range []string{"a/./b", "a//b", "a/", "./a", "a\x00b", "a/../b", ".."} {
		if CheckImagePath(p) == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

func TestImageIndexEncodeEscapes(t *testing.T) {
	idx := &ImageIndex{Name: "x", Digest: "sha256:" + strings.Repeat("a", 64), Format: ImageFormat,
		RepoTags: []string{`we"ird:1`},
		Entries:  []ImageEntry{{Path: `dir with "quote"/ü`, Type: EntryDir, Mode: 0o700}}}
	enc, err := idx.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseImageIndex("x.toml", enc)
	if err != nil {
		t.Fatalf("%v\n%s", err, enc)
	}
	if !reflect.DeepEqual(back, idx) {
		t.Fatalf("round trip: %+v != %+v", back, idx)
	}
}

func FuzzParseImageIndex(f *testing.F) {
	files, _ := filepath.Glob("testdata/image/*.toml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := ParseImageIndex("f.toml", data)
		if err != nil {
			return
		}
		enc, err := idx.Encode()
		if err != nil {
			t.Fatalf("valid index does not encode: %v", err)
		}
		back, err := ParseImageIndex("f.toml", enc)
		if err != nil {
			t.Fatalf("encoded index does not parse: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(back, idx) {
			t.Fatalf("round trip changed the index")
		}
		enc2, _ := back.Encode()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode is not deterministic")
		}
	})
}
