package bundler_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden release manifests in testdata/golden")

// imageIndexLine matches the [[image]] keys that hash the image index file,
// whose format is the image packer's and not what these tests pin.
var imageIndexLine = regexp.MustCompile(`(?m)^(index_sha256|index_length) = .*$`)

// cutGolden releases the fleet in testdata/golden/<dir> (copied to a
// scratch directory, so no git work tree is recorded) at a fixed time and
// returns its release.toml with the image index hash masked.
func cutGolden(t *testing.T, dir string, opts func(*bundler.ReleaseOptions, string)) []byte {
	t.Helper()
	e := bundlertest.NewEnv(t)
	fleetDir := filepath.Join(e.Dir, "fleet")
	if err := os.CopyFS(fleetDir, os.DirFS(filepath.Join("testdata", "golden", dir))); err != nil {
		t.Fatal(err)
	}
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Data: []byte("golden app\n")})
	o := bundler.ReleaseOptions{
		Fleet: filepath.Join(fleetDir, "fleet.toml"), Image: image.TarFile(img),
		Signers: []signature.Signer{e.Key.Signer},
		Clock:   func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC) },
	}
	if opts != nil {
		opts(&o, e.Dir)
	}
	if _, err := e.Release.Release(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	head, err := e.Release.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Read(e.Release.Cache, head.Releases)
	if err != nil {
		t.Fatal(err)
	}
	return imageIndexLine.ReplaceAll(b.Manifest, []byte("$1 = (masked)"))
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *updateGolden {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("release.toml differs from %s:\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

// A fleet written with the single [service] table releases the same
// manifest bytes it did before fleets could list several services.
func TestReleaseGoldenOneService(t *testing.T) {
	checkGolden(t, "legacy-release.toml", cutGolden(t, "legacy", nil))
}

// A [[service]] fleet pins each service's image and container per node, in
// start order, and only the files of the services a node runs.
func TestReleaseGoldenServices(t *testing.T) {
	got := cutGolden(t, "multi", func(o *bundler.ReleaseOptions, dir string) {
		hook, _ := bundlertest.WriteImage(t, filepath.Join(dir, "hook.tar"), imagetest.File{Path: "hook", Data: []byte("golden hook\n")})
		o.Images = map[string]image.Source{"broker": o.Image, "webhook": image.TarFile(hook)}
		o.Image = nil
	})
	checkGolden(t, "multi-release.toml", got)
}

// The stack of TestReleaseGoldenServices written as a compose file gives
// the same manifest, byte for byte.
func TestReleaseGoldenCompose(t *testing.T) {
	got := cutGolden(t, "compose", func(o *bundler.ReleaseOptions, dir string) {
		hook, _ := bundlertest.WriteImage(t, filepath.Join(dir, "hook.tar"), imagetest.File{Path: "hook", Data: []byte("golden hook\n")})
		o.Images = map[string]image.Source{"broker": o.Image, "webhook": image.TarFile(hook)}
		o.Image = nil
	})
	checkGolden(t, "multi-release.toml", got)
}
