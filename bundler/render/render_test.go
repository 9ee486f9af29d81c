package render

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/schema"
)

var update = flag.Bool("update", false, "rewrite the golden release in schema/testdata/release")

const fleetDir = "../../schema/testdata/fleet"

func loadFleet(t *testing.T, name string) *schema.Fleet {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fleetDir, name))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFleet(name, data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// goldenRelease wraps the rendered nodes into a fixed release.
func goldenRelease(r *Rendered) *schema.Release {
	created := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	return &schema.Release{
		Version:     2,
		Created:     created,
		Expires:     created.Add(720 * time.Hour),
		Previous:    strings.Repeat("ab", 32),
		RootVersion: 1,
		Source:      &schema.Source{Commit: strings.Repeat("1f", 20)},
		Images: []schema.ReleaseImage{{
			Name: "vernemq", Reference: "airdroid/vernemq:1.6.1",
			Digest:      "sha256:" + strings.Repeat("c3", 32),
			IndexSHA256: strings.Repeat("d4", 32), IndexLength: 2048,
		}},
		Nodes:   r.ReleaseNodes(),
		Rollout: schema.Rollout{Soak: schema.Duration(5 * time.Minute), Now: []string{"cn"}},
	}
}

func TestRenderVerneMQ(t *testing.T) {
	f := loadFleet(t, "vernemq.toml")
	r, err := Render(f, fleetDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Nodes) != 4 {
		t.Fatalf("%d nodes", len(r.Nodes))
	}
	sg := r.Nodes[1]
	if sg.Release.Name != "sg" || sg.Release.Container.Name != "vernemq-release-sg-1" {
		t.Fatalf("sg: %+v", sg.Release)
	}
	conf := string(sg.Files[0].Data)
	for _, want := range []string{
		"nodename = VerneMQ@10.0.0.2\n",
		"listener.vmq.clustering = 10.0.0.2:44053\n",
		"vmq_webhooks.hook1.endpoint = http://172.16.0.12:7777/webhook\n", // node override
		"listener.max_connections = 10000\n",                              // shared var
		"# cluster: cn=10.0.0.1 sg=10.0.0.2 us=10.0.0.3 eu=10.0.0.4 \n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("sg vernemq.conf lacks %q:\n%s", want, conf)
		}
	}
	if !strings.Contains(string(r.Nodes[0].Files[0].Data), "endpoint = http://172.16.16.14:7777/webhook") {
		t.Errorf("cn does not use the shared webhook_url")
	}
	// Join order: earlier waves first, fleet order within a wave, never self.
	cl := r.Nodes[3].Release.Container.Cluster // eu, wave 3
	wantPeers := []string{"VerneMQ@10.0.0.1", "VerneMQ@10.0.0.2", "VerneMQ@10.0.0.3"}
	if strings.Join(cl.Peers, ",") != strings.Join(wantPeers, ",") || cl.Self != "VerneMQ@10.0.0.4" {
		t.Fatalf("eu peers %v self %q", cl.Peers, cl.Self)
	}
	if got := strings.Join(cl.Join[1], " "); got != "vmq-admin cluster join discovery-node=VerneMQ@10.0.0.2" {
		t.Fatalf("eu join[1] = %q", got)
	}
	us := r.Nodes[2].Release.Container.Cluster
	if us.Peers[0] != "VerneMQ@10.0.0.1" || us.Peers[1] != "VerneMQ@10.0.0.2" {
		t.Fatalf("us peers %v", us.Peers)
	}
	if eu := r.Nodes[3].Release.Network; eu.Driver != "docker" || eu.Network != "vmq" || eu.Address != "10.0.0.4/24" {
		t.Fatalf("eu network %+v", eu)
	}
	for _, n := range r.Nodes {
		f := n.Release.Files[0]
		if f.SHA256 != n.Files[0].SHA256 || f.Length != int64(len(n.Files[0].Data)) || f.Target != "/etc/vernemq/vernemq.conf" || f.Mode != 0o644 {
			t.Fatalf("node %s file entry %+v", n.Release.Name, f)
		}
	}

	// The release made from it is valid, deterministic and pinned by a golden file.
	enc, err := goldenRelease(r).Encode()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Render(loadFleet(t, "vernemq.toml"), fleetDir)
	if err != nil {
		t.Fatal(err)
	}
	enc2, err := goldenRelease(r2).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, enc2) {
		t.Fatal("rendering twice gave different releases")
	}
	golden := "../../schema/testdata/release/vernemq.toml"
	if *update {
		if err := os.WriteFile(golden, enc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, want) {
		t.Fatalf("release differs from %s (run go test -update if intended):\n%s", golden, enc)
	}
}

func TestRenderMissingVariable(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(fleetDir, "keys/cn.pub"), filepath.Join(dir, "cn.pub"))
	copyFile(t, filepath.Join(fleetDir, "keys/sg.pub"), filepath.Join(dir, "sg.pub"))
	must(t, os.WriteFile(filepath.Join(dir, "c.tmpl"), []byte("hook = {{.Vars.webhook_url}}\n"), 0o644))
	src := `
[service]
image = "vernemq/vernemq:2.0.1"
container = "vmq-{{.Node}}"
reload = { action = "restart" }
[[template]]
name = "vernemq.conf"
source = "c.tmpl"
target = "/etc/vernemq/vernemq.conf"
[attach]
driver = "none"
[[node]]
name = "cn"
region = "cn"
wave = 1
address = "10.0.0.1/24"
status_key = "cn.pub"
vars = { webhook_url = "http://x" }
[[node]]
name = "sg"
region = "sg"
wave = 1
address = "10.0.0.2/24"
status_key = "sg.pub"
`
	f, err := ParseFleet("fleet.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(f, dir)
	want := `render node "sg": template "vernemq.conf": variable "webhook_url" is not defined`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var uv *UndefinedVariableError
	if !errors.As(err, &uv) || uv.Name != "webhook_url" {
		t.Fatalf("not an UndefinedVariableError: %v", err)
	}
	if f.ImageName() != "vernemq-2.0.1" {
		t.Fatalf("image name %q", f.ImageName())
	}
}

func TestRenderRefusesEscape(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "fleet")
	must(t, os.Mkdir(sub, 0o755))
	copyFile(t, filepath.Join(fleetDir, "keys/cn.pub"), filepath.Join(sub, "cn.pub"))
	must(t, os.WriteFile(filepath.Join(dir, "secret"), []byte("s3cret"), 0o644))
	must(t, os.Symlink("../secret", filepath.Join(sub, "c.tmpl")))
	src := `
[service]
image = "vernemq/vernemq:2.0.1"
container = "vmq"
reload = { action = "none" }
[[template]]
name = "c"
source = "c.tmpl"
target = "/etc/c"
[attach]
driver = "weave"
[[node]]
name = "cn"
region = "cn"
wave = 1
address = "10.0.0.1/24"
status_key = "cn.pub"
`
	f, err := ParseFleet("fleet.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Render(f, sub); err == nil || !strings.Contains(err.Error(), `template "c"`) {
		t.Fatalf("symlink out of the fleet dir: got %v", err)
	}
}

func TestRenderBadContainerName(t *testing.T) {
	f := loadFleet(t, "vernemq.toml")
	f.Service.Container = "Vernemq {{.Node}}"
	if _, err := Render(f, fleetDir); err == nil || !strings.Contains(err.Error(), `render node "cn": container name`) {
		t.Fatalf("got %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, b, 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestParseFleetTemplateSyntax: schema leaves the syntax of a fleet's
// template strings to the renderer; ParseFleet refuses a bad one, naming it.
func TestParseFleetTemplateSyntax(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(fleetDir, "vernemq.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to, want string }{
		{`container = "vernemq-release-{{.Node}}-1"`, `container = "vernemq-release-{{.Node-1"`, "service: container"},
		{`"discovery-node={{.Peer}}"`, `"discovery-node={{.Peer}"`, "service: cluster: join argument"},
	} {
		bad := strings.Replace(string(data), c.from, c.to, 1)
		if bad == string(data) {
			t.Fatalf("%q not in vernemq.toml", c.from)
		}
		if _, err := schema.ParseFleet("fleet.toml", []byte(bad)); err != nil {
			t.Fatalf("schema.ParseFleet: %v (template syntax is the renderer's to check)", err)
		}
		_, err := ParseFleet("fleet.toml", []byte(bad))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseFleet with %s: %v, want an error naming %q", c.to, err, c.want)
		}
	}
}
