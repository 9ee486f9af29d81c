package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/cli"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// stack is one release of a two-service node: "side" starts first, "app"
// depends on it. Images are tarball paths (host.image).
type stack struct {
	appImage, sideImage string
	appConf, sideConf   string
	appHealth           string // health argv of app (TOML array)
	appOnly             bool   // the node runs app alone (which then depends on nothing)
	network             string // both services' network (template), when set
}

// sideName is the side service's container.
func (h *host) sideName() string { return "pullship-test-" + h.node + "-side" }

// releaseStack cuts a release of a [[service]] fleet running s on the host's
// node.
func (h *host) releaseStack(s stack) {
	h.t.Helper()
	dir := filepath.Join(h.env.Dir, "stack")
	must(h.t, os.MkdirAll(dir, 0o755))
	must(h.t, os.WriteFile(filepath.Join(dir, "app.tmpl"), []byte(s.appConf), 0o644))
	must(h.t, os.WriteFile(filepath.Join(dir, "side.tmpl"), []byte(s.sideConf), 0o644))
	must(h.t, os.WriteFile(filepath.Join(dir, "node.pub"), h.key.PubPEM, 0o644))
	health := func(argv string) string {
		return "health = { command = " + argv + ", expect = \"pong\", timeout = \"5s\", retries = 2, interval = \"200ms\" }"
	}
	deps, only := `depends_on = ["side"]`, ""
	if s.appOnly {
		deps, only = "", `services = ["app"]`
	}
	if s.network != "" {
		deps += fmt.Sprintf("\nnetwork = %q", s.network)
	}
	fleet := fmt.Sprintf(`[[service]]
name = "app"
image = "pullship-test/ping:1"
container = "pullship-test-{{.Node}}"
%s
entrypoint = ["/pingsrv"]
reload = { action = "restart" }
%s

[[service]]
name = "side"
image = "pullship-test/side:1"
container = "pullship-test-{{.Node}}-side"
entrypoint = ["/pingsrv"]
reload = { action = "restart" }
%s
%s

[[template]]
name = "app.conf"
source = "app.tmpl"
target = %q
service = "app"

[[template]]
name = "side.conf"
source = "side.tmpl"
target = %q
service = "side"

[attach]
driver = "none"

[[node]]
name = %q
region = "test"
wave = 1
address = "10.0.0.1/24"
status_key = "node.pub"
%s
`, deps, health(s.appHealth), sideNetwork(s.network), health(`["/pingsrv", "ping"]`), filepath.Join(h.etc, "app", "app.conf"), filepath.Join(h.etc, "side", "side.conf"), h.node, only)
	h.fleet = filepath.Join(dir, "fleet.toml")
	must(h.t, os.WriteFile(h.fleet, []byte(fleet), 0o644))
	if _, err := h.env.Release.Release(context.Background(), bundler.ReleaseOptions{
		Fleet:   h.fleet,
		Images:  map[string]image.Source{"app": image.TarFile(s.appImage), "side": image.TarFile(s.sideImage)},
		Signers: []signature.Signer{h.env.Key.Signer},
	}); err != nil {
		h.t.Fatal(err)
	}
}

// sideNetwork is the side service's network line ("" without one).
func sideNetwork(network string) string {
	if network == "" {
		return ""
	}
	return fmt.Sprintf("network = %q", network)
}

func (h *host) side() engine.ContainerState {
	cs, found, err := h.eng.Inspect(context.Background(), h.sideName())
	if err != nil || !found {
		h.t.Fatalf("side container: found=%v err=%v", found, err)
	}
	return cs
}

func (h *host) sideConf() string {
	b, err := os.ReadFile(filepath.Join(h.etc, "side", "side.conf"))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// cleanupSide removes the side container a Docker host made.
func (h *host) cleanupSide() {
	if !h.docker {
		return
	}
	h.t.Cleanup(func() {
		ctx := context.Background()
		h.eng.Remove(ctx, h.sideName(), time.Second)
		h.eng.Remove(ctx, h.sideName()+engine.PrevSuffix, time.Second)
	})
}

// startOrder runs fn and returns the names of the containers started while
// it ran, in the order the engine reports them, once want starts are seen.
func (h *host) startOrder(want int, fn func()) []string {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _ := h.eng.Events(ctx)
	fn()
	var names []string
	deadline := time.After(30 * time.Second)
	for len(names) < want {
		select {
		case ev, ok := <-evs:
			if !ok {
				h.t.Fatalf("event stream ended after starts %v", names)
			}
			if ev.Action == "start" && strings.HasPrefix(ev.Name, "pullship-test-"+h.node) {
				names = append(names, ev.Name)
			}
		case <-deadline:
			h.t.Fatalf("saw starts %v, want %d", names, want)
		}
	}
	return names
}

// TestServicesApplyReloadRecreateRollback: a node of two services applies
// both in dependency order, a config change of one reloads only that one,
// a new image of one recreates only that one, and a failed health check of
// the second rolls both back (images, containers, files).
func TestServicesApplyReloadRecreateRollback(t *testing.T) { testServices(t, newHost(t)) }

// TestDockerServicesApplyReloadRecreateRollback is the same on the real
// engine.
func TestDockerServicesApplyReloadRecreateRollback(t *testing.T) {
	h := newDockerHost(t)
	h.cleanupSide()
	testServices(t, h)
}

func testServices(t *testing.T, h *host) {
	ping := `["/pingsrv", "ping"]`
	imgA, imgS := h.image("a"), h.image("s1")
	ctx := context.Background()

	// Release 1: both images loaded, side started before app.
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 1\n", sideConf: "side 1\n", appHealth: ping})
	var out agent.Outcome
	var err error
	order := h.startOrder(2, func() { out, err = h.once() })
	if err != nil || out != agent.Converged {
		t.Fatalf("first once: %v %v", out, err)
	}
	if order[0] != h.sideName() || order[1] != "pullship-test-"+h.node {
		t.Fatalf("start order %v: want side before app", order)
	}
	app1, side1 := h.container(), h.side()
	if !app1.Running || !side1.Running || app1.ImageID != h.images[0] || side1.ImageID != h.images[1] {
		t.Fatalf("after release 1: app %+v side %+v", app1, side1)
	}
	if h.conf() != "app 1\n" || h.sideConf() != "side 1\n" {
		t.Fatalf("files after release 1: %q %q", h.conf(), h.sideConf())
	}
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("second once: %v %v", out, err)
	}

	// Release 2: only side's file changes: side restarts, app is untouched.
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 1\n", sideConf: "side 2\n", appHealth: ping})
	plan := h.plan()
	if !strings.Contains(plan, "  service side: reload container "+h.sideName()+" (restart)\n") ||
		strings.Contains(plan, "service app: reload") || strings.Contains(plan, "recreate") ||
		!strings.Contains(plan, "  service app: check health: [/pingsrv ping]\n") {
		t.Fatalf("plan for a change of side's file:\n%s", plan)
	}
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("side config once: %v %v", out, err)
	}
	app2, side2 := h.container(), h.side()
	if side2.ID != side1.ID || !side2.StartedAt.After(side1.StartedAt) || h.sideConf() != "side 2\n" {
		t.Fatalf("side not reloaded: %s→%s started %v→%v conf %q", side1.ID[:12], side2.ID[:12], side1.StartedAt, side2.StartedAt, h.sideConf())
	}
	if app2.ID != app1.ID || !app2.StartedAt.Equal(app1.StartedAt) {
		t.Fatalf("app touched by a change of side's file: started %v→%v", app1.StartedAt, app2.StartedAt)
	}

	// Release 3: only app's image changes: app is recreated, side untouched.
	imgB := h.image("b")
	h.releaseStack(stack{appImage: imgB, sideImage: imgS, appConf: "app 1\n", sideConf: "side 2\n", appHealth: ping})
	if plan := h.plan(); !strings.Contains(plan, "  service app: load image ping-1 "+h.images[2]+"\n") ||
		!strings.Contains(plan, "  service app: recreate container pullship-test-"+h.node+" (previous kept for rollback)\n") ||
		strings.Contains(plan, "service side: re") {
		t.Fatalf("plan for a new image of app:\n%s", plan)
	}
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("app image once: %v %v", out, err)
	}
	app3, side3 := h.container(), h.side()
	if app3.ID == app2.ID || app3.ImageID != h.images[2] {
		t.Fatalf("app not recreated on its new image: %+v", app3)
	}
	if side3.ID != side2.ID || !side3.StartedAt.Equal(side2.StartedAt) {
		t.Fatalf("side touched by app's new image: started %v→%v", side2.StartedAt, side3.StartedAt)
	}
	if _, found, _ := h.eng.Inspect(ctx, "pullship-test-"+h.node+engine.PrevSuffix); found {
		t.Fatal("previous app container left behind")
	}

	// Release 4: side gets a new image and file, app a new file and a
	// failing health check. Side (first) is applied and healthy, app
	// fails: both go back.
	imgS2 := h.image("s2")
	h.releaseStack(stack{appImage: imgB, sideImage: imgS2, appConf: "app 4\n", sideConf: "side 4\n", appHealth: `["/pingsrv", "exit", "1"]`})
	out, err = h.once()
	if out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) || !strings.Contains(err.Error(), "service app: health check") {
		t.Fatalf("unhealthy once: %v %v", out, err)
	}
	app4, side4 := h.container(), h.side()
	if app4.ID != app3.ID || !app4.Running || side4.ID != side3.ID || !side4.Running || side4.ImageID != h.images[1] {
		t.Fatalf("after rollback: app %s (want %s) side %s (want %s) on %s", app4.ID[:12], app3.ID[:12], side4.ID[:12], side3.ID[:12], side4.ImageID)
	}
	if h.conf() != "app 1\n" || h.sideConf() != "side 2\n" {
		t.Fatalf("files after rollback: %q %q", h.conf(), h.sideConf())
	}
	for _, name := range []string{"pullship-test-" + h.node, h.sideName()} {
		if _, found, _ := h.eng.Inspect(ctx, name+engine.PrevSuffix); found {
			t.Fatalf("previous container of %s left behind after rollback", name)
		}
		res, err := h.eng.Exec(ctx, name, []string{"/pingsrv", "ping"}, 5*time.Second)
		if err != nil || !strings.Contains(string(res.Output), "pong") {
			t.Fatalf("%s does not answer after rollback: %q %v", name, res.Output, err)
		}
	}
	// Not retried; the node's status names the failing service.
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("after rollback once: %v %v", out, err)
	}
	st := h.status()
	if st.FailedVersion != 4 || !strings.Contains(st.LastError, "service app: health check") || len(st.Services) != 2 {
		t.Fatalf("status after rollback: failed %d error %q services %+v", st.FailedVersion, st.LastError, st.Services)
	}
	// Reported in start order, as release 3 (the one running) has them:
	// side on its previous image, and both healthy by release 3's checks
	// (release 4's check of app is the failing one).
	side, app := st.Services[0], st.Services[1]
	if side.Name != "side" || app.Name != "app" || side.Container.State != "running" || app.Container.State != "running" ||
		!side.Health.OK || side.Image != h.images[1] || app.Image != h.images[2] || !app.Health.OK || !st.Health.OK || st.AppliedVersion != 3 {
		t.Errorf("status after rollback: applied %d health %+v services %+v", st.AppliedVersion, st.Health, st.Services)
	}
}

// status is the report the host's node would send now.
func (h *host) status() *schema.Status {
	h.t.Helper()
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	var b bytes.Buffer
	must(h.t, a.Status(context.Background(), &b))
	st, err := schema.ParseStatus("status", b.Bytes())
	if err != nil {
		h.t.Fatalf("%v\n%s", err, b.String())
	}
	return st
}

// plan is what pullship-agent plan prints now.
func (h *host) plan() string {
	h.t.Helper()
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	var b bytes.Buffer
	must(h.t, a.Plan(context.Background(), &b))
	return b.String()
}

// TestServicesDropped: a release the node's side service is no longer in
// stops it first and removes it once app is healthy; when app is not, the
// rollback starts side again.
func TestServicesDropped(t *testing.T) { testServicesDropped(t, newHost(t)) }

// TestDockerServicesDropped is the same on the real engine.
func TestDockerServicesDropped(t *testing.T) {
	h := newDockerHost(t)
	h.cleanupSide()
	testServicesDropped(t, h)
}

func testServicesDropped(t *testing.T, h *host) {
	ping := `["/pingsrv", "ping"]`
	ctx := context.Background()
	imgA, imgS := h.image("a"), h.image("s1")
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 1\n", sideConf: "side 1\n", appHealth: ping})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("first once: %v %v", out, err)
	}
	side1 := h.side()

	// Without side, and app unhealthy: side comes back as it was.
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 2\n", sideConf: "side 1\n", appHealth: `["/pingsrv", "exit", "1"]`, appOnly: true})
	if out, err := h.once(); out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
		t.Fatalf("unhealthy once without side: %v %v", out, err)
	}
	if s := h.side(); s.ID != side1.ID || !s.Running || h.conf() != "app 1\n" {
		t.Fatalf("after rollback: side %+v (want %s running), app conf %q", s, side1.ID[:12], h.conf())
	}

	// Without side, healthy: side is gone, previous copy included.
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 3\n", sideConf: "side 1\n", appHealth: ping, appOnly: true})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("once without side: %v %v", out, err)
	}
	for _, name := range []string{h.sideName(), h.sideName() + engine.PrevSuffix} {
		if _, found, err := h.eng.Inspect(ctx, name); err != nil || found {
			t.Fatalf("container %s still there (err %v) after a release without its service", name, err)
		}
	}
	if c := h.container(); !c.Running || h.conf() != "app 3\n" {
		t.Fatalf("app after side left: %+v conf %q", c, h.conf())
	}
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("second once without side: %v %v", out, err)
	}
}

// TestServicesStatusAfterRollback: once a release that changed a service's
// health check failed and was rolled back, the node's status follows the
// release it runs again (its services and health checks), in the report
// the failing pass sends, in the next pass's, in pullship-agent status and
// in pullship status; and so it does from state that did not record the
// running release's commit.
func TestServicesStatusAfterRollback(t *testing.T) {
	h := newHost(t)
	ping := `["/pingsrv", "ping"]`
	imgA, imgS := h.image("a"), h.image("s1")
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 1\n", sideConf: "side 1\n", appHealth: ping})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("first once: %v %v", out, err)
	}
	// Release 2 changes app's health check (to one that fails) and file.
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 2\n", sideConf: "side 1\n", appHealth: `["/pingsrv", "exit", "3"]`})
	if out, err := h.once(); out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
		t.Fatalf("unhealthy once: %v %v", out, err)
	}
	if h.conf() != "app 1\n" {
		t.Fatalf("app.conf after rollback: %q", h.conf())
	}
	check := func(what string, st *schema.Status) {
		t.Helper()
		if st == nil {
			t.Fatalf("%s: no report", what)
		}
		if st.AppliedVersion != 1 || st.TargetVersion != 2 || st.FailedVersion != 2 ||
			!strings.Contains(st.LastError, "release 2: service app: health check: /pingsrv exit 3 exited 3") {
			t.Errorf("%s: applied %d target %d failed %d error %q", what, st.AppliedVersion, st.TargetVersion, st.FailedVersion, st.LastError)
		}
		// Release 1's checks: both services healthy.
		if !st.Health.OK || st.Health.Output != "" || len(st.Services) != 2 ||
			st.Services[0].Name != "side" || !st.Services[0].Health.OK ||
			st.Services[1].Name != "app" || !st.Services[1].Health.OK || st.Services[1].Container.State != "running" {
			t.Errorf("%s: health %+v services %+v", what, st.Health, st.Services)
		}
	}
	check("report of the failing pass", h.reported())
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("once after rollback: %v %v", out, err)
	}
	check("report of the next pass", h.reported())
	check("pullship-agent status", h.status())

	// pullship status says which service failed, why, and that release 1 runs.
	var stdout, stderr bytes.Buffer
	code := cli.Main(cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }},
		[]string{"status", "--repo", h.env.Repo, "--root", h.env.Root, "--cache", filepath.Join(h.env.Dir, "cli-cache")})
	lines := map[string]bool{}
	var nodeLine string
	for _, l := range strings.Split(stdout.String(), "\n") {
		f := strings.Join(strings.Fields(l), " ")
		lines[f] = true
		if nodeLine == "" && strings.HasPrefix(f, h.node+" ") {
			nodeLine = f
		}
	}
	if code != 0 || !strings.HasPrefix(nodeLine, h.node+" test 2 1 (!) failed 2 ok/running ") ||
		!strings.Contains(nodeLine, " release 2: service app: health check: /pingsrv exit 3 exited 3") ||
		!lines[h.node+" app "+h.images[0][7:19]+" ok/running -"] || !lines[h.node+" side "+h.images[1][7:19]+" ok/running -"] {
		t.Fatalf("pullship status: %d %q %v\n%s\n%s", code, nodeLine, h.images, stdout.String(), stderr.String())
	}

	// State written by an agent that did not record the commit of the
	// release a node runs: it is found in the release history.
	s, err := state.Open(h.cfg.StateDir)
	must(t, err)
	sv, err := s.Load()
	must(t, err)
	if sv.Nodes[h.node].Commit == "" {
		t.Fatal("state records no commit for the node's running release")
	}
	sv.Nodes[h.node].Commit = ""
	must(t, s.Save(sv))
	must(t, s.Close())
	check("pullship-agent status from state without the commit", h.status())
}

// reported is the node's newest status report on the release repository,
// as pullship status reads it.
func (h *host) reported() *schema.Status {
	h.t.Helper()
	r, err := bundler.Open(context.Background(), h.env.Repo, filepath.Join(h.env.Dir, "status-cache", randHex(4)), repo.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	f, err := r.FleetStatus(context.Background(), h.env.Pinned, time.Now(), bundler.FleetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, n := range f.Nodes {
		if n.Node == h.node {
			return n.Status
		}
	}
	return nil
}

// TestServicesNetwork: services given a network (one per node, templated)
// are recreated on it, the network made when missing; a pass after that
// finds nothing to do.
func TestServicesNetwork(t *testing.T) { testServicesNetwork(t, newHost(t)) }

// TestDockerServicesNetwork is the same on the real engine.
func TestDockerServicesNetwork(t *testing.T) {
	h := newDockerHost(t)
	t.Cleanup(func() {
		// The containers on the network go first (the host's cleanup,
		// registered before, runs after this one).
		for _, name := range []string{"pullship-test-" + h.node, h.sideName()} {
			h.eng.Remove(context.Background(), name, time.Second)
		}
		if out, err := exec.Command("docker", "network", "rm", "pullship-test-net-"+h.node).CombinedOutput(); err != nil {
			t.Errorf("remove the node's network: %v\n%s", err, out)
		}
	})
	h.cleanupSide()
	testServicesNetwork(t, h)
}

func testServicesNetwork(t *testing.T, h *host) {
	ping := `["/pingsrv", "ping"]`
	ctx := context.Background()
	imgA, imgS := h.image("a"), h.image("s1")
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 1\n", sideConf: "side 1\n", appHealth: ping})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("first once: %v %v", out, err)
	}
	app1, side1 := h.container(), h.side()
	net := "pullship-test-net-" + h.node
	h.releaseStack(stack{appImage: imgA, sideImage: imgS, appConf: "app 1\n", sideConf: "side 1\n", appHealth: ping, network: "pullship-test-net-{{.Node}}"})
	if plan := h.plan(); strings.Count(plan, "recreate container") != 2 {
		t.Fatalf("plan for a new network of both services:\n%s", plan)
	}
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("once with a network: %v %v", out, err)
	}
	app2, side2 := h.container(), h.side()
	if app2.ID == app1.ID || side2.ID == side1.ID {
		t.Fatal("containers not recreated on their network")
	}
	for _, name := range []string{"pullship-test-" + h.node, h.sideName()} {
		if _, ok, err := h.eng.Connected(ctx, name, net); !ok || err != nil {
			t.Fatalf("container %s not on network %s: %v", name, net, err)
		}
	}
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("once after: %v %v", out, err)
	}
}
