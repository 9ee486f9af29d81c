package agent_test

import (
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

	"github.com/pullship/pullship/bundler/shared/bundle"

	dto "github.com/prometheus/client_model/go"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// setRemotes rewrites the host's agent config with remotes, in order.
func (h *host) setRemotes(remotes ...string) {
	h.t.Helper()
	var q []string
	for _, r := range remotes {
		q = append(q, fmt.Sprintf("%q", r))
	}
	p := filepath.Join(h.env.Dir, "agent.toml")
	must(h.t, os.WriteFile(p, []byte(fmt.Sprintf(`remotes = [%s]
root = %q
state_dir = %q
allowed_dirs = [%q]

[[node]]
name = %q
key = "node.key"
`, strings.Join(q, ", "), h.env.Root, filepath.Join(h.env.Dir, "state"), h.etc, h.node)), 0o644))
	cfg, err := config.Load(p)
	if err != nil {
		h.t.Fatal(err)
	}
	h.cfg = cfg
}

// onceWith runs one pass with metrics the test can read; the log of this
// pass alone is returned (it is also appended to h.log).
func (h *host) onceWith(m *agent.Metrics) (agent.Outcome, string, error) {
	var buf strings.Builder
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(&teeWriter{&buf, &h.log}, nil))})
	defer a.Close()
	out, err := a.Once(context.Background())
	return out, buf.String(), err
}

type teeWriter struct {
	a, b interface{ Write([]byte) (int, error) }
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.a.Write(p)
	return w.b.Write(p)
}

// mirrorRepo runs pullship mirror SRC DST with its own cache per pair.
func (h *host) mirror(src, dst string) *bundler.MirrorResult {
	h.t.Helper()
	ctx := context.Background()
	r, err := bundler.Open(ctx, src, filepath.Join(h.env.Dir, "mirror-cache", strings.NewReplacer("/", "_", ":", "_").Replace(src+dst)), repo.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	to, err := bundler.OpenMirrorTarget(ctx, dst, repo.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := r.Mirror(ctx, to, bundler.MirrorOptions{})
	if err != nil {
		h.t.Fatalf("mirror %s → %s: %v", src, dst, err)
	}
	return res
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func refOf(t *testing.T, bare, ref string) string {
	t.Helper()
	return gitOut(t, bare, "for-each-ref", "--format=%(objectname)", ref)
}

// fleetReport reads the node's status on the repository at url as
// pullship status does (signature checked against the release).
func (h *host) fleetReport(url string) bundle.NodeReport {
	h.t.Helper()
	r, err := bundler.Open(context.Background(), url, filepath.Join(h.env.Dir, "status-cache", randHex(4)), repo.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	f, err := r.FleetStatus(context.Background(), h.env.Pinned, time.Now(), bundler.FleetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, n := range f.Nodes {
		if n.Node == h.node {
			return n
		}
	}
	h.t.Fatalf("no report for %s", h.node)
	return bundle.NodeReport{}
}

const ping = `["/pingsrv", "ping"]`

// TestOriginRelayAgent: origin → relay → agent, each "host" its own git
// daemon on loopback. A release cut to the origin reaches the agent through
// the relay (pullship mirror origin relay); the agent's signed status,
// pushed to the relay, reaches the origin with the next mirror run.
func TestOriginRelayAgent(t *testing.T) {
	h := newHost(t)
	origin := gittest.Daemon(t, h.env.Dir).URL + "/releases.git"
	relayBase := filepath.Join(h.env.Dir, "relay-host")
	relayBare := gittest.InitBare(t, relayBase, "fleet.git")
	relay := gittest.Daemon(t, relayBase).URL + "/fleet.git"

	h.release(h.image("a"), "version = 1\n", ping)
	h.mirror(origin, relay)
	h.setRemotes(relay)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("agent behind the relay: %v %v", out, err)
	}
	if c := h.container(); !c.Running || c.ImageID != h.images[0] || h.conf() != "version = 1\n" {
		t.Fatalf("after release 1 through the relay: %+v conf %q", c, h.conf())
	}
	status := bundle.StatusPrefix + h.node
	head := refOf(t, relayBare, status)
	if head == "" || refOf(t, h.env.Repo, status) != "" {
		t.Fatalf("status after the pass: relay %q, origin %q", head, refOf(t, h.env.Repo, status))
	}
	res := h.mirror(origin, relay)
	if len(res.ToSrc) != 1 || refOf(t, h.env.Repo, status) != head {
		t.Fatalf("status back to the origin: %+v", res)
	}
	if nr := h.fleetReport(origin); nr.State != bundle.ReportOK || nr.Status.AppliedVersion != 1 {
		t.Fatalf("origin's view of the node: %+v", nr)
	}
}

// TestRemoteFallback: remotes = [origin, mirror]. With the origin down
// the agent converges from the mirror; with it back it uses the origin
// again; a mirror holding an older release does not roll the host back;
// a mirror with a corrupted chunk is skipped, the chunk named, and the
// image loaded from the next remote.
func TestRemoteFallback(t *testing.T) {
	h := newHost(t)
	srv := gittest.Daemon(t, h.env.Dir)
	origin := srv.URL + "/releases.git"
	mirrorDir := filepath.Join(h.env.Dir, "mirror.git")
	h.setRemotes(origin, mirrorDir)
	originErrors := func(m *agent.Metrics) float64 {
		var d dto.Metric
		must(t, m.RemoteErrors.WithLabelValues(origin).Write(&d))
		return d.GetCounter().GetValue()
	}

	// Release 1 on both; the origin answers.
	h.release(h.image("a"), "version = 1\n", ping)
	h.mirror(h.env.Repo, mirrorDir)
	m := agent.NewMetrics(nil)
	if out, _, err := h.onceWith(m); err != nil || out != agent.Converged || originErrors(m) != 0 {
		t.Fatalf("release 1: %v %v", out, err)
	}

	// (b) Origin down: release 2 reaches the host through the mirror.
	srv.Stop()
	h.release(h.image("a"), "version = 2\n", ping)
	h.mirror(h.env.Repo, mirrorDir)
	m = agent.NewMetrics(nil)
	out, log, err := h.onceWith(m)
	if err != nil || out != agent.Converged || h.conf() != "version = 2\n" {
		t.Fatalf("origin down: %v %v conf %q", out, err, h.conf())
	}
	if originErrors(m) != 1 || !strings.Contains(log, "remote skipped") {
		t.Fatalf("origin down: origin errors %v, log:\n%s", originErrors(m), log)
	}

	// Origin back with release 3, which the mirror does not have: taking
	// it proves the origin is used again.
	srv.Start()
	h.release(h.image("a"), "version = 3\n", ping)
	m = agent.NewMetrics(nil)
	if out, _, err := h.onceWith(m); err != nil || out != agent.Converged || h.conf() != "version = 3\n" || originErrors(m) != 0 {
		t.Fatalf("origin back: %v %v conf %q errors %v", out, err, h.conf(), originErrors(m))
	}

	// (c) Origin down again, the mirror still on release 2: no rollback.
	srv.Stop()
	c3 := h.container()
	out, log, err = h.onceWith(agent.NewMetrics(nil))
	if !errors.Is(err, agent.ErrVerify) || out != agent.Nothing || !strings.Contains(log, "older") {
		t.Fatalf("older mirror: %v %v, log:\n%s", out, err, log)
	}
	if c := h.container(); c.ID != c3.ID || h.conf() != "version = 3\n" {
		t.Fatalf("older mirror moved the host: container %s→%s conf %q", c3.ID[:12], c.ID[:12], h.conf())
	}

	// (d) Release 4 with a new image; the mirror (now first) serves a tag
	// whose tree has one chunk replaced by other bytes.
	srv.Start()
	h.release(h.image("b"), "version = 4\n", ping)
	h.mirror(h.env.Repo, mirrorDir)
	chunk := corruptChunk(t, mirrorDir, h.images[0], h.images[1])
	h.setRemotes(mirrorDir, origin)
	out, log, err = h.onceWith(agent.NewMetrics(nil))
	if err != nil || out != agent.Converged {
		t.Fatalf("corrupted mirror first: %v %v", out, err)
	}
	if c := h.container(); c.ImageID != h.images[1] || h.conf() != "version = 4\n" {
		t.Fatalf("after release 4: %+v conf %q", c, h.conf())
	}
	if !strings.Contains(log, "image not loadable from remote") || !strings.Contains(log, chunk[:12]) || !strings.Contains(log, "remote="+origin) {
		t.Fatalf("the skip does not name chunk %s and the origin; log:\n%s", chunk[:12], log)
	}
}

// corruptChunk replaces, in the bare repository dir, the image tag of
// image newID by a commit whose tree holds other bytes under the name of
// one chunk that image oldID does not share (so an agent holding oldID
// must fetch it), and returns that chunk's sha256.
func corruptChunk(t *testing.T, dir, oldID, newID string) string {
	t.Helper()
	oldTag, newTag := bundle.ImageTag(oldID), bundle.ImageTag(newID)
	// Entries are named "<position>-<sha256>": the sha256 identifies a
	// chunk across images.
	sha := func(entry string) string { return entry[strings.LastIndexByte(entry, '-')+1:] }
	old := map[string]bool{}
	for _, l := range strings.Split(gitOut(t, dir, "ls-tree", oldTag), "\n") {
		old[sha(l[strings.IndexByte(l, '\t')+1:])] = true
	}
	var tree strings.Builder
	name := ""
	for _, l := range strings.Split(gitOut(t, dir, "ls-tree", newTag), "\n") {
		n := l[strings.IndexByte(l, '\t')+1:]
		if name == "" && !old[sha(n)] {
			name = sha(n)
			garbage := filepath.Join(t.TempDir(), "garbage")
			must(t, os.WriteFile(garbage, []byte("not the chunk "+n), 0o644))
			l = "100644 blob " + gitOut(t, dir, "hash-object", "-w", garbage) + "\t" + n
		}
		tree.WriteString(l + "\n")
	}
	if name == "" {
		t.Fatal("the new image shares every chunk with the old one")
	}
	cmd := exec.Command("git", "-C", dir, "mktree")
	cmd.Stdin = strings.NewReader(tree.String())
	id, err := cmd.Output()
	if err != nil {
		t.Fatalf("git mktree: %v", err)
	}
	commit := gitOut(t, dir, "-c", "user.name=x", "-c", "user.email=x@x", "commit-tree", strings.TrimSpace(string(id)), "-m", "corrupted")
	gitOut(t, dir, "update-ref", newTag, commit)
	dropUnreachable(t, dir)
	return name
}

// dropUnreachable removes the objects of the bare repository dir that no
// ref reaches, as git gc does on a server: an agent asks for an image's
// chunks by the ids the signed index gives, so a rewritten image tag only
// matters once the objects it no longer names are gone.
func dropUnreachable(t *testing.T, dir string) {
	t.Helper()
	gitOut(t, dir, "-c", "gc.reflogExpire=now", "-c", "gc.reflogExpireUnreachable=now", "gc", "-q", "--prune=now")
}

// TestAirGappedRoundTrip: release → pullship mirror origin → a directory
// (removable media) → an agent whose only remote is that directory applies
// it and queues its signed status there → pullship mirror directory →
// origin brings the status home.
func TestAirGappedRoundTrip(t *testing.T) {
	h := newHost(t)
	usb := filepath.Join(h.env.Dir, "media", "fleet.git")
	h.release(h.image("a"), "version = 1\n", ping)
	if res := h.mirror(h.env.Repo, usb); len(res.ToDst) < 3 {
		t.Fatalf("to the media: %+v", res)
	}
	gitOut(t, usb, "fsck", "--strict", "--no-dangling")
	h.setRemotes(usb)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("air-gapped host: %v %v", out, err)
	}
	if c := h.container(); !c.Running || c.ImageID != h.images[0] {
		t.Fatalf("air-gapped host container: %+v", c)
	}
	status := bundle.StatusPrefix + h.node
	head := refOf(t, usb, status)
	if head == "" {
		t.Fatal("no status on the media after the pass")
	}
	res := h.mirror(usb, h.env.Repo)
	if len(res.ToDst) != 1 || res.ToDst[0].Ref != status || refOf(t, h.env.Repo, status) != head {
		t.Fatalf("status home: %+v", res)
	}
	gitOut(t, h.env.Repo, "fsck", "--strict", "--no-dangling")
	if nr := h.fleetReport(h.env.Repo); nr.State != bundle.ReportOK || nr.Status.AppliedVersion != 1 {
		t.Fatalf("origin's view of the air-gapped node: %+v", nr)
	}
}
