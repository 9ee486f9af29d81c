package main

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

// Scenario 6, image updates: an agent that runs version 1 of an image of
// a ~100 MiB layer of ~600 files applies, one release after the other,
//
//	(a) one file of that layer changed,
//	(b) the same layer rebuilt with every mtime new (same contents),
//	(c) a new 20 MiB layer on top of (b),
//
// and for each the bench sets the bytes git-daemon sent the agent (the
// proxy's count) against what the release stored as new (the zstd blobs of
// the chunks the previous indexes do not list), the layer's size or the
// new layer's gzip size, and the time from the agent's start to its "image
// loaded" line against `docker load` of the new image's tarball on an
// engine holding the previous one.

// updateFiles are the big layer's files: sizes 16-336 KiB from a fixed
// seed, contents compressible about 2:1 (imagetest.Nibbles); changed is
// the index of a file whose content takes another seed.
func updateFiles(changed int) []imagetest.File {
	rng := rand.New(rand.NewPCG(19, 1))
	var files []imagetest.File
	var total int64
	for i := 0; total < 100<<20; i++ {
		n := int64(16<<10 + rng.IntN(320<<10))
		seed := uint64(1000 + i)
		if i == changed {
			seed += 1 << 32
		}
		files = append(files, imagetest.File{Path: fmt.Sprintf("opt/app/lib/m%04d.so", i), Size: n,
			Content: func() io.Reader { return imagetest.Nibbles(seed, n) }})
		total += n
	}
	return files
}

// updateStep is one release of scenario 6.
type updateStep struct {
	name   string // row label
	img    imagetest.Image
	target string // what bytes fetched are held against
}

func (b *bench) updates(w string, bin []byte, tag string, release func(string) (measure, error),
	once func(int) (measure, map[string]traffic, []conn, error), dockerLoad func(string) (measure, time.Duration, error)) error {
	mtime2 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	newLayer := []imagetest.File{{Path: "srv/data/extra.bin", Size: 20 << 20, Content: func() io.Reader { return imagetest.Nibbles(77, 20<<20) }}}
	steps := []updateStep{
		{"v1", imagetest.Image{Layers: [][]imagetest.File{updateFiles(-1)}, RepoTags: []string{tag}}, ""},
		{"(a) one file changed in the layer", imagetest.Image{Layers: [][]imagetest.File{updateFiles(300)}, RepoTags: []string{tag}}, "a"},
		{"(b) layer rebuilt, every mtime new", imagetest.Image{Layers: [][]imagetest.File{updateFiles(300)}, RepoTags: []string{tag}, ModTime: mtime2}, "b"},
		{"(c) new 20 MiB layer on top", imagetest.Image{Layers: [][]imagetest.File{updateFiles(300), newLayer}, RepoTags: []string{tag}, ModTime: mtime2}, "c"},
	}
	bare := filepath.Join(w, "srv", "releases.git")
	if err := b.fresh(filepath.Join(w, "state")); err != nil {
		return err
	}
	held := map[string]bool{} // blobs of the images released so far
	var ids []string
	defer func() {
		// The images before the last (the agent keeps one for a rollback);
		// cleanup removes the last.
		for _, id := range ids[:max(len(ids)-1, 0)] {
			exec.Command("docker", "rmi", "-f", id).Run()
		}
	}()
	for i, st := range steps {
		src := filepath.Join(w, fmt.Sprintf("update-%d-src.tar", i))
		img := filepath.Join(w, fmt.Sprintf("update-%d.tar", i))
		if _, err := imagetest.WriteFile(src, st.img); err != nil {
			return err
		}
		id, err := withEntrypoint(src, img, bin, tag)
		if err != nil {
			return err
		}
		os.Remove(src)
		ids = append(ids, id)
		if _, err := release(img); err != nil {
			return err
		}
		idx, err := releasedIndex(bare)
		if err != nil {
			return err
		}
		var newStored, newRaw int64
		for _, e := range idx.Entries {
			for _, c := range e.StreamChunks() {
				if !held[c.Blob] {
					held[c.Blob] = true
					newStored += c.StoredSize()
					newRaw += c.Size
				}
			}
		}
		// The baseline on the same engine state the agent will find: the
		// previous image loaded, the new one not.
		b.imageID = id
		var base measure
		if i > 0 {
			if base, _, err = dockerLoad(img); err != nil {
				return err
			}
		}
		m, t, _, err := once(0)
		if err != nil {
			return err
		}
		phase, err := b.loadPhase(m, "the update "+st.name)
		if err != nil {
			return err
		}
		fetched := t["git-upload-pack"].down
		fmt.Printf("update %s: %s fetched, %s new chunks stored (%s raw), image loaded after %.2fs\n", st.name, mib(fetched), mib(newStored), mib(newRaw), phase.Seconds())
		if i == 0 {
			continue
		}
		sc := "6 update " + st.name
		switch st.target {
		case "a":
			r := float64(fetched) / float64(newStored)
			b.add(bundlertest.Row(sc, "bytes fetched", mib(fetched), mib(newStored)+" new chunks (stored)", fmt.Sprintf("%.2f×", r), "≤ 2×", yes(r <= 2)))
		case "b":
			layer, err := layerSize(img, 0)
			if err != nil {
				return err
			}
			r := float64(fetched) / float64(layer)
			b.add(bundlertest.Row(sc, "bytes fetched", kb(fetched), mib(layer)+" layer", fmt.Sprintf("%.2f%%", 100*r), "≤ 1%", yes(r <= 0.01)))
			b.add(bundlertest.Row(sc, "  new chunks (stored)", kb(newStored), "-", "-", "-", "-"))
		case "c":
			gz, err := layerGzipSize(img, 1)
			if err != nil {
				return err
			}
			r := float64(fetched) / float64(gz)
			b.add(bundlertest.Row(sc, "bytes fetched", mib(fetched), mib(gz)+" new layer gzip", fmt.Sprintf("%.2f×", r), "≤ 1.1×", yes(r <= 1.1)))
			b.add(bundlertest.Row(sc, "  new chunks (stored)", mib(newStored), "-", "-", "-", "-"))
		}
		b.add(bundlertest.Row(sc, "start → image loaded", secs(phase), secs(base.wall)+" docker load", fmt.Sprintf("%.2f×", phase.Seconds()/base.wall.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "agent peak RSS", kib(m.rss), "-", "-", "≤ 64 MiB", yes(m.rss <= 64<<10)))
	}
	return nil
}

// releasedIndex reads the image index of the newest release in the bare
// repository (its only image).
func releasedIndex(bare string) (*schema.ImageIndex, error) {
	out, err := exec.Command("git", "--git-dir", bare, "show", "refs/heads/releases:images/app.toml").Output()
	if err != nil {
		return nil, fmt.Errorf("read the released image index: %w", err)
	}
	return schema.ParseImageIndex("images/app.toml", out)
}

// savedLayer opens the n-th layer of a legacy docker-save tarball.
func savedLayer(src string, n int, fn func(io.Reader, int64) error) error {
	m, _, err := readMeta(src)
	if err != nil {
		return err
	}
	if n >= len(m.Layers) {
		return fmt.Errorf("image %s: no layer %d", src, n)
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("image %s: %s missing", src, m.Layers[n])
		}
		if err != nil {
			return err
		}
		if h.Name == m.Layers[n] {
			return fn(tr, h.Size)
		}
	}
}

func layerSize(src string, n int) (size int64, err error) {
	err = savedLayer(src, n, func(_ io.Reader, s int64) error { size = s; return nil })
	return size, err
}

// layerGzipSize is the size of the n-th layer compressed as a registry
// serves it (gzip, default level).
func layerGzipSize(src string, n int) (size int64, err error) {
	err = savedLayer(src, n, func(r io.Reader, _ int64) error {
		var c countWriter
		zw := gzip.NewWriter(&c)
		if _, err := io.Copy(zw, r); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		size = c.n
		return nil
	})
	return size, err
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
