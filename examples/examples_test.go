// Package examples_test checks that the recipes in examples/ work as
// written, with real git repositories and hooks.
package examples_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
)

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=ops", "GIT_AUTHOR_EMAIL=ops@example.com",
		"GIT_COMMITTER_NAME=ops", "GIT_COMMITTER_EMAIL=ops@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func copyExec(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestGitPushReleases: a push to the config repository's main branch cuts
// a signed release through the post-receive hook; a push that changes
// nothing a node applies cuts none.
func TestGitPushReleases(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pullship")
	run(t, ".", "go", "build", "-o", bin, "github.com/pullship/pullship/bundler/cmd/pullship")

	key := bundlertest.NewKey(t, dir, "release")
	root := bundlertest.WriteRoot(t, dir, 1, 1, []*bundlertest.Key{key}, key)
	releases := filepath.Join(dir, "releases.git")
	run(t, dir, bin, "init", "--repo", releases, "--root", root, "--cache", filepath.Join(dir, "cache"))
	img := filepath.Join(dir, "app.tar")
	if _, err := imagetest.WriteFile(img, imagetest.Image{Layers: [][]imagetest.File{{{Path: "app", Data: []byte("app")}}}, Cmd: []string{"/app"}}); err != nil {
		t.Fatal(err)
	}

	// The config repository on a "server", with the hook installed.
	config := filepath.Join(dir, "config.git")
	run(t, dir, "git", "init", "-q", "--bare", "-b", "main", config)
	copyExec(t, "git-push/post-receive", filepath.Join(config, "hooks", "post-receive"))
	copyExec(t, "git-push/release-commit.sh", filepath.Join(config, "hooks", "release-commit.sh"))
	env := "PULLSHIP_RELEASE_REPO=" + releases + "\nPULLSHIP_KEY=" + key.KeyPath + "\nPULLSHIP_IMAGE=" + img +
		"\nPULLSHIP=" + bin + "\nXDG_CACHE_HOME=" + filepath.Join(dir, "xdg") + "\n"
	if err := os.WriteFile(filepath.Join(config, "hooks", "pullship.env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}

	// An operator's clone: the fleet, committed and pushed.
	work := filepath.Join(dir, "work")
	run(t, dir, "git", "clone", "-q", config, work)
	bundlertest.WriteFleet(t, work, bundlertest.Fleet{Image: "example/app:1", Template: "greeting = hello {{.Node}}\n",
		Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}}})
	run(t, work, "git", "add", ".")
	run(t, work, "git", "commit", "-q", "-m", "fleet: first")
	out := run(t, work, "git", "push", "-q", "origin", "HEAD:main")
	first := strings.TrimSpace(run(t, work, "git", "rev-parse", "HEAD"))
	if !strings.Contains(out, "release 1 published") {
		t.Fatalf("push did not cut release 1:\n%s", out)
	}
	if m := run(t, dir, "git", "-C", releases, "show", "releases:release.toml"); !strings.Contains(m, `commit = "`+first+`"`) {
		t.Fatalf("release 1 does not name commit %s:\n%s", first, m)
	}

	// A change no node applies: no release.
	if err := os.WriteFile(filepath.Join(work, "NOTES"), []byte("notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, work, "git", "add", ".")
	run(t, work, "git", "commit", "-q", "-m", "notes")
	if out := run(t, work, "git", "push", "-q", "origin", "HEAD:main"); !strings.Contains(out, "no release cut") {
		t.Fatalf("a push changing nothing: %s", out)
	}

	// A config change: release 2.
	if err := os.WriteFile(filepath.Join(work, "conf.tmpl"), []byte("greeting = hi {{.Node}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, work, "git", "commit", "-q", "-am", "fleet: say hi")
	if out := run(t, work, "git", "push", "-q", "origin", "HEAD:main"); !strings.Contains(out, "release 2 published") {
		t.Fatalf("config push: %s", out)
	}
	if log := run(t, dir, "git", "-C", releases, "log", "--format=%s", "releases"); strings.Count(log, "\n") != 2 {
		t.Fatalf("want 2 releases:\n%s", log)
	}
	run(t, dir, "git", "-C", releases, "fsck", "--strict", "--no-dangling")
}

// TestVerneMQFleetReleases: examples/vernemq/fleet.toml releases as it is
// (with each node's status key added, as its README says): four nodes in
// three waves, each running the broker and the webhook receiver, started
// in that order's reverse (the broker depends on the receiver).
func TestVerneMQFleetReleases(t *testing.T) {
	e := bundlertest.NewEnv(t)
	dir := filepath.Join(e.Dir, "vernemq")
	if err := os.CopyFS(dir, os.DirFS("vernemq")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cn", "sg", "us", "eu"} {
		k := bundlertest.NewKey(t, e.Dir, n)
		if err := os.WriteFile(filepath.Join(dir, "keys", n+".pub"), k.PubPEM, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	broker, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "broker.tar"), imagetest.File{Path: "vernemq", Data: []byte("broker")})
	hook, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "hook.tar"), imagetest.File{Path: "demohook", Data: []byte("hook")})
	if _, err := e.Release.Release(context.Background(), bundler.ReleaseOptions{Fleet: filepath.Join(dir, "fleet.toml"),
		Images:  map[string]image.Source{"broker": image.TarFile(broker), "webhook": image.TarFile(hook)},
		Signers: []signature.Signer{e.Key.Signer}, AllowDirty: true}); err != nil {
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
	v, err := bundle.Verify(b, e.Pinned, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	waves := map[int]int{}
	for _, n := range v.Release.Nodes {
		waves[n.Wave]++
		u := n.Units()
		if len(u) != 2 || u[0].Name != "webhook" || u[1].Name != "broker" || !u[1].Attach || u[1].Container.Cluster == nil {
			t.Errorf("node %s services %+v", n.Name, u)
		}
	}
	if len(v.Release.Nodes) != 4 || waves[1] != 1 || waves[2] != 1 || waves[3] != 2 || len(v.Release.Images) != 2 {
		t.Fatalf("release: %d nodes, waves %v, %d images", len(v.Release.Nodes), waves, len(v.Release.Images))
	}
}
