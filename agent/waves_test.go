package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine/enginetest"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
)

// TestWaves: four nodes in three waves (cn; sg; us+eu). A wave starts only
// when every node of the earlier waves reports, signed, that it is healthy
// on the release; a release that fails on cn halts the rest; a newer
// release supersedes the halted one.
// The agents share one fake engine, as if the nodes were on one host.
func TestWaves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := bundlertest.NewEnv(t)
	order := []string{"cn", "sg", "us", "eu"}
	f := newWaveFleet(t, env, env.Repo, []waveNode{{name: "cn", wave: 1}, {name: "sg", wave: 2}, {name: "us", wave: 3}, {name: "eu", wave: 3}})
	release, logs := f.release, f.logs
	once := func(n string, want agent.Outcome) { t.Helper(); f.once(n, want) }
	ping := `["/pingsrv", "ping"]`

	release("v1 {{.Node}}\n", ping)
	once("us", agent.Nothing) // cn and sg have not applied release 1
	once("eu", agent.Nothing)
	once("sg", agent.Nothing) // cn has not
	if !strings.Contains(logs["sg"].String(), "node cn (wave 1) has not reported yet") {
		t.Fatalf("sg's log does not say why it waits:\n%s", logs["sg"])
	}
	once("cn", agent.Converged)
	once("us", agent.Nothing) // sg still has not
	once("sg", agent.Converged)
	once("us", agent.Converged)
	once("eu", agent.Converged)

	// A release that fails on cn halts every later wave.
	release("v2 {{.Node}}\n", `["/pingsrv", "exit", "1"]`)
	once("cn", agent.Failed)
	once("sg", agent.Nothing)
	once("eu", agent.Nothing)
	if !strings.Contains(logs["eu"].String(), "wave 3 waits: node cn (wave 1) is not yet healthy on release 2") &&
		!strings.Contains(logs["eu"].String(), "halted") {
		t.Fatalf("eu's log does not say it is held:\n%s", logs["eu"])
	}
	if !strings.Contains(logs["sg"].String(), "wave 2 halted: node cn (wave 1) failed release 2") {
		t.Fatalf("sg's log does not say the rollout halted:\n%s", logs["sg"])
	}

	// A newer release supersedes the halted one.
	release("v3 {{.Node}}\n", ping)
	for _, n := range order {
		once(n, agent.Converged)
	}

	// An emergency override (release --now eu) skips eu's gate.
	must(t, os.WriteFile(filepath.Join(f.dir, "conf.tmpl"), []byte("v4 {{.Node}}\n"), 0o644))
	if _, err := env.Release.Release(ctx, bundler.ReleaseOptions{Fleet: filepath.Join(f.dir, "fleet.toml"),
		Image: image.TarFile(f.img), Signers: []signature.Signer{env.Key.Signer}, Now: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	once("us", agent.Nothing)
	once("eu", agent.Converged)
}

// waveNode is a node of a waveFleet: its name, region (default: its name)
// and wave, and what its agent.toml holds besides the release remote, the
// root, its state and its node key (status tables, say).
type waveNode struct {
	name, region string
	wave         int
	tables       string
}

// waveFleet is a fleet of nodes whose agents share one fake engine, as if
// the nodes were on one host, each polling one release remote. Its
// releases run one service whose health is a pingsrv command.
type waveFleet struct {
	t      *testing.T
	env    *bundlertest.Env
	dir    string // fleet.toml and its templates
	img    string // the image tarball released
	suffix string // of container names
	nodes  string // fleet.toml's [[node]] tables
	eng    *enginetest.Fake
	agents map[string]*agent.Agent
	logs   map[string]*bytes.Buffer
	keys   map[string]*bundlertest.Key
}

func newWaveFleet(t *testing.T, env *bundlertest.Env, remote string, nodes []waveNode) *waveFleet {
	t.Helper()
	f := &waveFleet{t: t, env: env, dir: filepath.Join(env.Dir, "fleet"), suffix: randHex(3), eng: enginetest.NewFake(),
		agents: map[string]*agent.Agent{}, logs: map[string]*bytes.Buffer{}, keys: map[string]*bundlertest.Key{}}
	f.img, _ = bundlertest.WriteImage(t, filepath.Join(env.Dir, "img.tar"),
		imagetest.File{Path: "pingsrv", Mode: 0o755, Data: []byte("pingsrv, as the fake engine runs it")})
	f.eng.ExecFunc = enginetest.PingsrvExec
	must(t, os.MkdirAll(f.dir, 0o755))
	var tables strings.Builder
	for i, n := range nodes {
		region := n.region
		if region == "" {
			region = n.name
		}
		k := bundlertest.NewKey(t, f.dir, n.name)
		f.keys[n.name] = k
		fmt.Fprintf(&tables, "\n[[node]]\nname = %q\nregion = %q\nwave = %d\naddress = \"10.0.0.%d/24\"\nstatus_key = %q\n", n.name, region, n.wave, i+1, n.name+".pub")
		p := filepath.Join(env.Dir, "agent-"+n.name+".toml")
		must(t, os.WriteFile(p, []byte(fmt.Sprintf("remotes = [%q]\nroot = %q\nstate_dir = %q\nallowed_dirs = [%q]\n\n%s\n[[node]]\nname = %q\nkey = %q\n",
			remote, env.Root, filepath.Join(env.Dir, "state-"+n.name), filepath.Join(env.Dir, "etc"), n.tables, n.name, k.KeyPath)), 0o644))
		cfg, err := config.Load(p)
		must(t, err)
		f.logs[n.name] = &bytes.Buffer{}
		a, err := agent.New(cfg, agent.Options{Engine: f.eng, Logger: slog.New(slog.NewTextHandler(f.logs[n.name], nil))})
		must(t, err)
		t.Cleanup(func() { a.Close() })
		f.agents[n.name] = a
	}
	f.nodes = tables.String()
	return f
}

// release cuts a release whose app.conf template is conf and whose
// service's health command is health (a TOML array).
func (f *waveFleet) release(conf, health string) {
	f.t.Helper()
	must(f.t, os.WriteFile(filepath.Join(f.dir, "conf.tmpl"), []byte(conf), 0o644))
	must(f.t, os.WriteFile(filepath.Join(f.dir, "fleet.toml"), []byte(fmt.Sprintf(`[service]
image = "pullship-test/ping:1"
container = "pullship-test-{{.Node}}-%s"
entrypoint = ["/pingsrv"]
reload = { action = "restart" }
health = { command = %s, expect = "pong", timeout = "5s" }

[[template]]
name = "app.conf"
source = "conf.tmpl"
target = "%s/{{.Node}}/app.conf"

[attach]
driver = "none"
`, f.suffix, health, filepath.Join(f.env.Dir, "etc"))+f.nodes), 0o644))
	f.env.Cut(f.t, filepath.Join(f.dir, "fleet.toml"), f.img)
}

// once runs node n's agent once and wants the outcome want (and no error
// unless want is Failed).
func (f *waveFleet) once(n string, want agent.Outcome) {
	f.t.Helper()
	out, err := f.agents[n].Once(context.Background())
	if out != want || (want != agent.Failed && err != nil) {
		f.t.Fatalf("%s: once = %v, %v; want %v\n%s", n, out, err, want, f.logs[n])
	}
}
