package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/agent/report"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

func run(t *testing.T, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}, args)
	return code, out.String(), errb.String()
}

func TestStatusCommand(t *testing.T) {
	e := bundlertest.NewEnv(t)
	dir := filepath.Join(e.Dir, "fleet")
	fleet := bundlertest.WriteFleet(t, dir, bundlertest.Fleet{Image: "pullship-test/app:1", Template: "x\n", Target: "/etc/app/app.conf",
		Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}, {Name: "sg", Region: "sg", Address: "10.0.0.2/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Size: 100, Content: func() io.Reader { return imagetest.Random(1, 100) }})
	e.Cut(t, fleet, img)
	cnKey, err := os.ReadFile(filepath.Join(dir, "status-cn.key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := schema.LoadPrivateKey("cn.key", cnKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	push := func(node string, st *schema.Status) {
		store, err := repo.Init(filepath.Join(e.Dir, "agent-"+node))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := report.New(node, signer, store) // cn's key for both
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Commit(st); err != nil {
			t.Fatal(err)
		}
		if err := rep.Flush(context.Background(), e.Release.Remote); err != nil {
			t.Fatal(err)
		}
	}
	st := func(node string) *schema.Status {
		return &schema.Status{Node: node, Region: node, Time: now, TargetVersion: 1, AppliedVersion: 1,
			LastError: "boom\x1b[2J", Container: schema.StatusContainer{State: "running"},
			Network: schema.StatusNetwork{Driver: schema.DriverWeave, Address: "10.0.0.1/24", Attached: true},
			Health:  schema.StatusHealth{OK: true},
			Cluster: schema.StatusCluster{Joined: true, Members: []schema.StatusMember{{Node: "VerneMQ@10.0.0.1", Running: true}}}}
	}
	push("cn", st("cn"))

	cache := filepath.Join(e.Dir, "cli-cache")
	code, out, stderr := run(t, "status", "--repo", e.Repo, "--root", e.Root, "--cache", cache)
	if code != 0 || !strings.Contains(out, "10.0.0.1/24 attached") || !strings.Contains(out, "MISSING") ||
		!strings.Contains(out, "who sees whom") || strings.Contains(out, "\x1b") {
		t.Fatalf("status: %d\n%s\n%s", code, out, stderr)
	}

	push("sg", st("sg")) // signed with cn's key
	code, out, stderr = run(t, "status", "--repo", e.Repo, "--root", e.Root, "--cache", cache)
	if code != ExitRefused || !strings.Contains(out, "FORGED") || !strings.Contains(stderr, "1 report(s) forged") {
		t.Fatalf("status with a forged report: %d\n%s\n%s", code, out, stderr)
	}

	t.Logf("%s", out)
	code, out, _ = run(t, "status", "--repo", e.Repo, "--root", e.Root, "--cache", cache, "--json")
	var f bundler.Fleet
	if err := json.Unmarshal([]byte(out), &f); err != nil || code != ExitRefused {
		t.Fatalf("--json: %d %v\n%s", code, err, out)
	}
	if len(f.Nodes) != 2 || f.Nodes[0].State != bundle.ReportOK || f.Nodes[1].State != bundle.ReportForged || f.Nodes[1].Status != nil {
		t.Fatalf("--json nodes: %+v", f.Nodes)
	}

	if code, _, _ := run(t, "status", "--repo", e.Repo); code != ExitUsage {
		t.Fatalf("no --root: exit %d", code)
	}
}

// A node of several services: the table lists each service's image,
// container state and health; --json carries them; the who-sees-whom
// matrix still covers the clustered service.
func TestStatusCommandServices(t *testing.T) {
	e := bundlertest.NewEnv(t)
	dir := filepath.Join(e.Dir, "fleet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key := bundlertest.NewKey(t, dir, "cn")
	fleet := filepath.Join(dir, "fleet.toml")
	if err := os.WriteFile(fleet, []byte(`[[service]]
name = "broker"
image = "example/broker:1"
container = "broker-{{.Node}}"
depends_on = ["hook"]
reload = { action = "restart" }
cluster = { show = ["vmq-admin", "cluster", "show"], format = "vmq-json", join = ["join", "{{.Peer}}"], peer = "VerneMQ@{{.Address}}" }

[[service]]
name = "hook"
image = "example/hook:1"
container = "hook-{{.Node}}"
reload = { action = "restart" }

[attach]
driver = "weave"

[[node]]
name = "cn"
region = "cn"
wave = 1
address = "10.0.0.1/24"
status_key = "cn.pub"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "b.tar"), imagetest.File{Path: "broker", Data: []byte("b")})
	h, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "h.tar"), imagetest.File{Path: "hook", Data: []byte("h")})
	if _, err := e.Release.Release(context.Background(), bundler.ReleaseOptions{Fleet: fleet,
		Images: map[string]image.Source{"broker": image.TarFile(b), "hook": image.TarFile(h)}, Signers: []signature.Signer{e.Key.Signer}}); err != nil {
		t.Fatal(err)
	}
	store, err := repo.Init(filepath.Join(e.Dir, "agent-cn"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := report.New("cn", key.Signer, store)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	img := "sha256:" + strings.Repeat("ab", 32)
	st := &schema.Status{Node: "cn", Region: "cn", Time: now, TargetVersion: 1, AppliedVersion: 1, Image: img,
		Container: schema.StatusContainer{State: "running"},
		Network:   schema.StatusNetwork{Driver: schema.DriverWeave, Address: "10.0.0.1/24", Attached: true},
		Health:    schema.StatusHealth{Output: "service hook: container exited"},
		Cluster:   schema.StatusCluster{Joined: true, Members: []schema.StatusMember{{Node: "VerneMQ@10.0.0.1", Running: true}}},
		Services: []schema.StatusService{
			{Name: "hook", Container: schema.StatusContainer{State: "exited"}, Health: schema.StatusHealth{Output: "gone\x1b[2J"}},
			{Name: "broker", Image: img, Container: schema.StatusContainer{State: "running"}, Health: schema.StatusHealth{OK: true}},
		}}
	if err := rep.Commit(st); err != nil {
		t.Fatal(err)
	}
	if err := rep.Flush(context.Background(), e.Release.Remote); err != nil {
		t.Fatal(err)
	}

	cache := filepath.Join(e.Dir, "cli-cache")
	code, out, stderr := run(t, "status", "--repo", e.Repo, "--root", e.Root, "--cache", cache)
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	if code != 0 || !lines["cn hook - fail/exited gone\\x1b[2J"] || !lines["cn broker abababababab ok/running -"] ||
		!strings.Contains(out, "who sees whom") || strings.Contains(out, "\x1b") {
		t.Fatalf("status: %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = run(t, "status", "--repo", e.Repo, "--root", e.Root, "--cache", cache, "--json")
	var f bundler.Fleet
	if err := json.Unmarshal([]byte(out), &f); err != nil || code != 0 {
		t.Fatalf("--json: %d %v\n%s", code, err, out)
	}
	if s := f.Nodes[0].Status; s == nil || len(s.Services) != 2 || s.Services[0].Name != "hook" || s.Services[1].Image != img {
		t.Fatalf("--json services: %+v", f.Nodes[0].Status)
	}
	if len(f.Matrix.Rows) != 1 || f.Matrix.Columns[0] != "cn" {
		t.Fatalf("matrix %+v", f.Matrix)
	}
}
