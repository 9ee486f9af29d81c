package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/chunks"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

// dockerClient returns a client of the local engine, or skips the test when
// there is none (fails instead when CI=true).
func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker engine required (CI=true): %v", err)
		}
		t.Skipf("no docker engine (%v); set CI=true to make this a failure", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// load streams a rebuilt image into the engine, as the agent does.
func load(ctx context.Context, cli *client.Client, idx *schema.ImageIndex, src chunks.Source) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(chunks.Rebuild(ctx, idx, src, pw, nil)) }()
	resp, err := cli.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
	if err != nil {
		pr.CloseWithError(err)
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("image load: %w", err)
		}
		if m.Error != nil {
			return fmt.Errorf("image load: %w", m.Error)
		}
	}
}

const helloSrc = `package main

import "fmt"

func main() { fmt.Println("hello from pullship") }
`

func TestDockerLoadRebuilt(t *testing.T) {
	cli := dockerClient(t)
	bin := imagetest.GoBinary(t, helloSrc)
	for _, tc := range []struct {
		name   string
		layout imagetest.Layout
		gz     bool
	}{
		{"legacy", imagetest.Legacy, false},
		{"oci-layout-gzip", imagetest.OCI, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tag := "pullship-imagetest/hello:" + tc.name
			img := imagetest.Image{
				Layers: [][]imagetest.File{
					{{Path: "hello", Mode: 0o755, Data: bin}},
					{{Path: "etc/hello.txt", Data: []byte("x\n")}},
				},
				Entrypoint: []string{"/hello"},
				RepoTags:   []string{tag},
				Layout:     tc.layout,
				Gzip:       tc.gz,
			}
			p, built := writeImage(t, img)
			idx, src := storeChunks(t, TarFile(p))
			if idx.Digest != built.ID {
				t.Fatalf("digest %s, built %s", idx.Digest, built.ID)
			}
			// Start from an engine without the image, and leave it so.
			remove := func() {
				_, err := cli.ImageRemove(ctx, idx.Digest, image.RemoveOptions{Force: true, PruneChildren: true})
				if err != nil && !cerrdefs.IsNotFound(err) {
					t.Errorf("remove %s: %v", idx.Digest, err)
				}
			}
			remove()
			t.Cleanup(remove)

			if err := load(ctx, cli, idx, src); err != nil {
				t.Fatal(err)
			}
			info, err := cli.ImageInspect(ctx, idx.Digest)
			if err != nil {
				t.Fatalf("loaded image not found: %v", err)
			}
			if info.ID != idx.Digest {
				t.Fatalf("loaded image ID %s, index digest %s", info.ID, idx.Digest)
			}

			// Reading it back from the engine gives the same image.
			idx2, err := Scan(ctx, Engine(cli, tag))
			if err != nil {
				t.Fatal(err)
			}
			if idx2.Digest != idx.Digest {
				t.Fatalf("docker://%s digest %s, want %s", tag, idx2.Digest, idx.Digest)
			}
			engSrc, err := ParseSource("docker://" + tag)
			if err != nil {
				t.Fatal(err)
			}
			if idx3, err := Scan(ctx, engSrc); err != nil || !reflect.DeepEqual(idx3, idx2) {
				t.Fatalf("ParseSource(docker://%s): %v", tag, err)
			}
		})
	}
}

// TestDockerLoadCorrupt: a corrupt chunk stops the stream and the engine
// rejects the partial archive; no image appears.
func TestDockerLoadCorrupt(t *testing.T) {
	cli := dockerClient(t)
	ctx := context.Background()
	img := smallImage(imagetest.Legacy, false)
	img.RepoTags = nil
	p, _ := writeImage(t, img)
	idx, src := storeChunks(t, TarFile(p))
	for _, e := range idx.Entries {
		if len(e.Chunks) > 1 {
			os.WriteFile(string(src)+"/"+e.Chunks[1].SHA256, []byte("corrupt"), 0o644)
		}
	}
	cli.ImageRemove(ctx, idx.Digest, image.RemoveOptions{Force: true})
	if err := load(ctx, cli, idx, src); err == nil {
		t.Fatal("load of a corrupt stream succeeded")
	}
	if _, err := cli.ImageInspect(ctx, idx.Digest); !cerrdefs.IsNotFound(err) {
		t.Fatalf("image present after a failed load: %v", err)
	}
}
