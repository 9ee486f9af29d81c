package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pullship/pullship/schema"
)

func runAgent(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}, args)
	return code, out.String(), errb.String()
}

func TestInitCreatesAndKeepsKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.toml")
	conf := `remotes = ["/srv/fleet.git"]
root = "root-1.toml"
state_dir = "state"

[[node]]
name = "cn"
key = "keys/cn.key"

[[node]]
name = "sg"
key = "keys/sg.key"
`
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runAgent("init", "--config", cfg)
	if code != 0 || strings.Count(out, "created status key") != 2 {
		t.Fatalf("init: %d\n%s\n%s", code, out, stderr)
	}
	ids := regexp.MustCompile(`key id: +([0-9a-f]{64})`).FindAllStringSubmatch(out, -1)
	if len(ids) != 2 || ids[0][1] == ids[1][1] {
		t.Fatalf("key ids in %s", out)
	}
	for i, n := range []string{"cn", "sg"} {
		key := filepath.Join(dir, "keys", n+".key")
		fi, err := os.Stat(key)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", key, fi.Mode(), err)
		}
		data, _ := os.ReadFile(key)
		signer, alg, err := schema.LoadPrivateKey(key, data, nil)
		if err != nil || alg != schema.AlgECDSAP256SHA256 {
			t.Fatalf("load %s: %v %s", key, err, alg)
		}
		pubPEM, err := os.ReadFile(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		pk, err := schema.NewRootKey(pubPEM)
		if err != nil || pk.ID != ids[i][1] {
			t.Fatalf("%s.pub: id %s, printed %s, %v", key, pk.ID, ids[i][1], err)
		}
		pub, _ := signer.PublicKey()
		if id, _ := schema.KeyID(pub); id != pk.ID {
			t.Fatalf("%s.pub is not the key's public key", key)
		}
	}

	// Again: both kept, same ids; a lost .pub is rewritten.
	if err := os.Remove(filepath.Join(dir, "keys", "sg.key.pub")); err != nil {
		t.Fatal(err)
	}
	code, out2, stderr := runAgent("init", "--config", cfg)
	if code != 0 || strings.Count(out2, "kept existing") != 2 || !strings.Contains(out2, ids[0][1]) || !strings.Contains(out2, ids[1][1]) {
		t.Fatalf("second init: %d\n%s\n%s", code, out2, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "keys", "sg.key.pub")); err != nil {
		t.Fatal(err)
	}

	// An encrypted key cannot sign unattended.
	kp, err := schema.GenerateKey(schema.AlgECDSAP256SHA256, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "cn.key"), kp.PrivatePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runAgent("init", "--config", cfg); code != ExitFailure || !strings.Contains(stderr, "encrypted") {
		t.Fatalf("encrypted key: %d %s", code, stderr)
	}
	if code, _, _ := runAgent("init", "--config", filepath.Join(dir, "nope.toml")); code != ExitUsage {
		t.Fatalf("missing config: exit %d", code)
	}
}
