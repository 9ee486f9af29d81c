// Package imagetest builds small, valid container image tarballs in pure Go,
// so that tests need no registry and no Dockerfile: `docker save` output in
// the legacy layout (docker ≤ 24, what the engine here writes), the
// OCI-style layout docker 25+ writes, and plain OCI image layouts. Layers
// are built in temporary files, so big generated images cost disk, not
// memory. Everything is deterministic: the same Image gives the same bytes
// and the same image ID.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"
)

// Layout is the tarball's structure.
type Layout int

const (
	// Legacy is `docker save` of docker ≤ 24: <id>/layer.tar, <id>/json,
	// <id>/VERSION, <config hex>.json, manifest.json, repositories.
	Legacy Layout = iota
	// OCIDockerSave is `docker save` of docker 25+: an OCI image layout
	// (blobs/sha256, index.json, oci-layout) plus manifest.json.
	OCIDockerSave
	// OCI is a plain OCI image layout, without manifest.json.
	OCI
)

// File is one regular file of a layer: either Data, or Size bytes read from
// Content (called once per build) for files too big to hold.
type File struct {
	Path    string // relative, slash-separated
	Mode    int64  // permission bits; 0 means 0644
	Data    []byte
	Size    int64
	Content func() io.Reader
}

// Image describes an image to build.
type Image struct {
	Layers     [][]File
	Entrypoint []string
	Cmd        []string
	RepoTags   []string // e.g. "pullship-test/hello:1"; in OCI layouts the first one is the image name annotation
	Layout     Layout
	Gzip       bool // gzip layers (OCI and OCIDockerSave layouts only)
	// ModTime is the mtime of every entry of the layers (zero: a fixed
	// date), as a rebuild from a fresh checkout changes them all.
	ModTime time.Time
}

// Built is what Write produced.
type Built struct {
	ID      string   // image ID: "sha256:<hex>" of the config
	DiffIDs []string // per layer, "sha256:<hex>" of the uncompressed tar
}

// WriteFile writes img as a tarball at path.
func WriteFile(path string, img Image) (Built, error) {
	f, err := os.Create(path)
	if err != nil {
		return Built{}, err
	}
	b, err := Write(f, img)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return b, err
}

type blob struct {
	f      *os.File
	size   int64
	digest string // sha256:<hex>
}

// Write writes img to w as a tarball.
func Write(w io.Writer, img Image) (Built, error) {
	var b Built
	var layers, raw []blob
	defer func() {
		for _, l := range append(layers, raw...) {
			l.f.Close()
			os.Remove(l.f.Name())
		}
	}()
	for i, files := range img.Layers {
		l, err := tempBlob(func(w io.Writer) error { return writeLayer(w, files, img.ModTime) })
		if err != nil {
			return b, fmt.Errorf("layer %d: %w", i, err)
		}
		raw = append(raw, l)
		b.DiffIDs = append(b.DiffIDs, l.digest)
		if img.Gzip && img.Layout != Legacy {
			z, err := tempBlob(func(w io.Writer) error {
				zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
				if _, err := l.f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				if _, err := io.Copy(zw, l.f); err != nil {
					return err
				}
				return zw.Close()
			})
			if err != nil {
				return b, fmt.Errorf("layer %d: %w", i, err)
			}
			layers = append(layers, z)
		} else {
			layers = append(layers, l)
		}
	}
	history := make([]map[string]string, len(img.Layers))
	for i := range history {
		history[i] = map[string]string{"created": "2024-01-01T00:00:00Z", "created_by": "imagetest"}
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      "2024-01-01T00:00:00Z",
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": b.DiffIDs},
		"history": history,
	})
	cfgHex := sha256Hex(config)
	b.ID = "sha256:" + cfgHex

	tw := tar.NewWriter(w)
	var paths []string
	switch img.Layout {
	case Legacy:
		for i, l := range layers {
			id := sha256Hex([]byte(fmt.Sprintf("%s %d", l.digest, i)))
			paths = append(paths, id+"/layer.tar")
			if err := writeDir(tw, id); err != nil {
				return b, err
			}
			if err := writeBytes(tw, id+"/VERSION", []byte("1.0")); err != nil {
				return b, err
			}
			if err := writeBytes(tw, id+"/json", []byte(`{"id":"`+id+`"}`)); err != nil {
				return b, err
			}
			if err := writeBlob(tw, id+"/layer.tar", l); err != nil {
				return b, err
			}
		}
		if err := writeBytes(tw, cfgHex+".json", config); err != nil {
			return b, err
		}
		if err := writeManifestJSON(tw, cfgHex+".json", img.RepoTags, paths); err != nil {
			return b, err
		}
		if len(img.RepoTags) > 0 {
			repos := map[string]map[string]string{}
			for _, t := range img.RepoTags {
				i := lastColon(t)
				if repos[t[:i]] == nil {
					repos[t[:i]] = map[string]string{}
				}
				repos[t[:i]][t[i+1:]] = sha256Hex([]byte(fmt.Sprintf("%s %d", layers[len(layers)-1].digest, len(layers)-1)))
			}
			data, _ := json.Marshal(repos)
			if err := writeBytes(tw, "repositories", data); err != nil {
				return b, err
			}
		}
	case OCI, OCIDockerSave:
		layerType := "application/vnd.oci.image.layer.v1.tar"
		if img.Gzip {
			layerType += "+gzip"
		}
		var descs []map[string]any
		for _, d := range []string{"blobs", "blobs/sha256"} {
			if err := writeDir(tw, d); err != nil {
				return b, err
			}
		}
		for _, l := range layers {
			p := "blobs/sha256/" + l.digest[len("sha256:"):]
			paths = append(paths, p)
			descs = append(descs, map[string]any{"mediaType": layerType, "digest": l.digest, "size": l.size})
			if err := writeBlob(tw, p, l); err != nil {
				return b, err
			}
		}
		if err := writeBytes(tw, "blobs/sha256/"+cfgHex, config); err != nil {
			return b, err
		}
		manifest, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.manifest.v1+json",
			"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": b.ID, "size": len(config)},
			"layers":        descs,
		})
		mHex := sha256Hex(manifest)
		if err := writeBytes(tw, "blobs/sha256/"+mHex, manifest); err != nil {
			return b, err
		}
		desc := map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mHex, "size": len(manifest)}
		if len(img.RepoTags) > 0 {
			desc["annotations"] = map[string]string{"io.containerd.image.name": "docker.io/" + img.RepoTags[0]}
		}
		index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{desc}})
		if err := writeBytes(tw, "index.json", index); err != nil {
			return b, err
		}
		if img.Layout == OCIDockerSave {
			if err := writeManifestJSON(tw, "blobs/sha256/"+cfgHex, img.RepoTags, paths); err != nil {
				return b, err
			}
		}
		if err := writeBytes(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return b, err
		}
	default:
		return b, fmt.Errorf("unknown layout %d", img.Layout)
	}
	return b, tw.Close()
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0 && s[i] != '/'; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return len(s)
}

func writeManifestJSON(tw *tar.Writer, config string, tags, layers []string) error {
	data, _ := json.Marshal([]map[string]any{{"Config": config, "RepoTags": tags, "Layers": layers}})
	return writeBytes(tw, "manifest.json", data)
}

var mtime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func writeDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: mtime})
}

func writeBytes(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func writeBlob(tw *tar.Writer, name string, b blob) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: b.size, ModTime: mtime}); err != nil {
		return err
	}
	if _, err := b.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(tw, b.f)
	return err
}

// tempBlob writes a blob with fill into a temporary file and digests it.
func tempBlob(fill func(io.Writer) error) (blob, error) {
	f, err := os.CreateTemp("", "imagetest-*")
	if err != nil {
		return blob{}, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fill(cw); err != nil {
		f.Close()
		os.Remove(f.Name())
		return blob{}, err
	}
	return blob{f: f, size: cw.n, digest: "sha256:" + hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeLayer writes a layer tar: parent directories first, then files.
func writeLayer(w io.Writer, files []File, mt time.Time) error {
	if mt.IsZero() {
		mt = mtime
	}
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var ds []string
	for d := range dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	for _, d := range ds {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mt}); err != nil {
			return err
		}
	}
	for _, f := range files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		var r io.Reader
		size := f.Size
		if f.Data != nil || f.Content == nil {
			r, size = bytes.NewReader(f.Data), int64(len(f.Data))
		} else {
			r = io.LimitReader(f.Content(), f.Size)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Path, Mode: mode, Size: size, ModTime: mt}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
	}
	return tw.Close()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Random returns n deterministic pseudo-random (incompressible) bytes
// generated from seed.
func Random(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// Nibbles returns n deterministic pseudo-random bytes below 16, generated
// from seed: data zstd compresses about 2:1 and whose zstd frames deflate
// still shrinks a little, so a check that chunk blobs are not compressed a
// second time can fail on it (on Random data deflate stores them anyway).
func Nibbles(seed uint64, n int64) io.Reader {
	return nibbles{Random(seed, n)}
}

type nibbles struct{ r io.Reader }

func (x nibbles) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	for i := range p[:n] {
		p[i] &= 0x0f
	}
	return n, err
}

// GoBinary builds the Go program src (one file, package main, standard
// library only) as a static linux binary for the host architecture.
func GoBinary(t testing.TB, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module imagetestbin\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "bin", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TarEntry returns the content of the entry called name of the tar stream
// data (a rebuilt `docker save` stream, a layer).
func TarEntry(data []byte, name string) ([]byte, error) {
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no %s in the stream: %w", name, err)
		}
		if hdr.Name == name {
			return io.ReadAll(tr)
		}
	}
}
