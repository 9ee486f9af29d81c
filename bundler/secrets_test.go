package bundler_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	agentsecrets "github.com/pullship/pullship/agent/secrets"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/render"
	"github.com/pullship/pullship/schema"
)

const secretTemplate = "node = {{.Node}}\nredis.password = {{secret \"redis_password\"}}\n"

// secretsFleet is a two-node fleet whose template uses a secret, each node
// with its own age identity, and an operator identity for releasing.
type secretsFleet struct {
	fleet    string
	ids      map[string]string // node → identity file
	operator string            // operator identity file (age-keygen format)
}

func newSecretsFleet(t *testing.T, dir, tmpl string) *secretsFleet {
	t.Helper()
	sf := &secretsFleet{ids: map[string]string{}}
	sf.fleet = bundlertest.WriteFleet(t, filepath.Join(dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/app:1", Template: tmpl, Target: "/etc/app/app.conf",
		Nodes: []bundlertest.Node{
			{Name: "cn", Region: "cn", Address: "10.0.0.1/24"},
			{Name: "sg", Region: "sg", Address: "10.0.0.2/24", Wave: 2},
		},
	})
	data, err := os.ReadFile(sf.fleet)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, n := range []string{"cn", "sg"} {
		sf.ids[n] = filepath.Join(dir, "host-"+n, n+".age")
		rcpt, err := agentsecrets.GenerateIdentity(sf.ids[n])
		if err != nil {
			t.Fatal(err)
		}
		line := "status_key = \"" + n + ".pub\"\n"
		text = strings.Replace(text, line, line+"age_recipient = \""+rcpt+"\"\n", 1)
	}
	op, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	sf.operator = filepath.Join(dir, "operator.txt")
	if err := os.WriteFile(sf.operator, []byte("# created: test\n# public key: "+op.Recipient().String()+"\n"+op.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text += "[secrets]\nrecipients = [\"" + op.Recipient().String() + "\"]\n"
	if err := os.WriteFile(sf.fleet, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return sf
}

func (sf *secretsFleet) parse(t *testing.T) *schema.Fleet {
	t.Helper()
	data, err := os.ReadFile(sf.fleet)
	if err != nil {
		t.Fatal(err)
	}
	f, err := render.ParseFleet(sf.fleet, data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSecretSetListRemove(t *testing.T) {
	sf := newSecretsFleet(t, t.TempDir(), secretTemplate)
	if err := bundler.SetSecret(sf.fleet, "cn", "redis_password", []byte("hunter2-cn")); err != nil {
		t.Fatal(err)
	}
	if err := bundler.SetSecret(sf.fleet, "cn", "cookie", []byte("vmq-cookie")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bundler.SecretsPath(sf.fleet, "cn"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("hunter2")) || bytes.Contains(data, []byte("vmq-cookie")) {
		t.Fatalf("secrets file holds a plaintext:\n%s", data)
	}
	if _, err := bundler.ParseSecretFile("cn.toml", data); err != nil {
		t.Fatalf("written file does not parse: %v", err)
	}
	keys, err := bundler.ListSecrets(sf.fleet, "cn")
	if err != nil || strings.Join(keys, ",") != "cookie,redis_password" {
		t.Fatalf("list: %v %v", keys, err)
	}
	// The node's own identity reads its secret (agent side), the other
	// node's does not.
	file, _ := bundler.ParseSecretFile("cn.toml", data)
	got, err := agentsecrets.Decrypt(sf.ids["cn"], []byte(file.Secrets["redis_password"]), 1024)
	if err != nil || string(got) != "hunter2-cn" {
		t.Fatalf("node decrypts %q, %v", got, err)
	}
	if _, err := agentsecrets.Decrypt(sf.ids["sg"], []byte(file.Secrets["redis_password"]), 1024); !errors.Is(err, agentsecrets.ErrWrongIdentity) {
		t.Fatalf("other node: %v", err)
	}

	if err := bundler.SetSecret(sf.fleet, "nope", "k", []byte("v")); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown node: %v", err)
	}
	if err := bundler.SetSecret(sf.fleet, "cn", "bad-key", []byte("v")); err == nil {
		t.Fatal("bad key accepted")
	}
	if err := bundler.RemoveSecret(sf.fleet, "cn", "cookie"); err != nil {
		t.Fatal(err)
	}
	if err := bundler.RemoveSecret(sf.fleet, "cn", "cookie"); err == nil {
		t.Fatal("removing a missing secret succeeded")
	}
	if err := bundler.RemoveSecret(sf.fleet, "cn", "redis_password"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bundler.SecretsPath(sf.fleet, "cn")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty secrets file kept: %v", err)
	}
}

func TestSecretSetNeedsRecipients(t *testing.T) {
	dir := t.TempDir()
	fleet := fleetFor(t, dir, "x\n")
	err := bundler.SetSecret(fleet, "cn", "k", []byte("v"))
	if err == nil || !strings.Contains(err.Error(), "age_recipient") {
		t.Fatalf("node without age_recipient: %v", err)
	}
}

func renderSecrets(t *testing.T, sf *secretsFleet, prev bundler.PreviousFile) (*render.Rendered, error) {
	t.Helper()
	f := sf.parse(t)
	ids, err := bundler.LoadSecretsIdentity(sf.operator)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(sf.fleet)
	r, err := render.RenderWith(f, dir, render.Options{Secrets: bundler.NodeSecrets(dir, ids)})
	if err != nil {
		return nil, err
	}
	return r, bundler.EncryptRendered(r, f, ids, prev)
}

func TestSecretsRenderedEncryptedToTheNode(t *testing.T) {
	sf := newSecretsFleet(t, t.TempDir(), secretTemplate)
	for n, v := range map[string]string{"cn": "pw-of-cn", "sg": "pw-of-sg"} {
		if err := bundler.SetSecret(sf.fleet, n, "redis_password", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := renderSecrets(t, sf, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.Nodes {
		file, entry := n.Files[0], n.Release.Files[0]
		if !entry.Encrypted || entry.SHA256 != file.SHA256 || entry.Length != int64(len(file.Data)) {
			t.Fatalf("%s: entry %+v does not pin the ciphertext", n.Release.Name, entry)
		}
		if bytes.Contains(file.Data, []byte("pw-of")) {
			t.Fatalf("%s: ciphertext holds the plaintext", n.Release.Name)
		}
		got, err := agentsecrets.Decrypt(sf.ids[n.Release.Name], file.Data, schema.MaxFileLength)
		if err != nil {
			t.Fatal(err)
		}
		want := "node = " + n.Release.Name + "\nredis.password = pw-of-" + n.Release.Name + "\n"
		if string(got) != want {
			t.Fatalf("%s: decrypted %q, want %q", n.Release.Name, got, want)
		}
	}
	if _, err := agentsecrets.Decrypt(sf.ids["sg"], r.Nodes[0].Files[0].Data, schema.MaxFileLength); !errors.Is(err, agentsecrets.ErrWrongIdentity) {
		t.Fatalf("sg decrypting cn's file: %v", err)
	}

	// Unchanged plaintext keeps the previous ciphertext; a changed secret
	// gets a fresh one.
	prevData := map[string][]byte{"cn": r.Nodes[0].Files[0].Data, "sg": r.Nodes[1].Files[0].Data}
	f := sf.parse(t)
	prev := func(node, path string) ([]byte, string, bool, error) {
		return prevData[node], f.Nodes[map[string]int{"cn": 0, "sg": 1}[node]].AgeRecipient, true, nil
	}
	if err := bundler.SetSecret(sf.fleet, "sg", "redis_password", []byte("rotated")); err != nil {
		t.Fatal(err)
	}
	r2, err := renderSecrets(t, sf, prev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r2.Nodes[0].Files[0].Data, prevData["cn"]) {
		t.Fatal("cn's unchanged file was encrypted afresh")
	}
	if bytes.Equal(r2.Nodes[1].Files[0].Data, prevData["sg"]) {
		t.Fatal("sg's changed file kept the old ciphertext")
	}
	got, err := agentsecrets.Decrypt(sf.ids["sg"], r2.Nodes[1].Files[0].Data, schema.MaxFileLength)
	if err != nil || !strings.Contains(string(got), "redis.password = rotated\n") {
		t.Fatalf("sg after rotation: %q %v", got, err)
	}
}

func TestSecretsMissingIsAClearError(t *testing.T) {
	sf := newSecretsFleet(t, t.TempDir(), secretTemplate)
	if err := bundler.SetSecret(sf.fleet, "cn", "redis_password", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_, err := renderSecrets(t, sf, nil)
	var mse *render.MissingSecretError
	if !errors.As(err, &mse) {
		t.Fatalf("got %v, want a MissingSecretError", err)
	}
	for _, want := range []string{`node "sg"`, `template "app.conf"`, `secret "redis_password"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}

	// Without an identity (and with plain Render) a secret cannot be read.
	f := sf.parse(t)
	dir := filepath.Dir(sf.fleet)
	if _, err := render.RenderWith(f, dir, render.Options{Secrets: bundler.NodeSecrets(dir, nil)}); !errors.Is(err, bundler.ErrNoSecretsIdentity) {
		t.Fatalf("no identity: %v", err)
	}
	if _, err := render.Render(f, dir); err == nil || !strings.Contains(err.Error(), "no secrets available") {
		t.Fatalf("Render: %v", err)
	}

	// An identity that is not a recipient cannot read the values.
	stranger, _ := age.GenerateX25519Identity()
	if _, err := bundler.NodeSecrets(dir, []age.Identity{stranger})("cn"); err == nil || !strings.Contains(err.Error(), "not encrypted to the secrets identity") {
		t.Fatalf("stranger identity: %v", err)
	}
}

func TestFleetWithoutSecretsNeedsNoIdentity(t *testing.T) {
	dir := t.TempDir()
	fleet := fleetFor(t, dir, "plain = {{.Node}}\n")
	data, _ := os.ReadFile(fleet)
	f, err := render.ParseFleet(fleet, data)
	if err != nil {
		t.Fatal(err)
	}
	r, err := render.RenderWith(f, dir, render.Options{Secrets: bundler.NodeSecrets(dir, nil)})
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := render.Render(f, dir)
	if err := bundler.EncryptRendered(r, f, nil, nil); err != nil {
		t.Fatal(err)
	}
	if string(r.Nodes[0].Files[0].Data) != "plain = cn\n" || r.Nodes[0].Release.Files[0].Encrypted ||
		r.Nodes[0].Release.Files[0] != plain.Nodes[0].Release.Files[0] {
		t.Fatalf("file without secrets changed: %+v", r.Nodes[0].Release.Files[0])
	}
}

func FuzzParseSecretFile(f *testing.F) {
	for _, p := range []string{"testdata/secrets/cn.toml", "testdata/secrets/bad-key.toml", "testdata/secrets/not-armor.toml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := bundler.ParseSecretFile("fuzz.toml", data)
		if err != nil {
			return
		}
		again, err := bundler.ParseSecretFile("again.toml", sf.Encode("fuzz"))
		if err != nil {
			t.Fatalf("encoded file does not parse: %v", err)
		}
		if len(again.Secrets) != len(sf.Secrets) {
			t.Fatalf("%d secrets after a round trip, want %d", len(again.Secrets), len(sf.Secrets))
		}
	})
}
