// Command agentbench measures pullship-agent against baselines taken in the
// same run on the same data, and prints one table of ratios (the agent half
// of make bench).
//
// The image is the release bench's ~300 MiB docker-save tarball
// (bundler/internal/bench writes it into .bench/), plus one small layer
// holding the engine tests' static pingsrv as entrypoint, so that the
// container starts and passes a health check. Scenarios:
//
//  1. A new image: `docker load -i image.tar` (the baseline) against a
//     release of the image served by git-daemon on 127.0.0.1, applied by
//     `pullship-agent once` (the real binary, a fresh state directory) under
//     /usr/bin/time -v. The fetch+verify+load phase runs from the agent's
//     process start to the time stamp of its "image loaded" log line. The
//     agent's image fetch (its biggest git connection) is also set against
//     `git fetch` of the same image tag from the same daemon.
//
//  2. A config-only release (one template line): the bytes git-daemon sent
//     the agent during the second `once`, counted by a TCP proxy between them.
//
//  3. An idle poll (a third `once` with nothing to do) with 1,000 other
//     nodes' status branches in the repository: connections and bytes.
//
//  4. The new image again, from a directory remote (the bare repository the
//     daemon serves, as removable media would hold it): a fresh state
//     directory copies the image into its store, verifies and loads it; time
//     against the docker load median, and peak RSS.
//
//  5. A new image of many small layers (a 48 MiB base, nine layers under
//     2 MiB, the entrypoint layer), released over the first: docker load
//     of its tarball against the agent's fetch+verify+load, in rounds.
//
//  6. Image updates (update.go): an agent running an image of a ~100 MiB
//     layer of ~600 files applies (a) one file changed in it, (b) the layer
//     rebuilt with every mtime new, (c) a new 20 MiB layer on top: the
//     bytes git-daemon sent it against the chunks the release stored as new,
//     the layer, and the new layer's gzip size; its time to image loaded
//     against docker load of the new image (-only-updates runs this alone).
//
//     go run ./agent/internal/agentbench -image .bench/image-v2-200-100-1.tar
//
// With -peers it measures instead pullship against a registry (docker push,
// docker pull) and docker save | zstd -3 | docker load, on three versions of
// the image (peers.go; scripts/bench-peers.sh runs it).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/bundler/bundlertest"
)

type options struct {
	image, pullship, agent, work string
	keep, updates, onlyUpdates   bool
	rounds                       int
	cpuProfile                   string
	// The peers bench (peers.go).
	peers            bool
	image2, registry string
	newLayerMiB      int64
	peerRounds       int
}

func main() {
	var c options
	flag.StringVar(&c.image, "image", "", "legacy docker-save tarball to release (default: the newest .bench/image-*-1.tar of the release bench)")
	flag.StringVar(&c.pullship, "pullship", "bin/pullship", "the pullship binary (cuts the releases)")
	flag.StringVar(&c.agent, "agent", "bin/pullship-agent", "the pullship-agent binary to measure")
	flag.StringVar(&c.work, "work", "", "scratch directory (default: a new temporary directory, removed at the end)")
	flag.BoolVar(&c.keep, "keep", false, "keep the scratch directory (agent logs, configs) for inspection")
	flag.BoolVar(&c.updates, "updates", true, "run scenario 6, image updates (a) one file changed, (b) every mtime new, (c) a new layer")
	flag.BoolVar(&c.onlyUpdates, "only-updates", false, "run scenario 6 alone (no -image needed)")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds of the new-image scenarios (docker load, then the agent), compared by their medians")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "also apply the release in-process (agent.New + Once) with a CPU profile, heap profile and execution trace written to FILE, FILE.heap and FILE.trace")
	flag.BoolVar(&c.peers, "peers", false, "instead: pullship against a registry (docker push, docker pull) and docker save | zstd -3 | docker load, on -image, -image2 and -image2 plus a new layer (peers.go)")
	flag.StringVar(&c.image2, "image2", "", "with -peers: the second version of -image (default: its -2.tar sibling of the release bench)")
	flag.StringVar(&c.registry, "registry", "", "with -peers: the reference registry binary (distribution's cmd/registry)")
	flag.Int64Var(&c.newLayerMiB, "new-layer-mib", 20, "with -peers: size of the layer the third version adds, in MiB")
	flag.IntVar(&c.peerRounds, "peer-rounds", 3, "with -peers: rounds of the first install's host sides, compared by their medians")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

func run(c options) (err error) {
	if c.image == "" && !c.onlyUpdates {
		m, _ := filepath.Glob(".bench/image-*-1.tar")
		sort.Slice(m, func(i, j int) bool { return modTime(m[i]).After(modTime(m[j])) })
		if len(m) == 0 {
			return errors.New("no image: run the release bench first (go run ./bundler/internal/bench) or pass -image")
		}
		c.image = m[0]
	}
	for _, p := range []*string{&c.image, &c.pullship, &c.agent, &c.image2, &c.registry} {
		if *p == "" {
			continue
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
		if _, err := os.Stat(*p); err != nil {
			return fmt.Errorf("%w (run make build)", err)
		}
	}
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		return fmt.Errorf("/usr/bin/time is missing (apt-get install -y time): %w", err)
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Errorf("docker info: %w: %s (the agent bench needs a Docker engine)", err, out)
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if c.work == "" {
		if c.work, err = os.MkdirTemp("", "pullship-bench-agent-"); err != nil {
			return err
		}
		if !c.keep {
			defer os.RemoveAll(c.work)
		}
	}
	if c.keep {
		fmt.Println("scratch directory:", c.work)
	}
	b := &bench{c: c, root: root, env: benchEnv(c.work), load: loadavg(),
		name: fmt.Sprintf("pullship-bench-%d", os.Getpid())}
	defer b.cleanup()
	// Interrupted: still remove the container, image, daemon and scratch.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		b.cleanup()
		if !c.keep {
			os.RemoveAll(c.work)
		}
		os.Exit(130)
	}()
	if c.peers {
		return b.runPeers()
	}
	return b.run()
}

func modTime(p string) time.Time {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// moduleRoot is the directory of pullship's go.mod (pingsrv is built from it).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 || string(bytes.TrimSpace(out)) == os.DevNull {
		return "", fmt.Errorf("run agentbench from the pullship module (go env GOMOD: %v)", err)
	}
	return filepath.Dir(string(bytes.TrimSpace(out))), nil
}

type bench struct {
	c       options
	root    string
	env     []string
	load    string
	name    string // prefix of every container, image and directory it makes
	imageID string
	srv     *gitServer
	rows    []row
	// onCleanup runs before the rest of cleanup (what the peers bench starts).
	onCleanup []func()
}

type row = bundlertest.BenchRow

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func (b *bench) container() string { return b.name + "-cn" }

// cleanup removes the containers, the image and the git daemon it made.
func (b *bench) cleanup() {
	for _, f := range b.onCleanup {
		f()
	}
	if b.srv != nil {
		b.srv.Close()
	}
	b.fresh("")
}

// fresh removes the node's containers and the bench image, and with state
// that state directory, so that the next agent pass starts on a new host.
func (b *bench) fresh(state string) error {
	exec.Command("docker", "rm", "-f", b.container(), b.container()+engine.PrevSuffix).Run()
	if b.imageID != "" {
		exec.Command("docker", "rmi", "-f", b.imageID).Run()
	}
	if state == "" {
		return nil
	}
	return os.RemoveAll(state)
}

// loadPhase checks that the agent pass m (what it was, for errors) left the
// node running the image, and returns the time from its start to its
// "image loaded" line.
func (b *bench) loadPhase(m measure, what string) (time.Duration, error) {
	if err := b.running(); err != nil {
		return 0, fmt.Errorf("after %s: %w\n%s", what, err, m.out)
	}
	at, ok := logTime(m.out, "image loaded")
	if !ok {
		return 0, fmt.Errorf("%s: the agent logged no \"image loaded\" line:\n%s", what, m.out)
	}
	return at.Sub(m.start), nil
}

func (b *bench) run() error {
	w := b.c.work
	if !b.c.onlyUpdates {
		fmt.Printf("image: %s (%s); building the entrypoint layer\n", filepath.Base(b.c.image), mib(fileSize(b.c.image)))
	}
	bin, err := buildPingsrv(b.root, w)
	if err != nil {
		return err
	}
	tag := b.name + "/app:1"
	img := filepath.Join(w, "image.tar")
	if !b.c.onlyUpdates {
		if b.imageID, err = withEntrypoint(b.c.image, img, bin, tag); err != nil {
			return err
		}
	}
	size := fileSize(img)
	if !b.c.onlyUpdates {
		// Warm the page cache: docker load reads the tar, the agent its
		// fetched objects (just written, so cached too).
		if err := readAll(img); err != nil {
			return err
		}
		fmt.Printf("bench image %s: %s, %s (base image + pingsrv layer)\n", tag, b.imageID[:19], mib(size))
		if err := layersAbsent(b.c.image); err != nil {
			return err
		}
	}

	// --- Baseline: docker load of the same tar (once per round, below).
	dockerLoad := func(img string) (measure, time.Duration, error) {
		exec.Command("docker", "rmi", "-f", b.imageID).Run()
		busyBefore, _ := busyCPU()
		base, err := b.timed(w, nil, "docker", "load", "-i", img)
		if err != nil {
			return base, 0, err
		}
		busyAfter, _ := busyCPU()
		busy := busyAfter - busyBefore
		if err := b.quiet(w, "docker", "image", "inspect", b.imageID); err != nil {
			return base, 0, fmt.Errorf("docker load did not load %s: %w", b.imageID, err)
		}
		if err := b.quiet(w, "docker", "rmi", "-f", b.imageID); err != nil {
			return base, 0, err
		}
		fmt.Printf("docker load: %.2fs\n", base.wall.Seconds())
		return base, busy, nil
	}
	// The machine's busy CPU says something of the engine only when it runs
	// here, and /proc/stat must read (checked once; later reads of it are
	// taken as they come).
	_, statErr := busyCPU()
	cpuRows := engineLocal() && statErr == nil
	if statErr != nil {
		fmt.Println("no machine CPU rows:", statErr)
	}

	// --- Keys, trust root, release repository, fleet, agent.
	keys, fleet, srvDir, etc := filepath.Join(w, "keys"), filepath.Join(w, "fleet"), filepath.Join(w, "srv"), filepath.Join(w, "etc")
	for _, d := range []string{keys, fleet, srvDir, etc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	bare := filepath.Join(srvDir, "releases.git")
	cache := filepath.Join(w, "release-cache")
	for _, args := range [][]string{
		{b.c.pullship, "keygen", "--no-password", "--out", filepath.Join(keys, "rel")},
		{b.c.pullship, "root", "init", "--key", filepath.Join(keys, "rel.pub"), "--threshold", "1",
			"--sign", filepath.Join(keys, "rel.key"), "--out", filepath.Join(keys, "root-1.toml")},
		{"git", "init", "-q", "--bare", bare},
		{b.c.pullship, "init", "--repo", bare, "--root", filepath.Join(keys, "root-1.toml"), "--cache", cache},
	} {
		if err := b.quiet(w, args[0], args[1:]...); err != nil {
			return err
		}
	}
	dlog, err := os.Create(filepath.Join(w, "git-daemon.log"))
	if err != nil {
		return err
	}
	defer dlog.Close()
	if b.srv, err = startGitServer(srvDir, b.env, dlog); err != nil {
		return err
	}
	writeAgentToml := func(path, remote, state string) error {
		return writeAgentConfig(path, remote, state, keys, etc)
	}
	agentToml := filepath.Join(w, "agent.toml")
	if err := writeAgentToml(agentToml, "git://"+b.srv.Addr()+"/releases.git", filepath.Join(w, "state")); err != nil {
		return err
	}
	if err := b.quiet(w, b.c.agent, "init", "--config", agentToml); err != nil {
		return err
	}
	if err := writeFleet(fleet, filepath.Join(keys, "cn.key.pub"), tag, b.container(), etc); err != nil {
		return err
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"commit", "-q", "-m", "fleet"}} {
		if err := b.quiet(fleet, "git", args...); err != nil {
			return err
		}
	}
	release := func(img string) (measure, error) {
		return b.timed(w, nil, b.c.pullship, "release", "--repo", bare, "--cache", cache,
			"--fleet", filepath.Join(fleet, "fleet.toml"), "--image", img, "--key", filepath.Join(keys, "rel.key"), "--quiet")
	}
	pass := 0
	once := func(want int) (measure, map[string]traffic, []conn, error) {
		pass++
		m, err := b.timed(w, []int{want}, b.c.agent, "once", "--config", agentToml)
		if err != nil {
			return m, nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(w, fmt.Sprintf("agent-once-%d.log", pass)), []byte(m.out), 0o644); err != nil {
			return m, nil, nil, err
		}
		t, conns, err := b.srv.take(10 * time.Second)
		if b.c.keep {
			for _, c := range conns {
				fmt.Printf("  once %d: %s +%.3fs..+%.3fs sent %d received %d\n", pass, c.service,
					c.start.Sub(m.start).Seconds(), c.end.Sub(m.start).Seconds(), c.up, c.down)
			}
		}
		return m, t, conns, err
	}

	if b.c.onlyUpdates {
		if err := b.updates(w, bin, tag, release, once, dockerLoad); err != nil {
			return err
		}
		b.print()
		return nil
	}
	rel, err := release(img)
	if err != nil {
		return err
	}
	fmt.Printf("release 1 cut: %.2fs\n", rel.wall.Seconds())

	// --- Scenario 1: the new image, in rounds that alternate the baseline
	// and the agent (a fresh state directory, no image, no container), so
	// that the machine's drift during the run hits both alike; the
	// medians are compared, the last round is detailed.
	var (
		base, a1          measure
		baseBusy          time.Duration
		t1                map[string]traffic
		c1                []conn
		sampler           *cpuSampler
		loaded            time.Time
		phase             time.Duration
		basePhases, agent []time.Duration
	)
	for round := 1; round <= b.c.rounds; round++ {
		if round > 1 {
			if err := b.fresh(filepath.Join(w, "state")); err != nil {
				return err
			}
		}
		if base, baseBusy, err = dockerLoad(img); err != nil {
			return err
		}
		sampler = startCPUSampler()
		a1, t1, c1, err = once(0)
		sampler.Stop()
		if err != nil {
			return err
		}
		if phase, err = b.loadPhase(a1, "the first once"); err != nil {
			return err
		}
		loaded = a1.start.Add(phase)
		fmt.Printf("round %d: agent once (new image): %.2fs, fetch+verify+load %.2fs, peak RSS %s\n", round, a1.wall.Seconds(), phase.Seconds(), kib(a1.rss))
		basePhases, agent = append(basePhases, base.wall), append(agent, phase)
	}
	sc := "1 new image"
	mb, ma := median(basePhases), median(agent)
	r := ma.Seconds() / mb.Seconds()
	b.add(bundlertest.Row(sc, fmt.Sprintf("fetch+verify+load (median of %d)", len(agent)), secs(ma), secs(mb)+" docker load", fmt.Sprintf("%.2f×", r), "≤ 1.3×", yes(r <= 1.3)))
	if len(agent) > 1 {
		b.add(bundlertest.Row(sc, "  each round", join(agent), join(basePhases), "-", "-", "-"))
	}
	b.add(bundlertest.Row(sc, "fetch+verify+load, last round", secs(phase), secs(base.wall)+" docker load", fmt.Sprintf("%.2f×", phase.Seconds()/base.wall.Seconds()), "-", "-"))
	// Where the phase went: the image fetch is the biggest git connection.
	var fetch conn
	for _, c := range c1 {
		if c.service == "git-upload-pack" && c.down > fetch.down {
			fetch = c
		}
	}
	// The fetch's own baseline: the git CLI fetching the same image tag
	// from the same daemon (index-pack inflates and hashes every object,
	// as the agent does, but loads nothing).
	gitFetch := filepath.Join(w, "git-fetch.git")
	if err := b.quiet(w, "git", "init", "-q", "--bare", gitFetch); err != nil {
		return err
	}
	imageTag := "refs/tags/pullship/images/" + strings.TrimPrefix(b.imageID, "sha256:")
	gf, err := b.timed(w, nil, "git", "-C", gitFetch, "fetch", "-q", "git://"+b.srv.Addr()+"/releases.git", imageTag+":"+imageTag)
	if err != nil {
		return err
	}
	if _, _, err := b.srv.take(10 * time.Second); err != nil {
		return err
	}
	if fetch.down > 0 && fetch.end.Before(loaded) {
		fd := fetch.end.Sub(fetch.start)
		b.add(bundlertest.Row(sc, "  start → image fetch starts", secs(fetch.start.Sub(a1.start)), "-", "-", "-", "-"))
		b.add(bundlertest.Row(sc, "  image fetch (git connection)", secs(fd), secs(gf.wall)+" git fetch", fmt.Sprintf("%.2f×", fd.Seconds()/gf.wall.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "  fetch end → image loaded", secs(loaded.Sub(fetch.end)), "-", "-", "-", "-"))
	}
	b.add(bundlertest.Row(sc, "whole once (+ container, health)", secs(a1.wall), secs(base.wall)+" docker load", fmt.Sprintf("%.2f×", a1.wall.Seconds()/base.wall.Seconds()), "-", "-"))
	b.add(bundlertest.Row(sc, "agent CPU time (whole once)", secs(a1.cpu), "-", "-", "-", "-"))
	if cpuRows {
		// Every process on the machine: the engine (with the unpackers it
		// starts for each layer), the git server and the agent. The CPU
		// they need together, spread over every core, bounds how fast the
		// phase can be on this machine.
		busy := sampler.until(loaded)
		floor := busy / time.Duration(runtime.NumCPU())
		b.add(bundlertest.Row(sc, "machine CPU busy (every process)", secs(busy)+" to image loaded", secs(baseBusy)+" docker load", fmt.Sprintf("%.2f×", busy.Seconds()/baseBusy.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, fmt.Sprintf("  CPU floor: busy / %d cores", runtime.NumCPU()), secs(floor), secs(base.wall)+" docker load",
			fmt.Sprintf("%.2f×", floor.Seconds()/base.wall.Seconds()), "-", "-"))
	}
	b.add(bundlertest.Row(sc, "agent peak RSS", kib(a1.rss), "-", "-", "≤ 64 MiB", yes(a1.rss <= 64<<10)))
	up := t1["git-upload-pack"]
	b.add(bundlertest.Row(sc, "bytes fetched", mib(up.down), mib(size)+" tar", fmt.Sprintf("%.2f×", float64(up.down)/float64(size)), "-", "-"))

	// --- Scenario 2: a config-only release.
	if err := os.WriteFile(filepath.Join(fleet, "app.tmpl"), []byte(appTemplate(2)), 0o644); err != nil {
		return err
	}
	if err := b.quiet(fleet, "git", "commit", "-q", "-am", "config"); err != nil {
		return err
	}
	if rel, err = release(img); err != nil {
		return err
	}
	fmt.Printf("release 2 (config-only) cut: %.2fs\n", rel.wall.Seconds())
	a2, t2, c2, err := once(0)
	if err != nil {
		return err
	}
	if err := b.running(); err != nil {
		return fmt.Errorf("after the config-only once: %w\n%s", err, a2.out)
	}
	if got, err := os.ReadFile(filepath.Join(etc, "app.conf")); err != nil || !bytes.Contains(got, []byte("max_connections = 20000")) {
		return fmt.Errorf("config-only release not applied (app.conf: %q, %v)\n%s", got, err, a2.out)
	}
	sc = "2 config-only"
	up = t2["git-upload-pack"]
	b.add(bundlertest.Row(sc, "bytes fetched (server→agent)", kb(up.down), "-", "-", "< 10 KB", yes(up.down < 10000)))
	b.add(bundlertest.Row(sc, "  of which the poll (fetch requests)", fmt.Sprintf("%d, %s", len(pollConns(c2)), kb(sumDown(pollConns(c2)))), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "all fetch requests / bytes sent", fmt.Sprintf("%d / %s", up.conns, kb(up.up)), "-", "-", "-", "-"))
	addPush(b, sc, t2)
	b.add(bundlertest.Row(sc, "whole once", secs(a2.wall), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "agent peak RSS", kib(a2.rss), "-", "-", "-", "-"))

	// --- Scenario 3: idle poll, with the status branches of a fleet of
	// 1,000 other nodes in the repository.
	if err := statusBranches(bare, 1000); err != nil {
		return err
	}
	a3, t3, c3, err := once(10)
	if err != nil {
		return err
	}
	sc = "3 idle poll, 1,000 status branches"
	poll := pollConns(c3)
	b.add(bundlertest.Row(sc, "poll requests", strconv.Itoa(len(poll)), "-", "-", "1", yes(len(poll) == 1)))
	total := sumUp(poll) + sumDown(poll)
	b.add(bundlertest.Row(sc, "poll bytes (both ways)", fmt.Sprintf("%s (%s down)", kb(total), kb(sumDown(poll))), "-", "-", "~1 KB (≤ 2 KB)", yes(total <= 2000)))
	up = t3["git-upload-pack"]
	b.add(bundlertest.Row(sc, "all fetch requests / bytes (both ways)", fmt.Sprintf("%d / %s", up.conns, kb(up.up+up.down)), "-", "-", "-", "-"))
	addPush(b, sc, t3)
	b.add(bundlertest.Row(sc, "whole once", secs(a3.wall), "-", "-", "-", "-"))

	// --- Scenario 4: the new image from a directory remote (removable
	// media, an air-gapped host): the agent copies the objects it lacks
	// into its store, then loads the image from there. A fresh state
	// directory, no image, no container.
	b.fresh("")
	dirToml := filepath.Join(w, "agent-dir.toml")
	if err := writeAgentToml(dirToml, bare, filepath.Join(w, "state-dir")); err != nil {
		return err
	}
	a4, err := b.timed(w, []int{0}, b.c.agent, "once", "--config", dirToml)
	if err != nil {
		return err
	}
	p4, err := b.loadPhase(a4, "the directory-remote once")
	if err != nil {
		return err
	}
	sc = "4 new image, directory remote"
	b.add(bundlertest.Row(sc, "copy+verify+load", secs(p4), secs(mb)+" docker load", fmt.Sprintf("%.2f×", p4.Seconds()/mb.Seconds()), "-", "-"))
	b.add(bundlertest.Row(sc, "agent CPU time (whole once)", secs(a4.cpu), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "agent peak RSS", kib(a4.rss), "-", "-", "≤ 64 MiB", yes(a4.rss <= 64<<10)))

	if b.c.cpuProfile != "" {
		if err := b.profile(agentToml); err != nil {
			return err
		}
	}

	// --- Scenario 5: a new image of many small layers (a 48 MiB base, nine
	// layers under 2 MiB, the entrypoint), released over the first: the
	// agent's per-load costs count here, not its throughput. Rounds as in
	// scenario 1, against docker load of the same tarball.
	b.fresh("")
	layered, imgLayers := filepath.Join(w, "layered-base.tar"), filepath.Join(w, "image-layers.tar")
	if err := writeLayered(layered, uint64(time.Now().UnixNano())); err != nil {
		return err
	}
	if b.imageID, err = withEntrypoint(layered, imgLayers, bin, tag); err != nil {
		return err
	}
	if rel, err = release(imgLayers); err != nil {
		return err
	}
	var loads5, agent5 []time.Duration
	var a5 measure
	for round := 1; round <= b.c.rounds; round++ {
		if err := b.fresh(filepath.Join(w, "state")); err != nil {
			return err
		}
		base5, _, err := dockerLoad(imgLayers)
		if err != nil {
			return err
		}
		if a5, _, _, err = once(0); err != nil {
			return err
		}
		p5, err := b.loadPhase(a5, "the layered image's once")
		if err != nil {
			return err
		}
		loads5, agent5 = append(loads5, base5.wall), append(agent5, p5)
		fmt.Printf("round %d: layered image: docker load %.2fs, agent fetch+verify+load %.2fs\n", round, base5.wall.Seconds(), p5.Seconds())
	}
	sc = "5 new image, 11 small layers"
	mb5, ma5 := median(loads5), median(agent5)
	b.add(bundlertest.Row(sc, fmt.Sprintf("fetch+verify+load (median of %d)", len(agent5)), secs(ma5), secs(mb5)+" docker load", fmt.Sprintf("%.2f×", ma5.Seconds()/mb5.Seconds()), "-", "-"))
	if len(agent5) > 1 {
		b.add(bundlertest.Row(sc, "  each round", join(agent5), join(loads5), "-", "-", "-"))
	}
	b.add(bundlertest.Row(sc, "image size", mib(fileSize(imgLayers)), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "agent CPU time (whole once, last round)", secs(a5.cpu), "-", "-", "-", "-"))
	b.add(bundlertest.Row(sc, "agent peak RSS (last round)", kib(a5.rss), "-", "-", "≤ 64 MiB", yes(a5.rss <= 64<<10)))

	// --- Scenario 6: image updates over the release of scenario 5.
	if b.c.updates {
		if err := b.updates(w, bin, tag, release, once, dockerLoad); err != nil {
			return err
		}
	}

	b.print()
	fmt.Printf("\n%d CPUs; load average at start: %s, at end: %s (wall times are only comparable within one run)\n",
		runtime.NumCPU(), b.load, loadavg())
	return nil
}

// addPush adds the status report pushes a pass made (the agent reports
// after every pass; they are not part of the poll).
// statusBranches adds n status branches of other nodes
// (refs/heads/status/bench-NNNN) to the bare repository, on its release
// commit.
func statusBranches(bare string, n int) error {
	head, err := exec.Command("git", "-C", bare, "rev-parse", "refs/heads/releases").Output()
	if err != nil {
		return fmt.Errorf("git rev-parse releases: %w", err)
	}
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "create refs/heads/status/bench-%04d %s\n", i, strings.TrimSpace(string(head)))
	}
	cmd := exec.Command("git", "-C", bare, "update-ref", "--stdin")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git update-ref: %w: %s", err, out)
	}
	return nil
}

func addPush(b *bench, sc string, t map[string]traffic) {
	p := t["git-receive-pack"]
	b.add(bundlertest.Row(sc, "status push: requests / sent / received", fmt.Sprintf("%d / %s / %s", p.conns, kb(p.up), kb(p.down)), "-", "-", "-", "-"))
	for k, v := range t {
		if k != "git-upload-pack" && k != "git-receive-pack" {
			b.add(bundlertest.Row(sc, "other connections ("+k+")", fmt.Sprintf("%d / %s / %s", v.conns, kb(v.up), kb(v.down)), "-", "-", "-", "-"))
		}
	}
}

// pollConns are a pass's upload-pack connections but those of the status
// push: report.Reporter asks for the remote's refs (upload-pack) right before
// each push (receive-pack).
func pollConns(cs []conn) []conn {
	var out []conn
	for i, c := range cs {
		if c.service != "git-upload-pack" {
			continue
		}
		if i+1 < len(cs) && cs[i+1].service == "git-receive-pack" {
			continue
		}
		out = append(out, c)
	}
	return out
}

func sumUp(cs []conn) (n int64) {
	for _, c := range cs {
		n += c.up
	}
	return n
}

func sumDown(cs []conn) (n int64) {
	for _, c := range cs {
		n += c.down
	}
	return n
}

// running checks that the node's container runs.
func (b *bench) running() error {
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Running}} {{.Image}}", b.container()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("container %s: %w: %s", b.container(), err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "true "+b.imageID {
		return fmt.Errorf("container %s: running, image = %q; want true %s", b.container(), got, b.imageID)
	}
	return nil
}

var logTimeRE = regexp.MustCompile(`(?m)^time=(\S+) .*msg="?([^"=]*)"? `)

// logTime is the time stamp of the first slog text line with message msg.
func logTime(log, msg string) (time.Time, bool) {
	for _, m := range logTimeRE.FindAllStringSubmatch(log, -1) {
		if strings.TrimSpace(m[2]) == msg {
			t, err := time.Parse(time.RFC3339Nano, m[1])
			return t, err == nil
		}
	}
	return time.Time{}, false
}

type measure struct {
	start time.Time
	wall  time.Duration
	cpu   time.Duration // user + system
	rss   int64         // KiB
	out   string
}

// timed runs name args under /usr/bin/time -v; an exit code other than 0
// or one in codes is an error.
func (b *bench) timed(dir string, codes []int, name string, args ...string) (measure, error) {
	m, err := bundlertest.Timed(b.c.work, dir, b.env, codes, name, args...)
	return measure{start: m.Start, wall: m.Wall, cpu: m.CPU, rss: m.RSS, out: m.Out}, err
}

// quiet runs an untimed setup command.
func (b *bench) quiet(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = b.env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// writeAgentConfig writes the agent.toml of node cn following remote, with
// its own state directory, the trust root and node key from keys, and etc
// the directory it may write.
func writeAgentConfig(path, remote, state, keys, etc string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`remotes = [%q]
root = %q
state_dir = %q
allowed_dirs = [%q]

[[node]]
name = "cn"
key = %q
`, remote, filepath.Join(keys, "root-1.toml"), state, etc, filepath.Join(keys, "cn.key"))), 0o644)
}

func appTemplate(v int) string {
	return fmt.Sprintf("node = {{.Node}}\nlistener.tcp.default = 0.0.0.0:1883\nmax_connections = %d\nallow_anonymous = off\n", 10000*v)
}

func writeFleet(dir, statusPub, image, container, etc string) error {
	pub, err := os.ReadFile(statusPub)
	if err != nil {
		return err
	}
	files := map[string]string{
		"cn.pub":   string(pub),
		"app.tmpl": appTemplate(1),
		"fleet.toml": fmt.Sprintf(`[service]
image = %q
image_name = "app"
container = %q
reload = { action = "restart" }

[service.health]
command = ["/pingsrv", "ping"]
expect = "pong"
timeout = "5s"
retries = 50
interval = "100ms"

[[template]]
name = "app.conf"
source = "app.tmpl"
target = %q

[attach]
driver = "none"

[[node]]
name = "cn"
region = "cn"
wave = 1
address = "10.0.0.1/24"
status_key = "cn.pub"
`, image, container, filepath.Join(etc, "app.conf")),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readAll(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// median of ds (the mean of the middle two for an even count).
func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// join lists durations in seconds: "6.31 / 7.04 / 6.78 s".
func join(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	return strings.Join(parts, " / ") + " s"
}

func (b *bench) print() { bundlertest.PrintBench(os.Stdout, "agent", b.rows) }

var (
	yes      = bundlertest.Met
	secs     = bundlertest.Secs
	kib      = bundlertest.KiB
	mib      = bundlertest.MiB
	kb       = bundlertest.KB
	loadavg  = bundlertest.LoadAvg
	benchEnv = bundlertest.BenchEnv
)
