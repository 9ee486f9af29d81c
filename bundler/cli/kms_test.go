package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/schema"
)

// fakeTransit is the part of HashiCorp Vault's transit engine a signer
// uses: read a key's public half, sign a SHA-256 digest. No Vault server
// can run here; the wire format is Vault's.
func fakeTransit(t *testing.T, name string) (*httptest.Server, []byte) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	reply := func(w http.ResponseWriter, data map[string]any) {
		json.NewEncoder(w).Encode(map[string]any{"data": data})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/transit/keys/"+name, func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"latest_version": 1, "type": "ecdsa-p256",
			"keys": map[string]any{"1": map[string]any{"name": "P-256", "public_key": string(pub)}}})
	})
	mux.HandleFunc("PUT /v1/transit/sign/"+name+"/sha2-256", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Input     string `json:"input"`
			Prehashed bool   `json:"prehashed"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !req.Prehashed {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		digest, err := base64.StdEncoding.DecodeString(req.Input)
		if err != nil || len(digest) != 32 {
			http.Error(w, "bad digest", http.StatusBadRequest)
			return
		}
		sig, err := ecdsa.SignASN1(rand.Reader, priv, digest)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, map[string]any{"signature": "vault:v1:" + base64.StdEncoding.EncodeToString(sig)})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, pub
}

// TestReleaseWithKMSKey signs a release with a hashivault:// key URI.
func TestReleaseWithKMSKey(t *testing.T) {
	srv, vaultPub := fakeTransit(t, "release")
	t.Setenv("VAULT_ADDR", srv.URL)
	t.Setenv("VAULT_TOKEN", "test-token")
	dir := t.TempDir()
	local := bundlertest.NewKey(t, dir, "local")
	vault := &bundlertest.Key{PubPEM: vaultPub}
	root := bundlertest.WriteRoot(t, dir, 1, 1, []*bundlertest.Key{local, vault}, local)
	repoDir := filepath.Join(dir, "repo.git")
	run := func(args ...string) string {
		var out, errb bytes.Buffer
		env := Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: os.Getenv}
		if code := Main(env, append(args, "--cache", filepath.Join(dir, "cache"))); code != 0 {
			t.Fatalf("pullship %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
		return out.String()
	}
	run("init", "--repo", repoDir, "--root", root)
	fleet := bundlertest.WriteFleet(t, filepath.Join(dir, "fleet"), bundlertest.Fleet{Image: "example/app:1", Template: "x = {{.Node}}\n",
		Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(dir, "img.tar"), imagetest.File{Path: "app", Data: []byte("app")})
	out := run("release", "--repo", repoDir, "--fleet", fleet, "--image", img, "--key", "hashivault://release", "-q")
	pub, _, err := schema.ParsePublicKeyPEM(vaultPub)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := schema.KeyID(pub)
	if !strings.Contains(out, "signed by "+id[:12]) {
		t.Fatalf("release not signed by the Vault key %s:\n%s", id[:12], out)
	}
	if v := run("verify", "--repo", repoDir, "--root", root); !strings.Contains(v, "ok   release 1") {
		t.Fatalf("verify: %s", v)
	}
}
