package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/chunks"

	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

// smallImage has a layer of ~3 MiB so that it spans several chunks.
func smallImage(layout imagetest.Layout, gz bool) imagetest.Image {
	return imagetest.Image{
		Layers: [][]imagetest.File{
			{{Path: "etc/hello.conf", Data: []byte("greeting = hello\n")}},
			{{Path: "opt/big.bin", Size: 3 << 20, Content: func() io.Reader { return imagetest.Random(1, 3<<20) }},
				{Path: "opt/run", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")}},
		},
		Cmd:      []string{"/opt/run"},
		RepoTags: []string{"pullship-test/small:1"},
		Layout:   layout,
		Gzip:     gz,
	}
}

func writeImage(t testing.TB, img imagetest.Image) (string, imagetest.Built) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	b, err := imagetest.WriteFile(p, img)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// storeChunks scans src and writes every chunk into a directory.
func storeChunks(t testing.TB, src Source) (*schema.ImageIndex, chunks.Dir) {
	t.Helper()
	ctx := context.Background()
	r, err := Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	idx, err := r.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := chunks.Dir(t.TempDir())
	if err := r.Chunks(ctx, nil, dir.Put); err != nil {
		t.Fatal(err)
	}
	return idx, dir
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		layout imagetest.Layout
		gz     bool
	}{
		{"legacy", imagetest.Legacy, false},
		{"oci-docker-save", imagetest.OCIDockerSave, false},
		{"oci-layout", imagetest.OCI, false},
		{"oci-layout-gzip", imagetest.OCI, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, built := writeImage(t, smallImage(tc.layout, tc.gz))
			idx, src := storeChunks(t, TarFile(p))
			if idx.Digest != built.ID {
				t.Fatalf("digest %s, built %s", idx.Digest, built.ID)
			}
			// The plan first: manifest.json, then (OCI) index.json, then the
			// config, so that an agent knows the layers before they arrive.
			var plan []string
			for _, e := range idx.Entries[:3] {
				plan = append(plan, e.Path)
			}
			hexID := strings.TrimPrefix(idx.Digest, "sha256:")
			if plan[0] != "manifest.json" || !slices.Contains(plan[1:], hexID+".json") && !slices.Contains(plan[1:], "blobs/sha256/"+hexID) {
				t.Fatalf("index starts with %q, want manifest.json and the config", plan)
			}
			if idx.Name != "small" || !reflect.DeepEqual(idx.RepoTags, []string{"pullship-test/small:1"}) {
				t.Fatalf("name %q tags %v", idx.Name, idx.RepoTags)
			}
			nchunks := 0
			for _, e := range idx.Entries {
				nchunks += len(e.Chunks)
			}
			if nchunks < 4 {
				t.Fatalf("only %d chunks: the 3 MiB file was not split", nchunks)
			}
			enc, err := idx.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := schema.ParseImageIndex("images/small.toml", enc); err != nil {
				t.Fatal(err)
			}

			out := filepath.Join(t.TempDir(), "rebuilt.tar")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			var last, total int64
			err = chunks.Rebuild(context.Background(), idx, src, f, func(d, tot int64) { last, total = d, tot })
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if last != total || total != idx.TotalSize() {
				t.Fatalf("progress ended at %d of %d, size %d", last, total, idx.TotalSize())
			}
			idx2, err := Scan(context.Background(), TarFile(out))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(idx, idx2) {
				t.Fatalf("rebuilt stream scans differently")
			}
			// Uncompressed layers are split; what the rebuilt stream holds at
			// each layer's path hashes to the source's diff_id.
			rebuilt, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			diffIDs := map[string]bool{}
			for _, d := range built.DiffIDs {
				diffIDs[strings.TrimPrefix(d, "sha256:")] = true
			}
			found := map[string]bool{}
			for _, e := range idx.Entries {
				switch {
				case e.Split() && tc.gz:
					t.Errorf("gzip layer %s split", e.Path)
				case e.Type == schema.EntryFile && diffIDs[e.SHA256]:
					if !e.Split() {
						t.Errorf("layer %s not split", e.Path)
					}
					if got := sha256Hex(tarFile(t, rebuilt, e.Path)); got != e.SHA256 {
						t.Errorf("rebuilt layer %s: sha256 %s, diff_id %s", e.Path, got, e.SHA256)
					}
					found[e.SHA256] = true
				}
			}
			if !tc.gz && len(found) != len(diffIDs) {
				t.Fatalf("rebuilt stream holds %d of the %d diff_ids", len(found), len(diffIDs))
			}
			// Rebuild is deterministic.
			var b1, b2 bytes.Buffer
			chunks.Rebuild(context.Background(), idx, src, &b1, nil)
			chunks.Rebuild(context.Background(), idx2, src, &b2, nil)
			if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
				t.Fatal("two rebuilds differ")
			}
		})
	}
}

// tarFile returns the content of the entry name of the tar stream data.
func tarFile(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	b, err := imagetest.TarEntry(data, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDirectorySource(t *testing.T) {
	p, built := writeImage(t, smallImage(imagetest.OCI, true))
	dir := t.TempDir()
	extract(t, p, dir)
	idx, err := Scan(context.Background(), Directory(dir))
	if err != nil {
		t.Fatal(err)
	}
	if idx.Digest != built.ID {
		t.Fatalf("digest %s, want %s", idx.Digest, built.ID)
	}
	src, err := ParseSource(dir)
	if err != nil || src.String() != dir {
		t.Fatalf("ParseSource(dir) = %v, %v", src, err)
	}
}

func extract(t *testing.T, tarPath, dir string) {
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		data, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRebuildCorruptChunk(t *testing.T) {
	p, _ := writeImage(t, smallImage(imagetest.Legacy, false))
	idx, src := storeChunks(t, TarFile(p))
	var victim schema.Chunk
	var victimPath string
	for _, e := range idx.Entries {
		if strings.HasSuffix(e.Path, "layer.tar") && len(e.Chunks) > 1 {
			victim, victimPath = e.Chunks[1], e.Path
		}
	}
	file := filepath.Join(string(src), victim.SHA256)
	orig, _ := os.ReadFile(file)

	check := func(data []byte, want error) {
		t.Helper()
		os.WriteFile(file, data, 0o644)
		var out countingDiscard
		err := chunks.Rebuild(context.Background(), idx, src, &out, nil)
		var ce *chunks.Error
		if !errors.As(err, &ce) || !errors.Is(err, want) || ce.Chunk != victim || ce.Path != victimPath {
			t.Fatalf("got %v, want %v on chunk %s", err, want, victim.SHA256)
		}
		wantMsg := "chunk " + victim.SHA256[:12] + " of " + victimPath + ": "
		if !strings.HasPrefix(err.Error(), wantMsg) {
			t.Fatalf("message %q, want prefix %q", err, wantMsg)
		}
	}
	flipped := bytes.Clone(orig)
	flipped[len(flipped)/2] ^= 1
	check(flipped, chunks.ErrDigest)
	check(append(bytes.Clone(orig), 'x'), chunks.ErrLong)
	check(orig[:len(orig)-1], chunks.ErrShort)
	os.Remove(file)
	check(nil, chunks.ErrShort)
	os.Remove(file)
	if err := chunks.Rebuild(context.Background(), idx, src, io.Discard, nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing chunk: %v", err)
	}
}

type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// TestBadTars feeds malformed archives to Scan.
func TestBadTars(t *testing.T) {
	good, _ := writeImage(t, smallImage(imagetest.Legacy, false))
	data, _ := os.ReadFile(good)

	tarOf := func(hdrs ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hdrs {
			tw.WriteHeader(h)
			tw.Write(make([]byte, h.Size))
		}
		tw.Close()
		return b.Bytes()
	}
	// rewrite copies the good image with one entry changed.
	rewrite := func(change func(h *tar.Header, data []byte) (*tar.Header, []byte)) []byte {
		tr := tar.NewReader(bytes.NewReader(data))
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			d, _ := io.ReadAll(tr)
			h, d = change(h, d)
			h.Size = int64(len(d))
			tw.WriteHeader(h)
			tw.Write(d)
		}
		tw.Close()
		return b.Bytes()
	}
	cases := map[string]struct {
		data []byte
		want string
	}{
		"truncated":    {data[:len(data)/2], "truncated tar archive"},
		"truncated2":   {data[:len(data)-2048], "truncated tar archive"},
		"garbage":      {bytes.Repeat([]byte("not a tar "), 100), "malformed tar archive"},
		"empty":        {nil, "truncated tar archive after 0 entries"},
		"dotdot":       {tarOf(&tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}), `contains a ".." element`},
		"absolute":     {tarOf(&tar.Header{Name: "/etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}), `is absolute`},
		"hardlink":     {tarOf(&tar.Header{Name: "a", Typeflag: tar.TypeLink, Linkname: "b"}), `type '1' not allowed`},
		"device":       {tarOf(&tar.Header{Name: "a", Typeflag: tar.TypeChar}), `type '3' not allowed`},
		"setuid":       {tarOf(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o4755}), `setuid`},
		"no manifest":  {tarOf(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3}), `neither manifest.json`},
		"link escapes": {tarOf(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeSymlink, Linkname: "../../etc/passwd"}), `not in the image`},
		"bad layer": {rewrite(func(h *tar.Header, d []byte) (*tar.Header, []byte) {
			if strings.HasSuffix(h.Name, "layer.tar") && len(d) > 1<<20 {
				d[100000] ^= 1
			}
			return h, d
		}), "does not match the config's diff_id"},
		"bad manifest": {rewrite(func(h *tar.Header, d []byte) (*tar.Header, []byte) {
			if h.Name == "manifest.json" {
				d = []byte(`[{"Config":"nope.json"}]`)
			}
			return h, d
		}), "config: nope.json: not in the image"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.tar")
			os.WriteFile(p, tc.data, 0o644)
			_, err := Scan(context.Background(), TarFile(p))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestPolynomialIrreducible(t *testing.T) {
	if !Pol.Irreducible() {
		t.Fatal("Pol is not irreducible")
	}
}

// newBytes sums, over the split layers of idx, the bytes of the chunks
// (content and header stream) whose blobs old does not list; other sums
// those of the other files.
func newBytes(old, idx *schema.ImageIndex) (layer, content, headers, other int64, contentChunks int) {
	have := map[string]bool{}
	for _, e := range old.Entries {
		for _, c := range e.StreamChunks() {
			have[c.Blob] = true
		}
	}
	for _, e := range idx.Entries {
		if !e.Split() {
			for _, c := range e.Chunks {
				if !have[c.Blob] {
					other += c.Size
					have[c.Blob] = true
				}
			}
			continue
		}
		layer += e.Size
		for _, c := range e.Headers {
			if !have[c.Blob] {
				headers += c.Size
				have[c.Blob] = true
			}
		}
		for _, c := range e.Chunks {
			if !have[c.Blob] {
				content += c.Size
				contentChunks++
				have[c.Blob] = true
			}
		}
	}
	return layer, content, headers, other, contentChunks
}

// dedupImage is a ~20 MiB layer of two large files and a small one between.
func dedupImage(conf string, mtime time.Time) imagetest.Image {
	return imagetest.Image{ModTime: mtime, Layers: [][]imagetest.File{{
		{Path: "usr/lib/a.bin", Size: 10 << 20, Content: func() io.Reader { return imagetest.Random(7, 10<<20) }},
		{Path: "etc/app.conf", Data: []byte(conf)},
		{Path: "usr/lib/b.bin", Size: 10 << 20, Content: func() io.Reader { return imagetest.Random(8, 10<<20) }},
	}}}
}

// TestDedup changes one small file in a ~20 MiB layer: the new image
// shares all its contents but the chunk holding the change (and the next
// one, when the change moves a cut) with the old one, and its header
// stream is a few KiB.
func TestDedup(t *testing.T) {
	p1, _ := writeImage(t, dedupImage("version = 1\n", time.Time{}))
	p2, _ := writeImage(t, dedupImage("version = 2, with a longer line\n", time.Time{}))
	idx1, err := Scan(context.Background(), TarFile(p1))
	if err != nil {
		t.Fatal(err)
	}
	idx2, err := Scan(context.Background(), TarFile(p2))
	if err != nil {
		t.Fatal(err)
	}
	layer, content, headers, other, n := newBytes(idx1, idx2)
	t.Logf("layer %d bytes, %d new in %d content chunks, %d new header stream bytes", layer, content, n, headers)
	if layer < 20<<20 || n < 1 || n > 2 || content > 2*MaxChunk || headers > 64<<10 {
		t.Fatalf("layer %d bytes: %d new bytes in %d content chunks, %d header stream bytes; want 1 or 2 chunks and < 64 KiB of headers", layer, content, n, headers)
	}

	// The second pass delivers exactly the new chunks.
	r, err := Open(context.Background(), TarFile(p2))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := map[string]bool{}
	for _, e := range idx1.Entries {
		for _, c := range e.StreamChunks() {
			old[c.Blob] = true
		}
	}
	var sent int64
	err = r.Chunks(context.Background(), func(b string) bool { return !old[b] }, func(c schema.Chunk, data []byte) error {
		sent += int64(len(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := content + headers + other; sent != want {
		t.Fatalf("Chunks sent %d bytes, %d are new", sent, want)
	}
}

// TestSplitTimestamps rebuilds the layer with the same files and every
// mtime new, as CI does from a fresh checkout: no content chunk is new,
// only the header stream, a small fraction of the layer; the layer still
// rebuilds byte for byte.
func TestSplitTimestamps(t *testing.T) {
	p1, _ := writeImage(t, dedupImage("version = 1\n", time.Time{}))
	p2, b2 := writeImage(t, dedupImage("version = 1\n", time.Date(2026, 12, 6, 21, 30, 0, 0, time.UTC)))
	idx1, err := Scan(context.Background(), TarFile(p1))
	if err != nil {
		t.Fatal(err)
	}
	idx2, src := storeChunks(t, TarFile(p2))
	if idx1.Digest == idx2.Digest {
		t.Fatal("the new mtimes did not make another image")
	}
	layer, content, headers, _, n := newBytes(idx1, idx2)
	t.Logf("layer %d bytes: %d new content bytes, %d new header stream bytes (%.3f%%)", layer, content, headers, 100*float64(headers)/float64(layer))
	if content != 0 || n != 0 || headers == 0 || headers*100 > layer {
		t.Fatalf("layer %d bytes: %d new content bytes in %d chunks, %d header stream bytes; want only header bytes, < 1%%", layer, content, n, headers)
	}
	var out bytes.Buffer
	if err := chunks.Rebuild(context.Background(), idx2, src, &out, nil); err != nil {
		t.Fatal(err)
	}
	for _, e := range idx2.Entries {
		if e.Split() {
			if got := "sha256:" + sha256Hex(tarFile(t, out.Bytes(), e.Path)); got != b2.DiffIDs[0] {
				t.Fatalf("rebuilt layer %s hashes to %s, diff_id %s", e.Path, got, b2.DiffIDs[0])
			}
		}
	}
}

// TestScanKnow: chunks an earlier index lists keep their blobs (not encoded
// again: a blob id no encoder would give is kept as it is); the others are
// encoded, spooled and served to the push.
func TestScanKnow(t *testing.T) {
	img := imagetest.Image{Layers: [][]imagetest.File{{
		{Path: "usr/lib/a.bin", Size: 6 << 20, Content: func() io.Reader { return imagetest.Random(9, 6<<20) }},
	}}}
	p, _ := writeImage(t, img)
	idx1, err := Scan(context.Background(), TarFile(p))
	if err != nil {
		t.Fatal(err)
	}
	var known schema.Chunk
	for _, e := range idx1.Entries {
		if strings.HasSuffix(e.Path, "layer.tar") && len(e.Chunks) > 2 {
			known = e.Chunks[1]
		}
	}
	if known.SHA256 == "" {
		t.Fatal("no layer of three chunks or more")
	}
	known.Blob = strings.Repeat("ab", 20)
	r, err := Open(context.Background(), TarFile(p))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Know([]schema.Chunk{known})
	idx2, err := r.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range idx2.Entries {
		for j, c := range e.Chunks {
			want := idx1.Entries[i].Chunks[j]
			if c.SHA256 == known.SHA256 {
				want = known
			}
			if c != want {
				t.Fatalf("chunk %s of %s: %+v, want %+v", c.SHA256, e.Path, c, want)
			}
			if c.Blob == known.Blob {
				continue
			}
			rc, err := r.OpenChunk(c.Blob)
			if err != nil {
				t.Fatal(err)
			}
			blob, _ := io.ReadAll(rc)
			rc.Close()
			if int64(len(blob)) != c.BlobSize {
				t.Fatalf("blob %s: %d bytes, the index says %d", c.Blob, len(blob), c.BlobSize)
			}
		}
	}
}

func BenchmarkScan(b *testing.B) {
	const size = 64 << 20
	p, _ := writeImage(b, imagetest.Image{Layers: [][]imagetest.File{{
		{Path: "big.bin", Size: size, Content: func() io.Reader { return imagetest.Random(3, size) }},
	}}})
	st, _ := os.Stat(p)
	b.SetBytes(st.Size())
	b.ResetTimer()
	for range b.N {
		if _, err := Scan(context.Background(), TarFile(p)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestScanLarge measures Scan on a big tarball: set PULLSHIP_SCAN_TAR to a
// path (generated as a ~300 MiB image if missing) and run under
// /usr/bin/time -v for peak RSS.
func TestScanLarge(t *testing.T) {
	p := os.Getenv("PULLSHIP_SCAN_TAR")
	if p == "" {
		t.Skip("set PULLSHIP_SCAN_TAR to measure Scan on a big image")
	}
	if _, err := os.Stat(p); err != nil {
		var layers [][]imagetest.File
		for i := range 3 {
			seed := uint64(100 + i)
			layers = append(layers, []imagetest.File{{Path: "data/blob.bin", Size: 100 << 20,
				Content: func() io.Reader { return imagetest.Random(seed, 100<<20) }}})
		}
		if _, err := imagetest.WriteFile(p, imagetest.Image{Layers: layers}); err != nil {
			t.Fatal(err)
		}
		return
	}
	st, _ := os.Stat(p)
	start := time.Now()
	idx, err := Scan(context.Background(), TarFile(p))
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("scanned %d bytes in %v: %.0f MB/s, %d entries", st.Size(), d, float64(st.Size())/d.Seconds()/1e6, len(idx.Entries))
}

// FuzzScan feeds arbitrary bytes to Scan as a tarball: it must return an
// error or a valid index, never panic or hang.
func FuzzScan(f *testing.F) {
	tiny := imagetest.Image{Layers: [][]imagetest.File{{{Path: "a", Data: []byte("hi")}}}, RepoTags: []string{"x/y:1"}}
	for _, l := range []imagetest.Layout{imagetest.Legacy, imagetest.OCIDockerSave, imagetest.OCI} {
		var b bytes.Buffer
		tiny.Layout = l
		if _, err := imagetest.Write(&b, tiny); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "f.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		idx, err := Scan(context.Background(), TarFile(p))
		if err != nil {
			return
		}
		if err := idx.Validate(); err != nil {
			t.Fatalf("Scan returned an invalid index: %v", err)
		}
	})
}
