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
	suffix := randHex(3)
	imgPath, _ := bundlertest.WriteImage(t, filepath.Join(env.Dir, "img.tar"),
		imagetest.File{Path: "pingsrv", Mode: 0o755, Data: []byte("pingsrv, as the fake engine runs it")})
	eng := enginetest.NewFake()
	eng.ExecFunc = enginetest.PingsrvExec
	waves := map[string]int{"cn": 1, "sg": 2, "us": 3, "eu": 3}
	order := []string{"cn", "sg", "us", "eu"}
	fleetDir := filepath.Join(env.Dir, "fleet")
	must(t, os.MkdirAll(fleetDir, 0o755))
	agents := map[string]*agent.Agent{}
	logs := map[string]*bytes.Buffer{}
	var nodes strings.Builder
	for i, n := range order {
		k := bundlertest.NewKey(t, fleetDir, n)
		fmt.Fprintf(&nodes, "\n[[node]]\nname = %q\nregion = %q\nwave = %d\naddress = \"10.0.0.%d/24\"\nstatus_key = %q\n", n, n, waves[n], i+1, n+".pub")
		p := filepath.Join(env.Dir, "agent-"+n+".toml")
		must(t, os.WriteFile(p, []byte(fmt.Sprintf("remotes = [%q]\nroot = %q\nstate_dir = %q\nallowed_dirs = [%q]\n[[node]]\nname = %q\nkey = %q\n",
			env.Repo, env.Root, filepath.Join(env.Dir, "state-"+n), filepath.Join(env.Dir, "etc"), n, k.KeyPath)), 0o644))
		cfg, err := config.Load(p)
		must(t, err)
		logs[n] = &bytes.Buffer{}
		a, err := agent.New(cfg, agent.Options{Engine: eng, Logger: slog.New(slog.NewTextHandler(logs[n], nil))})
		must(t, err)
		defer a.Close()
		agents[n] = a
	}
	release := func(conf, health string) {
		must(t, os.WriteFile(filepath.Join(fleetDir, "conf.tmpl"), []byte(conf), 0o644))
		must(t, os.WriteFile(filepath.Join(fleetDir, "fleet.toml"), []byte(fmt.Sprintf(`[service]
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
`, suffix, health, filepath.Join(env.Dir, "etc"))+nodes.String()), 0o644))
		env.Cut(t, filepath.Join(fleetDir, "fleet.toml"), imgPath)
	}
	once := func(n string, want agent.Outcome) {
		t.Helper()
		out, err := agents[n].Once(ctx)
		if out != want || (want != agent.Failed && err != nil) {
			t.Fatalf("%s: once = %v, %v; want %v\n%s", n, out, err, want, logs[n])
		}
	}
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
	must(t, os.WriteFile(filepath.Join(fleetDir, "conf.tmpl"), []byte("v4 {{.Node}}\n"), 0o644))
	if _, err := env.Release.Release(ctx, bundler.ReleaseOptions{Fleet: filepath.Join(fleetDir, "fleet.toml"),
		Image: image.TarFile(imgPath), Signers: []signature.Signer{env.Key.Signer}, Now: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	once("us", agent.Nothing)
	once("eu", agent.Converged)
}
