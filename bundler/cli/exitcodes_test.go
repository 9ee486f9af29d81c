package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
)

// TestFutureReleaseRefusedEverywhere: a release created in the future is
// a freshness refusal, exit 3, from every command that verifies it (verify
// alone said 3 before; status and mirror said 1).
func TestFutureReleaseRefusedEverywhere(t *testing.T) {
	e := bundlertest.NewEnv(t)
	fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1", Template: "x\n",
		Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"), imagetest.File{Path: "app", Data: []byte("future")})
	future := time.Now().Add(2 * time.Hour)
	if _, err := e.Release.Release(context.Background(), bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(img),
		Signers: []signature.Signer{e.Key.Signer}, Clock: func() time.Time { return future }}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", "--repo", e.Repo, "--cache", filepath.Join(e.Dir, "c1"), "--root", e.Root},
		{"status", "--repo", e.Repo, "--cache", filepath.Join(e.Dir, "c2"), "--root", e.Root},
		{"mirror", "--cache", filepath.Join(e.Dir, "c4"), "--root", e.Root, e.Repo, filepath.Join(e.Dir, "copy.git")},
	} {
		code, out, stderr := run(t, args...)
		if code != ExitRefused || !strings.Contains(out+stderr, "in the future") {
			t.Errorf("%s: exit %d, want %d\n%s%s", args[0], code, ExitRefused, out, stderr)
		}
	}
}
