package enginetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine"
)

// File is one entry of a test image layer: a regular file, or a directory
// (Dir) or a symbolic link (Link) when set.
type File struct {
	Name string // path inside the image, without leading "/"
	Mode int64
	Data []byte
	Dir  bool
	Link string // symlink target
}

// Image describes a test image written by WriteImage in `docker save` format.
type Image struct {
	Files      []File   // the first layer
	RandomSize int64    // > 0: a second layer holding "random", this many pseudo-random bytes
	Seed       uint64   // seeds the random layer
	More       [][]File // further layers, after the random one
	RepoTags   []string // written to manifest.json and "repositories", like docker save
	Entrypoint []string
	Env        []string          // the config's environment (nil: PATH=/)
	Labels     map[string]string // image config labels: vary them to get distinct images
	// BadDiffID makes the config list a wrong diff_id for the first layer, so
	// that the engine fails the load after it has started answering.
	BadDiffID bool
	// PlanFirst writes manifest.json and the config before the layers (the
	// order pullship's bundler gives an image), instead of docker save's.
	PlanFirst bool
}

// WriteImage streams img to w as a `docker save` tarball (classic layout:
// layer tars, then the config, then manifest.json) and returns the image ID,
// the config's digest. Memory use does not depend on RandomSize.
func WriteImage(w io.Writer, img Image) (string, error) {
	tw := tar.NewWriter(w)
	type layer struct {
		size  int64
		write func(io.Writer) error
	}
	var layers []layer
	filesLayer := func(files []File) layer {
		var size int64 = 1024
		for _, f := range files {
			size += 512 + pad(int64(len(f.Data)))
		}
		return layer{size, func(lw io.Writer) error {
			t := tar.NewWriter(lw)
			for _, f := range files {
				hdr := &tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
				switch {
				case f.Dir:
					hdr.Typeflag, hdr.Name, hdr.Size = tar.TypeDir, f.Name+"/", 0
				case f.Link != "":
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, f.Link, 0
				}
				if err := t.WriteHeader(hdr); err != nil {
					return err
				}
				if _, err := t.Write(f.Data); err != nil {
					return err
				}
			}
			return t.Close()
		}}
	}
	if len(img.Files) > 0 {
		layers = append(layers, filesLayer(img.Files))
	}
	if img.RandomSize > 0 {
		layers = append(layers, layer{512 + pad(img.RandomSize) + 1024, func(lw io.Writer) error {
			t := tar.NewWriter(lw)
			hdr := &tar.Header{Name: "random", Mode: 0o644, Size: img.RandomSize, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
			if err := t.WriteHeader(hdr); err != nil {
				return err
			}
			var seed [32]byte
			seed[0], seed[1] = byte(img.Seed), byte(img.Seed>>8)
			if _, err := io.Copy(t, io.LimitReader(rand.NewChaCha8(seed), img.RandomSize)); err != nil {
				return err
			}
			return t.Close()
		}})
	}
	for _, files := range img.More {
		layers = append(layers, filesLayer(files))
	}
	var diffIDs, layerPaths []string
	writeLayers := func(w io.Writer) error {
		diffIDs, layerPaths = nil, nil
		for i, l := range layers {
			p := fmt.Sprintf("layer%d/layer.tar", i)
			if w != io.Discard {
				if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: l.size, Typeflag: tar.TypeReg}); err != nil {
					return err
				}
			}
			h := sha256.New()
			cw := &countWriter{w: io.MultiWriter(w, h)}
			if err := l.write(cw); err != nil {
				return fmt.Errorf("write test layer %d: %w", i, err)
			}
			if cw.n != l.size {
				return fmt.Errorf("write test layer %d: %d bytes, computed %d", i, cw.n, l.size)
			}
			diffIDs = append(diffIDs, digest(h))
			layerPaths = append(layerPaths, p)
		}
		return nil
	}
	layersTo := io.Writer(tw)
	if img.PlanFirst {
		layersTo = io.Discard // learn the diff_ids; the layers come after the plan
	}
	if err := writeLayers(layersTo); err != nil {
		return "", err
	}
	if img.BadDiffID && len(diffIDs) > 0 {
		diffIDs[0] = "sha256:" + hex.EncodeToString(make([]byte, 32))
	}
	env := img.Env
	if env == nil {
		env = []string{"PATH=/"}
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": img.Entrypoint, "Env": env, "Labels": img.Labels},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(cfg)
	id := "sha256:" + hex.EncodeToString(sum[:])
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": img.RepoTags, "Layers": layerPaths}})
	if err != nil {
		return "", err
	}
	if img.PlanFirst {
		if err := writeFile(tw, "manifest.json", manifest); err != nil {
			return "", err
		}
	}
	if err := writeFile(tw, cfgName, cfg); err != nil {
		return "", err
	}
	if !img.PlanFirst {
		if err := writeFile(tw, "manifest.json", manifest); err != nil {
			return "", err
		}
	}
	if img.PlanFirst {
		if err := writeLayers(tw); err != nil {
			return "", err
		}
	}
	if len(img.RepoTags) > 0 {
		repos := map[string]map[string]string{}
		for _, t := range img.RepoTags {
			repo, tag := splitTag(t)
			if repos[repo] == nil {
				repos[repo] = map[string]string{}
			}
			repos[repo][tag] = "layer0"
		}
		data, _ := json.Marshal(repos)
		if err := writeFile(tw, "repositories", data); err != nil {
			return "", err
		}
	}
	return id, tw.Close()
}

func splitTag(ref string) (string, string) {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == ':' {
			return ref[:i], ref[i+1:]
		}
	}
	return ref, "latest"
}

func writeFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func pad(n int64) int64 { return (n + 511) &^ 511 }

func digest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Pingsrv builds the static test program of testdata/pingsrv (see its doc)
// and returns its bytes.
func Pingsrv(tb testing.TB) []byte {
	tb.Helper()
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "testdata", "pingsrv")
	out := filepath.Join(tb.TempDir(), "pingsrv")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build pingsrv: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// PingImage returns a runnable test image: pingsrv as /pingsrv and entrypoint,
// made distinct by the label "pullship.test"=variant.
func PingImage(bin []byte, variant string) Image {
	return Image{
		Files:      []File{{Name: "pingsrv", Mode: 0o755, Data: bin}},
		Entrypoint: []string{"/pingsrv"},
		Labels:     map[string]string{"pullship.test": variant},
	}
}

// Load writes img tagged tag and loads it into the local engine with
// `docker load` (no registry, no build), and returns tag.
func Load(tb testing.TB, tag string, img Image) string {
	tb.Helper()
	img.RepoTags = []string{tag}
	pr, pw := io.Pipe()
	go func() {
		_, err := WriteImage(pw, img)
		pw.CloseWithError(err)
	}()
	cmd := exec.Command("docker", "load", "-q")
	cmd.Stdin = pr
	out, err := cmd.CombinedOutput()
	pr.Close()
	if err != nil {
		tb.Fatalf("docker load %s: %v\n%s", tag, err, out)
	}
	return tag
}

// RequireDocker skips the test when no Docker engine answers `docker info`,
// or fails it when the environment sets CI=true.
func RequireDocker(tb testing.TB) {
	tb.Helper()
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("docker info failed with CI=true: %v\n%s", err, out)
		}
		tb.Skipf("no Docker engine (docker info: %v); set CI=true to make this a failure", err)
	}
}

// PingsrvExec is a [Fake]'s ExecFunc for containers of pingsrv images: it
// answers as testdata/pingsrv does inside a real container ("ping" prints
// pong, "exit N" exits with N, "spew N" prints N bytes, "sleep" runs until
// the exec times out; anything else exits 2). argv[0] is the program,
// already found in the image by the fake.
func PingsrvExec(ctx context.Context, name string, argv []string) (engine.ExecResult, error) {
	if len(argv) < 2 {
		// pingsrv without a subcommand waits as the container's process.
		<-ctx.Done()
		return engine.ExecResult{}, ctx.Err()
	}
	n := 0
	if len(argv) > 2 {
		n, _ = strconv.Atoi(argv[2])
	}
	switch argv[1] {
	case "ping":
		return engine.ExecResult{Output: []byte("pong\n")}, nil
	case "exit":
		return engine.ExecResult{Output: fmt.Appendf(nil, "exiting with %d\n", n), ExitCode: n}, nil
	case "spew":
		return engine.ExecResult{Output: bytes.Repeat([]byte("x"), n)}, nil
	case "sleep":
		select {
		case <-ctx.Done():
			return engine.ExecResult{}, ctx.Err()
		case <-time.After(time.Minute):
			return engine.ExecResult{}, nil
		}
	}
	return engine.ExecResult{Output: fmt.Appendf(nil, "unknown command %s\n", argv[1]), ExitCode: 2}, nil
}
