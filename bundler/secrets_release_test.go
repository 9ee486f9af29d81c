package bundler_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"

	agentsecrets "github.com/pullship/pullship/agent/secrets"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

func TestReleaseSecretsRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := bundlertest.NewEnv(t)
	sf := newSecretsFleet(t, e.Dir, secretTemplate)
	for n, v := range map[string]string{"cn": "pw-of-cn", "sg": "pw-of-sg"} {
		if err := bundler.SetSecret(sf.fleet, n, "redis_password", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Size: 1 << 10, Content: func() io.Reader { return imagetest.Random(1, 1<<10) }})
	opts := bundler.ReleaseOptions{Fleet: sf.fleet, Image: image.TarFile(img),
		Signers: []signature.Signer{e.Key.Signer}, SecretsIdentity: sf.operator}

	// Without the identity nothing is published.
	noID := opts
	noID.SecretsIdentity = ""
	if _, err := e.Release.Release(ctx, noID); !errors.Is(err, bundler.ErrNoSecretsIdentity) {
		t.Fatalf("release without --secrets-identity: %v", err)
	}
	if _, err := e.Release.Release(ctx, opts); err != nil {
		t.Fatal(err)
	}

	// What git holds is ciphertext, pinned by the manifest.
	m, err := schema.ParseRelease("release.toml", []byte(git(t, e.Repo, "show", "releases:release.toml")))
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"cn", "sg"} {
		ct := git(t, e.Repo, "show", "releases:nodes/"+node+"/app.conf")
		if strings.Contains(ct, "pw-of") || strings.Contains(ct, "redis.password") {
			t.Fatalf("%s: plaintext in the release repository", node)
		}
		rn, _ := m.Node(node)
		sum := sha256.Sum256([]byte(ct))
		if f := rn.Files[0]; !f.Encrypted || f.SHA256 != hex.EncodeToString(sum[:]) || f.Length != int64(len(ct)) {
			t.Fatalf("%s: manifest entry %+v does not pin the ciphertext in git", node, f)
		}
		got, err := agentsecrets.Decrypt(sf.ids[node], []byte(ct), schema.MaxFileLength)
		if err != nil {
			t.Fatal(err)
		}
		if want := "node = " + node + "\nredis.password = pw-of-" + node + "\n"; string(got) != want {
			t.Fatalf("%s: decrypted %q, want %q", node, got, want)
		}
	}
	if _, err := agentsecrets.Decrypt(sf.ids["sg"], []byte(git(t, e.Repo, "show", "releases:nodes/cn/app.conf")), schema.MaxFileLength); !errors.Is(err, agentsecrets.ErrWrongIdentity) {
		t.Fatalf("sg's identity on cn's file: %v", err)
	}
	if log := git(t, e.Repo, "log", "-p", "--all"); strings.Contains(log, "pw-of") {
		t.Fatal("plaintext somewhere in the repository history")
	}

	// Same inputs: the ciphertext is reused, so nothing changed.
	if _, err := e.Release.Release(ctx, opts); !errors.Is(err, bundler.ErrNothingChanged) {
		t.Fatalf("second identical release: %v", err)
	}
	// A rotated secret changes only its node.
	if err := bundler.SetSecret(sf.fleet, "sg", "redis_password", []byte("rotated")); err != nil {
		t.Fatal(err)
	}
	res, err := e.Release.Release(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.NodesChanged, ",") != "sg" {
		t.Fatalf("nodes changed %v, want [sg]", res.NodesChanged)
	}
}
