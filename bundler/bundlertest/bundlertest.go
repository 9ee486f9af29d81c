// Package bundlertest makes what tests of pullship need to cut real
// releases: signing keys, a trust root, a fleet directory and a tiny image,
// all written to a test's temporary directory. It is imported by tests only.
package bundlertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// Key is a generated signing key.
type Key struct {
	Signer  signature.SignerVerifier
	ID      string
	PubPEM  []byte
	KeyPath string // unencrypted private key file
	PubPath string
}

// NewKey generates an ECDSA P-256 key and writes it under dir as name.key/.pub.
func NewKey(t testing.TB, dir, name string) *Key {
	t.Helper()
	kp, err := schema.GenerateKey(schema.AlgECDSAP256SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := &Key{ID: kp.KeyID, PubPEM: kp.PublicPEM,
		KeyPath: filepath.Join(dir, name+".key"), PubPath: filepath.Join(dir, name+".pub")}
	must(t, os.WriteFile(k.KeyPath, kp.PrivatePEM, 0o600))
	must(t, os.WriteFile(k.PubPath, kp.PublicPEM, 0o644))
	k.Signer, _, err = schema.LoadPrivateKey(k.KeyPath, kp.PrivatePEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// WriteRoot writes root-N.toml (and its .sig, signed by signers) into dir
// with keys and threshold, expiring a year from now, and returns its path.
func WriteRoot(t testing.TB, dir string, version int64, threshold int, keys []*Key, signers ...*Key) string {
	t.Helper()
	r := &schema.Root{Version: version, Expires: time.Now().UTC().Truncate(time.Second).Add(365 * 24 * time.Hour), Threshold: threshold}
	for _, k := range keys {
		rk, err := schema.NewRootKey(k.PubPEM)
		if err != nil {
			t.Fatal(err)
		}
		r.Keys = append(r.Keys, rk)
	}
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, schema.RootFileName(version))
	must(t, os.WriteFile(p, data, 0o644))
	var sigs schema.SignatureFile
	for _, k := range signers {
		s, err := schema.SignWith(k.Signer, data)
		if err != nil {
			t.Fatal(err)
		}
		sigs.Add(s)
	}
	must(t, os.WriteFile(schema.SigFileName(p), sigs.Encode(), 0o644))
	return p
}

// Node is a fleet node for WriteFleet.
type Node struct {
	Name, Region, Address string
	Wave                  int
	Vars                  map[string]string
}

// Fleet describes a test fleet: one service, one config template.
type Fleet struct {
	Image     string // Docker reference recorded in the fleet
	Template  string // text of the conf template
	Target    string // host path of the rendered file
	Nodes     []Node
	Extra     string // appended to [service] (health, cluster, command…)
	StatusKey []byte // PEM every node's status key uses; nil: a fresh key per node
}

// WriteFleet writes fleet.toml, conf.tmpl and the nodes' status keys into
// dir and returns the fleet.toml path.
func WriteFleet(t testing.TB, dir string, f Fleet) string {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "conf.tmpl"), []byte(f.Template), 0o644))
	var b strings.Builder
	fmt.Fprintf(&b, "[service]\nimage = %q\ncontainer = \"pullship-test-{{.Node}}\"\nreload = { action = \"restart\" }\n%s\n", f.Image, f.Extra)
	fmt.Fprintf(&b, "[[template]]\nname = \"app.conf\"\nsource = \"conf.tmpl\"\ntarget = %q\n\n[attach]\ndriver = \"none\"\n\n", f.Target)
	for _, n := range f.Nodes {
		pub := f.StatusKey
		if pub == nil {
			pub = NewKey(t, dir, "status-"+n.Name).PubPEM
		}
		must(t, os.WriteFile(filepath.Join(dir, n.Name+".pub"), pub, 0o644))
		wave := n.Wave
		if wave == 0 {
			wave = 1
		}
		fmt.Fprintf(&b, "[[node]]\nname = %q\nregion = %q\nwave = %d\naddress = %q\nstatus_key = %q\n", n.Name, n.Region, wave, n.Address, n.Name+".pub")
		if len(n.Vars) > 0 {
			b.WriteString("vars = {")
			i := 0
			for k, v := range n.Vars {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, " %s = %q", k, v)
				i++
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\n")
	}
	p := filepath.Join(dir, "fleet.toml")
	must(t, os.WriteFile(p, []byte(b.String()), 0o644))
	return p
}

// WriteImage writes a docker-save tarball with one layer holding files and
// returns its path and image ID.
func WriteImage(t testing.TB, path string, files ...imagetest.File) (string, string) {
	t.Helper()
	b, err := imagetest.WriteFile(path, imagetest.Image{Layers: [][]imagetest.File{files}, Cmd: []string{"/app"}, RepoTags: []string{"pullship-test/app:1"}})
	if err != nil {
		t.Fatal(err)
	}
	return path, b.ID
}

// Env is a release repository in a directory, initialised with a 1-of-1
// root, ready for releases.
type Env struct {
	Dir     string // scratch directory
	Repo    string // the bare repository
	Key     *Key   // the release key
	Root    string // root-1.toml path
	Pinned  *schema.Root
	Release *bundler.Repository
}

// NewEnv creates keys, a root and an initialised directory repository.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	dir := t.TempDir()
	e := &Env{Dir: dir, Repo: filepath.Join(dir, "releases.git")}
	e.Key = NewKey(t, dir, "release")
	e.Root = WriteRoot(t, dir, 1, 1, []*Key{e.Key}, e.Key)
	data, err := os.ReadFile(e.Root)
	must(t, err)
	if e.Pinned, err = schema.ParseRoot(e.Root, data); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := bundler.InitRepo(ctx, e.Repo, e.Root, filepath.Join(dir, "cache-init"), repo.Options{}); err != nil {
		t.Fatal(err)
	}
	if e.Release, err = bundler.Open(ctx, e.Repo, filepath.Join(dir, "cache"), repo.Options{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// Cut releases fleet with image (a docker-save tarball path), signed by the
// env's key.
func (e *Env) Cut(t testing.TB, fleet, imagePath string) *bundler.ReleaseResult {
	t.Helper()
	res, err := e.Release.Release(context.Background(), bundler.ReleaseOptions{
		Fleet: fleet, Image: image.TarFile(imagePath), Signers: []signature.Signer{e.Key.Signer}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
