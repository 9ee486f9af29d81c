package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/engine/enginetest"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
)

// host is one test host: a release repository, an agent, and the fake
// engine (newHost) or the real one (newDockerHost).
type host struct {
	t       *testing.T
	key     *bundlertest.Key // the node's status key
	env     *bundlertest.Env
	node    string
	etc     string // allowed dir
	fleet   string
	cfg     *config.Config
	eng     engine.Engine
	fake    *enginetest.Fake // the engine, on a fake host
	docker  bool             // the engine is the real one
	pingsrv []byte           // the program of the host's images
	images  []string
	log     bytes.Buffer
}

var (
	pingsrvMu  sync.Mutex
	pingsrvBin []byte
)

// pingsrv builds the test images' program once for the package.
func pingsrv(t *testing.T) []byte {
	pingsrvMu.Lock()
	defer pingsrvMu.Unlock()
	if pingsrvBin == nil {
		pingsrvBin = enginetest.Pingsrv(t)
	}
	return pingsrvBin
}

// newHost is a host on the fake engine, for the agent's decisions; the test
// runs in parallel with the other such tests.
func newHost(t *testing.T) *host {
	t.Parallel()
	f := enginetest.NewFake()
	f.ExecFunc = enginetest.PingsrvExec
	// The fake runs no program: the image only has to hold one by the name.
	h := setupHost(t, f, []byte("pingsrv, as the fake engine runs it"))
	h.fake = f
	return h
}

// newDockerHost is a host on the real engine, for what only it can show:
// the image loaded, the container created and run, exec, events, attach.
// It removes the containers and images it made.
func newDockerHost(t *testing.T) *host {
	enginetest.RequireDocker(t)
	eng, err := engine.NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	h := setupHost(t, eng, pingsrv(t))
	h.docker = true
	t.Cleanup(func() {
		ctx := context.Background()
		name := "pullship-test-" + h.node
		eng.Remove(ctx, name, time.Second)
		eng.Remove(ctx, name+engine.PrevSuffix, time.Second)
		for _, id := range h.images {
			eng.RemoveImage(ctx, id)
		}
		eng.Close()
	})
	return h
}

func setupHost(t *testing.T, eng engine.Engine, pingsrv []byte) *host {
	h := &host{t: t, env: bundlertest.NewEnv(t), node: "n" + randHex(4), eng: eng, pingsrv: pingsrv}
	h.etc = filepath.Join(h.env.Dir, "etc")
	h.key = bundlertest.NewKey(t, h.env.Dir, "node")
	cfgPath := filepath.Join(h.env.Dir, "agent.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`remotes = [%q]
root = %q
state_dir = %q
allowed_dirs = [%q]

[[node]]
name = %q
key = "node.key"
`, h.env.Repo, h.env.Root, filepath.Join(h.env.Dir, "state"), h.etc, h.node)), 0o644))
	var err error
	if h.cfg, err = config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", h.log.String())
		}
	})
	return h
}

// openAgent opens an agent on cfg. A state directory an agent just closed
// can look locked for a moment: a child process that a parallel test forks
// holds a copy of the lock's descriptor until it execs. The wait ends when
// the lock is free.
func openAgent(t *testing.T, cfg *config.Config, o agent.Options) *agent.Agent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := agent.New(cfg, o)
		if err == nil {
			return a
		}
		if !errors.Is(err, state.ErrLocked) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// image writes a pingsrv image whose content differs by variant.
func (h *host) image(variant string) string {
	p := filepath.Join(h.env.Dir, "img-"+variant+".tar")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p, id := bundlertest.WriteImage(h.t, filepath.Join(h.env.Dir, "img-"+variant+".tar"),
		imagetest.File{Path: "pingsrv", Mode: 0o755, Data: h.pingsrv},
		imagetest.File{Path: "variant", Data: []byte(variant)})
	h.images = append(h.images, id)
	return p
}

// release cuts a release of conf with the health command health.
func (h *host) release(img, conf string, health string) {
	h.fleet = bundlertest.WriteFleet(h.t, filepath.Join(h.env.Dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/ping:1", Template: conf, Target: filepath.Join(h.etc, "app", "app.conf"),
		Nodes:     []bundlertest.Node{{Name: h.node, Region: "test", Address: "10.0.0.1/24"}},
		StatusKey: h.key.PubPEM,
		Extra:     "entrypoint = [\"/pingsrv\"]\nhealth = { command = " + health + ", expect = \"pong\", timeout = \"5s\", retries = 2, interval = \"200ms\" }\n",
	})
	h.env.Cut(h.t, h.fleet, img)
}

func (h *host) once() (agent.Outcome, error) {
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	return a.Once(context.Background())
}

func (h *host) container() engine.ContainerState {
	cs, found, err := h.eng.Inspect(context.Background(), "pullship-test-"+h.node)
	if err != nil || !found {
		h.t.Fatalf("container: found=%v err=%v", found, err)
	}
	return cs
}

func (h *host) conf() string {
	b, err := os.ReadFile(filepath.Join(h.etc, "app", "app.conf"))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// TestApplyReloadRecreateRollback: a first release is applied; a change of
// config only reloads the container; a new image recreates it; a release
// whose health check fails is rolled back and not retried; the images no
// node needs any more are removed, the one before kept for a rollback.
func TestApplyReloadRecreateRollback(t *testing.T) { testApply(t, newHost(t)) }

// TestDockerApplyReloadRecreateRollback is the same on the real engine:
// images loaded, containers created, renamed and restarted, health checks
// run by exec, as Docker does them.
func TestDockerApplyReloadRecreateRollback(t *testing.T) { testApply(t, newDockerHost(t)) }

func testApply(t *testing.T, h *host) {
	ping := `["/pingsrv", "ping"]`

	// Release 1: image loaded, container running, files byte-identical.
	h.release(h.image("a"), "version = 1\nnode = {{.Node}}\n", ping)
	out, err := h.once()
	if err != nil || out != agent.Converged {
		t.Fatalf("first once: %v %v", out, err)
	}
	c1 := h.container()
	if !c1.Running || c1.ImageID != h.images[0] {
		t.Fatalf("container after release 1: %+v", c1)
	}
	if got, want := h.conf(), "version = 1\nnode = "+h.node+"\n"; got != want {
		t.Fatalf("conf %q, want %q", got, want)
	}
	// A second pass does nothing.
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("second once: %v %v", out, err)
	}

	// Release 2, config only: reloaded (restart), not recreated.
	h.release(h.image("a"), "version = 2\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("config-only once: %v %v", out, err)
	}
	c2 := h.container()
	if c2.ID != c1.ID || !c2.StartedAt.After(c1.StartedAt) || h.conf() != "version = 2\n" {
		t.Fatalf("config-only release: container %s→%s started %v→%v conf %q", c1.ID[:12], c2.ID[:12], c1.StartedAt, c2.StartedAt, h.conf())
	}

	// Release 3, new image: the container is recreated on it.
	h.release(h.image("b"), "version = 3\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("new image once: %v %v", out, err)
	}
	c3 := h.container()
	if c3.ID == c2.ID || c3.ImageID != h.images[1] {
		t.Fatalf("new image: container %+v", c3)
	}
	if _, found, _ := h.eng.Inspect(context.Background(), "pullship-test-"+h.node+engine.PrevSuffix); found {
		t.Fatal("previous container left behind after a healthy upgrade")
	}
	// Image a is kept for a rollback: the one before it is what goes.
	if has, _ := h.eng.HasImage(context.Background(), h.images[0]); !has {
		t.Fatal("the previous image was removed")
	}

	// Release 4, new image whose health check fails: rolled back.
	h.release(h.image("c"), "version = 4\n", `["/pingsrv", "exit", "1"]`)
	out, err = h.once()
	if out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
		t.Fatalf("unhealthy once: %v %v", out, err)
	}
	c4 := h.container()
	if c4.ID != c3.ID || !c4.Running || h.conf() != "version = 3\n" {
		t.Fatalf("after rollback: container %s (want %s) running=%v conf %q", c4.ID[:12], c3.ID[:12], c4.Running, h.conf())
	}
	res, err := h.eng.Exec(context.Background(), c4.Name, []string{"/pingsrv", "ping"}, 5*time.Second)
	if err != nil || !strings.Contains(string(res.Output), "pong") {
		t.Fatalf("previous container does not answer: %q %v", res.Output, err)
	}
	// Not retried until a newer release.
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("after rollback once: %v %v", out, err)
	}

	// Release 5, image c and healthy: b is kept for a rollback, a goes.
	h.release(h.image("c"), "version = 5\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 5 once: %v %v", out, err)
	}
	ctx := context.Background()
	if has, _ := h.eng.HasImage(ctx, h.images[1]); !has {
		t.Fatal("image b, kept for a rollback, was removed")
	}
	if has, _ := h.eng.HasImage(ctx, h.images[0]); has {
		t.Fatal("image a, needed by no node, is still there")
	}
}
