package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pullship/pullship/agent/engine/enginetest"
)

// buildPingsrv compiles the engine tests' static pingsrv program (the
// container's entrypoint and health check) into dir and returns its bytes.
func buildPingsrv(moduleRoot, dir string) ([]byte, error) {
	out := filepath.Join(dir, "pingsrv")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(moduleRoot, "agent", "engine", "enginetest", "testdata", "pingsrv")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build pingsrv: %w\n%s", err, b)
	}
	return os.ReadFile(out)
}

// withEntrypoint copies the legacy `docker save` tarball src to dst with one
// more layer holding bin as /pingsrv, the image's entrypoint, and tag as its
// only tag. The big layers are copied byte for byte (streamed), so the image
// is src's plus a few MiB. It returns the new image ID.
func withEntrypoint(src, dst string, bin []byte, tag string) (string, error) {
	layer, err := layerTar([]layerFile{{name: "pingsrv", mode: 0o755, data: bin}})
	if err != nil {
		return "", err
	}
	return addLayer(src, dst, layer, tag, "/pingsrv", []string{"/pingsrv"})
}

type layerFile struct {
	name string
	mode int64
	data []byte
}

// layerTar is a layer tar holding files.
func layerTar(files []layerFile) ([]byte, error) {
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	for _, f := range files {
		if err := lw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := lw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := lw.Close(); err != nil {
		return nil, err
	}
	return layer.Bytes(), nil
}

// addLayer copies the legacy `docker save` tarball src to dst with layer on
// top (what, in the history) and tag as its only tag; a non-nil entrypoint
// replaces the image's entrypoint and command. The layers of src are copied
// byte for byte (streamed). It returns the new image ID.
func addLayer(src, dst string, layer []byte, tag, what string, entrypoint []string) (string, error) {
	manifest, config, err := readMeta(src)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", src, err)
	}
	diffID := sha256.Sum256(layer)
	layerDir := "pullship-bench-" + hex.EncodeToString(diffID[:8])

	var cfg map[string]any
	if err := json.Unmarshal(config.data, &cfg); err != nil {
		return "", fmt.Errorf("image %s: config: %w", src, err)
	}
	rootfs, _ := cfg["rootfs"].(map[string]any)
	diffIDs, _ := rootfs["diff_ids"].([]any)
	if rootfs == nil || len(diffIDs) == 0 {
		return "", fmt.Errorf("image %s: config has no rootfs.diff_ids", src)
	}
	rootfs["diff_ids"] = append(diffIDs, "sha256:"+hex.EncodeToString(diffID[:]))
	if h, ok := cfg["history"].([]any); ok {
		cfg["history"] = append(h, map[string]any{"created": "2024-01-01T00:00:00Z", "created_by": "pullship agentbench: " + what})
	}
	if entrypoint != nil {
		c, _ := cfg["config"].(map[string]any)
		if c == nil {
			c = map[string]any{}
			cfg["config"] = c
		}
		c["Entrypoint"] = entrypoint
		c["Cmd"] = nil
	}
	newCfg, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	cfgSum := sha256.Sum256(newCfg)
	cfgHex := hex.EncodeToString(cfgSum[:])
	layers := append(manifest.Layers, layerDir+"/layer.tar")
	newManifest, _ := json.Marshal([]map[string]any{{"Config": cfgHex + ".json", "RepoTags": []string{tag}, "Layers": layers}})
	name, version := splitTag(tag)
	repos, _ := json.Marshal(map[string]map[string]string{name: {version: layerDir}})

	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	tr := tar.NewReader(in)
	tw := tar.NewWriter(out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("image %s: %w", src, err)
		}
		if h.Name == "manifest.json" || h.Name == "repositories" || h.Name == config.name {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return "", err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return "", fmt.Errorf("image %s: %s: %w", src, h.Name, err)
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{layerDir + "/VERSION", []byte("1.0")},
		{layerDir + "/json", []byte(`{"id":"` + layerDir + `"}`)},
		{layerDir + "/layer.tar", layer},
		{cfgHex + ".json", newCfg},
		{"manifest.json", newManifest},
		{"repositories", repos},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		if _, err := tw.Write(f.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return "sha256:" + cfgHex, out.Close()
}

type saveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

type namedData struct {
	name string
	data []byte
}

// readMeta returns the single image of a legacy docker-save tarball's
// manifest.json and its config file.
func readMeta(path string) (saveManifest, namedData, error) {
	f, err := os.Open(path)
	if err != nil {
		return saveManifest{}, namedData{}, err
	}
	defer f.Close()
	small := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return saveManifest{}, namedData{}, err
		}
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 && !strings.Contains(h.Name, "/") {
			data, err := io.ReadAll(tr)
			if err != nil {
				return saveManifest{}, namedData{}, err
			}
			small[h.Name] = data
		}
	}
	var ms []saveManifest
	if err := json.Unmarshal(small["manifest.json"], &ms); err != nil || len(ms) != 1 {
		return saveManifest{}, namedData{}, fmt.Errorf("want a legacy docker save tarball with one image in manifest.json (%v)", err)
	}
	cfg, ok := small[ms[0].Config]
	if !ok {
		return saveManifest{}, namedData{}, fmt.Errorf("config %s missing", ms[0].Config)
	}
	return ms[0], namedData{ms[0].Config, cfg}, nil
}

func splitTag(ref string) (string, string) {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == ':' {
			return ref[:i], ref[i+1:]
		}
	}
	return ref, "latest"
}

// layersAbsent fails when an image in the engine already holds the base
// image's layers: docker load and the agent would then skip them, and the
// bench would measure nothing (an image of an earlier run, tagged by hand).
func layersAbsent(src string) error {
	_, config, err := readMeta(src)
	if err != nil {
		return fmt.Errorf("image %s: %w", src, err)
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(config.data, &cfg); err != nil || len(cfg.RootFS.DiffIDs) == 0 {
		return fmt.Errorf("image %s: config has no rootfs.diff_ids (%v)", src, err)
	}
	out, err := exec.Command("docker", "image", "ls", "-aq", "--no-trunc").Output()
	if err != nil {
		return fmt.Errorf("docker image ls: %w", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return nil
	}
	out, err = exec.Command("docker", append([]string{"image", "inspect", "--format", "{{.ID}}{{range .RootFS.Layers}} {{.}}{{end}}"}, ids...)...).Output()
	if err != nil {
		return fmt.Errorf("docker image inspect: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == cfg.RootFS.DiffIDs[0] {
			return fmt.Errorf("the engine already holds the bench image's first layer (image %s): remove that image (docker rmi -f %s), or the loads would skip the layer", f[0], f[0])
		}
	}
	return nil
}

// writeLayered writes a legacy `docker save` tarball of an image shaped
// like a packaged service: a base layer of 48 MiB (twelve 4 MiB files), then
// nine small layers of five files of 20-400 KiB each (scripts, config, a
// release's pieces). File contents are half pseudo-random, half zeros
// (compressible as binaries are), from seed; the bench holds them in memory
// (57 MiB at most).
func writeLayered(dst string, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 1))
	layer := func(dir string, sizes []int) []enginetest.File {
		files := []enginetest.File{{Name: dir, Dir: true, Mode: 0o755}}
		for i, n := range sizes {
			data := make([]byte, n)
			for j := 0; j+8 <= n/2; j += 8 {
				binary.LittleEndian.PutUint64(data[j:], rng.Uint64())
			}
			files = append(files, enginetest.File{Name: fmt.Sprintf("%s/f%d", dir, i), Mode: 0o644, Data: data})
		}
		return files
	}
	base := make([]int, 12)
	for i := range base {
		base[i] = 4 << 20
	}
	img := enginetest.Image{Files: layer("base", base)}
	for k := range 9 {
		sizes := make([]int, 5)
		for i := range sizes {
			sizes[i] = 20<<10 + rng.IntN(380<<10)
		}
		img.More = append(img.More, layer(fmt.Sprintf("l%d", k), sizes))
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := enginetest.WriteImage(f, img); err != nil {
		return err
	}
	return f.Close()
}
