package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/bundlertest"
)

// The peers bench (-peers): pullship against what a user would pick instead
// to ship an image to Docker hosts, on the same images in the same run:
//
//   - registry: `docker push` to the reference registry (distribution's
//     `registry serve`, filesystem storage, on 127.0.0.1), then `docker pull`
//     on the host;
//   - zstd: `docker save | zstd -3` on the sending side, the stream sent to
//     the host and `zstd -d | docker load` there;
//   - pullship: `pullship release --image docker://…` to git-daemon, then
//     `pullship-agent once` on the host.
//
// Three versions: the image (the release bench's, plus the entrypoint
// layer), v2 with one file changed in its app layer, v3 = v2 plus a new
// layer of -new-layer-mib. For each version every peer does its sending side
// with the image in the engine (loaded from its tarball, untimed, as a build
// would leave it), then the image is removed and the host side runs: the
// host is this machine's engine, holding nothing for v1 and the previous
// version for the updates. Bytes are counted by TCP proxies in front of the
// registry, the git daemon and the zstd stream's sender; peak RSS is GNU
// time's for the client processes and the engine daemon's VmRSS sampled
// from /proc (docker pull and docker load do their work in dockerd).

// peerImage is one version of the bench image.
type peerImage struct {
	tar, tag, id string
}

// step is one timed side of one peer's pass.
type step struct {
	wall      time.Duration // to image loaded (host side) or to command exit
	whole     time.Duration // the whole command (the agent's once: + container, health)
	cpu       time.Duration
	rss       int64 // client processes, KiB (GNU time: the biggest one)
	engineRSS int64 // dockerd's peak VmRSS while the step ran, KiB (0: not sampled)
	// CPU time of dockerd and of the server (registry, git-daemon) over
	// the step, reaped children included (0: not measured).
	engineCPU, serverCPU time.Duration
	server               int           // the server's pid (0: none)
	server0              time.Duration // its CPU time at the start
	wire                 wire
	// The agent's image fetch (its biggest git connection), relative to its start.
	fetchStart, fetchEnd time.Duration
	// The git CLI fetching the same image tag from the same server (first
	// install only): what the server and a stock client take for the fetch.
	gitFetch time.Duration
}

// peerPass is one peer's sending side and host side for one version; with
// rounds, host is the round of median wall time and rounds every round's.
type peerPass struct {
	send, host step
	rounds     []time.Duration
}

// peer is one way to ship the image: its sending side puts version v where
// hosts get it, its host side installs it.
type peer interface {
	send(imgs []peerImage, v int) (step, error)
	host(imgs []peerImage, v, round int) (step, error)
}

// medianStep is the step of median wall time, and every step's wall time.
func medianStep(steps []step) (step, []time.Duration) {
	walls := make([]time.Duration, len(steps))
	for i, s := range steps {
		walls[i] = s.wall
	}
	sorted := append([]step(nil), steps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].wall < sorted[j].wall })
	return sorted[len(sorted)/2], walls
}

const (
	peerRegistry = iota
	peerZstd
	peerPullship
)

func (b *bench) runPeers() error {
	w := b.c.work
	if b.c.registry == "" {
		return fmt.Errorf("-peers needs -registry (the registry binary: go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2)")
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		return fmt.Errorf("-peers needs zstd (apt-get install -y zstd): %w", err)
	}
	v2src := b.c.image2
	if v2src == "" {
		v2src = strings.TrimSuffix(b.c.image, "-1.tar") + "-2.tar"
	}
	if _, err := os.Stat(v2src); err != nil {
		return fmt.Errorf("second version of the image: %w (pass -image2)", err)
	}
	if err := layersAbsent(b.c.image); err != nil {
		return err
	}
	fmt.Printf("peers: %s and %s, plus the entrypoint layer; v3 adds a %d MiB layer\n", filepath.Base(b.c.image), filepath.Base(v2src), b.c.newLayerMiB)
	bin, err := buildPingsrv(b.root, w)
	if err != nil {
		return err
	}
	imgs := make([]peerImage, 3)
	for i := range imgs {
		imgs[i] = peerImage{tar: filepath.Join(w, fmt.Sprintf("image-%d.tar", i+1)), tag: fmt.Sprintf("%s/app:%d", b.name, i+1)}
	}
	if imgs[0].id, err = withEntrypoint(b.c.image, imgs[0].tar, bin, imgs[0].tag); err != nil {
		return err
	}
	if imgs[1].id, err = withEntrypoint(v2src, imgs[1].tar, bin, imgs[1].tag); err != nil {
		return err
	}
	layer, err := layerTar(newLayerFiles(b.c.newLayerMiB << 20))
	if err != nil {
		return err
	}
	if imgs[2].id, err = addLayer(imgs[1].tar, imgs[2].tar, layer, imgs[2].tag, fmt.Sprintf("a new %d MiB layer", b.c.newLayerMiB), nil); err != nil {
		return err
	}
	b.onCleanup = append(b.onCleanup, func() {
		for _, img := range imgs {
			exec.Command("docker", "rmi", "-f", img.id).Run()
		}
	})
	for i, img := range imgs {
		fmt.Printf("v%d: %s %s, %s\n", i+1, img.tag, img.id[:19], mib(fileSize(img.tar)))
	}

	rlog, err := os.Create(filepath.Join(w, "registry.log"))
	if err != nil {
		return err
	}
	defer rlog.Close()
	reg, err := startRegistry(b.c.registry, filepath.Join(w, "registry"), b.env, rlog)
	if err != nil {
		return err
	}
	b.onCleanup = append(b.onCleanup, reg.Close)
	zs, err := newFileServer()
	if err != nil {
		return err
	}
	b.onCleanup = append(b.onCleanup, zs.Close)
	ps, err := b.newPeerPullship()
	if err != nil {
		return err
	}
	dockerd := dockerdPID()
	if dockerd == 0 {
		fmt.Println("no dockerd on this machine: no engine RSS rows")
	}

	ps.dockerd = dockerd
	peers := [3]peer{
		peerRegistry: &registryPeer{b: b, reg: reg, dockerd: dockerd},
		peerZstd:     &zstdPeer{b: b, zs: zs, dockerd: dockerd},
		peerPullship: ps,
	}
	names := [3]string{"registry", "zstd", "pullship"}
	var res [3][3]peerPass // [version][peer]
	for v, img := range imgs {
		for i, p := range peers {
			if res[v][i].send, err = p.send(imgs, v); err != nil {
				return fmt.Errorf("%s, v%d, sending: %w", names[i], v+1, err)
			}
		}
		// The first install's host sides in rounds (each peer in turn, a
		// host that has nothing each time), compared by their medians;
		// an update needs the host the previous version left.
		rounds := 1
		if v == 0 {
			rounds = max(1, b.c.peerRounds)
		}
		var hosts [3][]step
		for round := range rounds {
			if round > 0 {
				if err := b.fresh(ps.state); err != nil {
					return err
				}
			}
			for i, p := range peers {
				s, err := p.host(imgs, v, round)
				if err != nil {
					return fmt.Errorf("%s, v%d, host: %w", names[i], v+1, err)
				}
				hosts[i] = append(hosts[i], s)
			}
		}
		for i := range peers {
			res[v][i].host, res[v][i].rounds = medianStep(hosts[i])
			for _, h := range hosts[i] {
				res[v][i].host.gitFetch = max(res[v][i].host.gitFetch, h.gitFetch)
			}
		}
		fmt.Printf("v%d (%s) done\n", v+1, img.tag)
	}
	b.peerRows(res, dockerd != 0)
	bundlertest.PrintBench(os.Stdout, "pullship", b.rows)
	fmt.Printf("\n%d CPUs; load average at start: %s, at end: %s (wall times are only comparable within one run)\n",
		runtime.NumCPU(), b.load, loadavg())
	return nil
}

// newLayerFiles are n bytes in 1 MiB files, each half pseudo-random, half
// zeros (compressible about 2:1, as binaries are), from a fixed seed.
func newLayerFiles(n int64) []layerFile {
	rng := rand.New(rand.NewPCG(23, 1))
	var files []layerFile
	for i := 0; n > 0; i++ {
		size := min(n, 1<<20)
		data := make([]byte, size)
		for j := 0; j+8 <= len(data)/2; j += 8 {
			binary.LittleEndian.PutUint64(data[j:], rng.Uint64())
		}
		files = append(files, layerFile{name: fmt.Sprintf("new/f%02d", i), mode: 0o644, data: data})
		n -= size
	}
	return files
}

// sending loads version v into the engine, as the machine that built it
// would hold it (untimed).
func (b *bench) sending(img peerImage) error {
	return b.quiet(b.c.work, "docker", "load", "-i", img.tar)
}

// hostHolds removes version v from the engine and checks that the host
// then holds what its pass assumes: nothing of the bench for v1, version
// v-1 for an update (older versions may stay: the agent keeps the previous
// container, and none holds a layer the update adds).
func (b *bench) hostHolds(imgs []peerImage, v int) error {
	if exec.Command("docker", "image", "inspect", imgs[v].id).Run() == nil {
		if err := b.quiet(b.c.work, "docker", "rmi", "-f", imgs[v].id); err != nil {
			return err
		}
	}
	for i, img := range imgs {
		err := exec.Command("docker", "image", "inspect", img.id).Run()
		if i == v-1 && err != nil {
			return fmt.Errorf("the host should hold v%d (%s) for the update: %w", i+1, img.id, err)
		}
		if i >= v && err == nil {
			return fmt.Errorf("the host holds v%d (%s) before it got v%d", i+1, img.id, v+1)
		}
	}
	return nil
}

// loaded checks that the engine holds version v under ref.
func (b *bench) loaded(img peerImage, ref string) error {
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{.ID}}", ref).CombinedOutput()
	if err != nil {
		return fmt.Errorf("image %s not in the engine: %w: %s", ref, err, out)
	}
	if got := strings.TrimSpace(string(out)); got != img.id {
		return fmt.Errorf("image %s is %s, want %s", ref, got, img.id)
	}
	return nil
}

// timedStep runs a command under GNU time while sampling dockerd's memory
// and counting its CPU time; server is the pid of the server the command
// talks to (0: none), whose CPU time serverDone takes.
func (b *bench) timedStep(dockerd, server int, name string, args ...string) (step, measure, error) {
	rs := sampleRSS(dockerd)
	e0, _ := procCPU(dockerd)
	s0, _ := procCPU(server)
	m, err := b.timed(b.c.work, nil, name, args...)
	peak := rs.Stop()
	e1, _ := procCPU(dockerd)
	return step{wall: m.wall, whole: m.wall, cpu: m.cpu, rss: m.rss, engineRSS: peak, engineCPU: e1 - e0, server: server, server0: s0}, m, err
}

// serverDone takes the server's CPU time over the step, once the server
// has reaped the children that served it (git-daemon's upload-pack and
// receive-pack).
func (s *step) serverDone() {
	if s.server == 0 {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for hasChildren(s.server) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c, _ := procCPU(s.server)
	s.serverCPU = c - s.server0
}

// registryPeer: docker push of version v, then docker pull of it on the host.
type registryPeer struct {
	b       *bench
	reg     *registry
	dockerd int
}

func (p *registryPeer) ref(v int) string {
	return fmt.Sprintf("%s/%s/app:%d", p.reg.Addr(), p.b.name, v+1)
}

func (p *registryPeer) send(imgs []peerImage, v int) (step, error) {
	b, img := p.b, imgs[v]
	if err := b.sending(img); err != nil {
		return step{}, err
	}
	if err := b.quiet(b.c.work, "docker", "tag", img.id, p.ref(v)); err != nil {
		return step{}, err
	}
	count := mark(p.reg.proxy)
	s, _, err := b.timedStep(p.dockerd, p.reg.cmd.Process.Pid, "docker", "push", p.ref(v))
	if err != nil {
		return s, err
	}
	s.wire = count()
	s.serverDone()
	fmt.Printf("v%d docker push: %.2fs, %s\n", v+1, s.wall.Seconds(), mib(s.wire.total()))
	return s, nil
}

func (p *registryPeer) host(imgs []peerImage, v, round int) (step, error) {
	b := p.b
	if err := b.hostHolds(imgs, v); err != nil {
		return step{}, err
	}
	count := mark(p.reg.proxy)
	s, _, err := b.timedStep(p.dockerd, p.reg.cmd.Process.Pid, "docker", "pull", "-q", p.ref(v))
	if err != nil {
		return s, err
	}
	s.wire = count()
	s.serverDone()
	fmt.Printf("v%d docker pull: %.2fs, %s\n", v+1, s.wall.Seconds(), mib(s.wire.total()))
	return s, b.loaded(imgs[v], p.ref(v))
}

// zstdPeer: docker save | zstd -3 of version v into a file, then the file
// sent to the host and zstd -d | docker load there. One engine plays both
// machines, so the two sides run one after the other; piped through ssh
// they would overlap.
type zstdPeer struct {
	b       *bench
	zs      *fileServer
	dockerd int
}

func (p *zstdPeer) file(v int) string {
	return filepath.Join(p.b.c.work, fmt.Sprintf("image-%d.tar.zst", v+1))
}

func (p *zstdPeer) send(imgs []peerImage, v int) (step, error) {
	b, img := p.b, imgs[v]
	if err := b.sending(img); err != nil {
		return step{}, err
	}
	if v > 0 {
		os.Remove(p.file(v - 1))
	}
	s, _, err := b.timedStep(p.dockerd, 0, "bash", "-o", "pipefail", "-c", `docker save "$1" | zstd -3 -q -c > "$2"`, "save", img.tag, p.file(v))
	if err != nil {
		return s, err
	}
	fmt.Printf("v%d docker save | zstd -3: %.2fs, %s\n", v+1, s.wall.Seconds(), mib(fileSize(p.file(v))))
	return s, nil
}

func (p *zstdPeer) host(imgs []peerImage, v, round int) (step, error) {
	b := p.b
	if err := b.hostHolds(imgs, v); err != nil {
		return step{}, err
	}
	p.zs.serve(p.file(v))
	count := mark(p.zs.proxy)
	s, _, err := b.timedStep(p.dockerd, 0, "bash", "-o", "pipefail", "-c", `zstd -d -q -c < /dev/tcp/127.0.0.1/"$1" | docker load -q`, "load", p.zs.Port())
	if err != nil {
		return s, err
	}
	s.wire = count()
	if got := fileSize(p.file(v)); s.wire.down != got {
		return s, fmt.Errorf("the host received %d bytes of the %d-byte zstd stream", s.wire.down, got)
	}
	fmt.Printf("v%d zstd -d | docker load: %.2fs, %s\n", v+1, s.wall.Seconds(), mib(s.wire.total()))
	return s, b.loaded(imgs[v], imgs[v].tag)
}

// pullshipPeer is the pullship side: a release repository served by
// git-daemon behind the counting proxy, a fleet whose one node runs the
// image, and the agent's configuration and state, kept between versions.
type pullshipPeer struct {
	b                                             *bench
	fleet, keys, cache, agentToml, etc, rr, state string
	dockerd                                       int
}

func (b *bench) newPeerPullship() (*pullshipPeer, error) {
	w := b.c.work
	p := &pullshipPeer{b: b, keys: filepath.Join(w, "keys"), fleet: filepath.Join(w, "fleet"), etc: filepath.Join(w, "etc"),
		cache: filepath.Join(w, "release-cache"), agentToml: filepath.Join(w, "agent.toml"), state: filepath.Join(w, "state")}
	srvDir := filepath.Join(w, "srv")
	for _, d := range []string{p.keys, p.fleet, srvDir, p.etc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	bare := filepath.Join(srvDir, "releases.git")
	for _, args := range [][]string{
		{b.c.pullship, "keygen", "--no-password", "--out", filepath.Join(p.keys, "rel")},
		{b.c.pullship, "root", "init", "--key", filepath.Join(p.keys, "rel.pub"), "--threshold", "1",
			"--sign", filepath.Join(p.keys, "rel.key"), "--out", filepath.Join(p.keys, "root-1.toml")},
		{"git", "init", "-q", "--bare", bare},
		{b.c.pullship, "init", "--repo", bare, "--root", filepath.Join(p.keys, "root-1.toml"), "--cache", p.cache},
	} {
		if err := b.quiet(w, args[0], args[1:]...); err != nil {
			return nil, err
		}
	}
	dlog, err := os.Create(filepath.Join(w, "git-daemon.log"))
	if err != nil {
		return nil, err
	}
	b.onCleanup = append(b.onCleanup, func() { dlog.Close() })
	if b.srv, err = startGitServer(srvDir, b.env, dlog); err != nil {
		return nil, err
	}
	p.rr = "git://" + b.srv.Addr() + "/releases.git"
	if err := writeAgentConfig(p.agentToml, p.rr, p.state, p.keys, p.etc); err != nil {
		return nil, err
	}
	if err := b.quiet(w, b.c.agent, "init", "--config", p.agentToml); err != nil {
		return nil, err
	}
	return p, b.quiet(p.fleet, "git", "init", "-q")
}

// send releases version v, read from the engine.
func (p *pullshipPeer) send(imgs []peerImage, v int) (step, error) {
	b, img := p.b, imgs[v]
	if err := writeFleet(p.fleet, filepath.Join(p.keys, "cn.key.pub"), img.tag, b.container(), p.etc); err != nil {
		return step{}, err
	}
	for _, args := range [][]string{{"add", "."}, {"commit", "-q", "-m", img.tag}} {
		if err := b.quiet(p.fleet, "git", args...); err != nil {
			return step{}, err
		}
	}
	if err := b.sending(img); err != nil {
		return step{}, err
	}
	s, _, err := b.timedStep(p.dockerd, b.srv.daemon.Process.Pid, b.c.pullship, "release", "--repo", p.rr, "--cache", p.cache,
		"--fleet", filepath.Join(p.fleet, "fleet.toml"), "--image", "docker://"+img.tag, "--key", filepath.Join(p.keys, "rel.key"), "--quiet")
	if err != nil {
		return step{}, err
	}
	if s.wire, err = p.take(); err != nil {
		return step{}, err
	}
	s.serverDone()
	fmt.Printf("v%d pullship release: %.2fs, %s\n", v+1, s.wall.Seconds(), mib(s.wire.total()))
	return s, nil
}

// host applies version v with one agent pass on the host.
func (p *pullshipPeer) host(imgs []peerImage, v, round int) (step, error) {
	b, img := p.b, imgs[v]
	if err := b.hostHolds(imgs, v); err != nil {
		return step{}, err
	}
	b.imageID = img.id
	s, m, err := b.timedStep(p.dockerd, b.srv.daemon.Process.Pid, b.c.agent, "once", "--config", p.agentToml)
	if err != nil {
		return step{}, err
	}
	os.WriteFile(filepath.Join(b.c.work, fmt.Sprintf("agent-peers-v%d-%d.log", v+1, round+1)), []byte(m.out), 0o644)
	t, conns, err := b.srv.take(10 * time.Second)
	if err != nil {
		return step{}, err
	}
	s.wire = sumTraffic(t)
	s.serverDone()
	if s.wall, err = b.loadPhase(m, fmt.Sprintf("the agent's pass on v%d", v+1)); err != nil {
		return step{}, err
	}
	var fetch conn
	for _, c := range conns {
		if c.service == "git-upload-pack" && c.down > fetch.down {
			fetch = c
		}
	}
	if fetch.down > 0 {
		s.fetchStart, s.fetchEnd = fetch.start.Sub(m.start), fetch.end.Sub(m.start)
	}
	if v == 0 && round == 0 {
		if s.gitFetch, err = p.gitFetch(img); err != nil {
			return step{}, err
		}
	}
	fmt.Printf("v%d pullship-agent once: image loaded at %.2fs (whole once %.2fs), %s\n", v+1, s.wall.Seconds(), s.whole.Seconds(), mib(s.wire.total()))
	return s, nil
}

// gitFetch times `git fetch` of img's image tag into a new bare repository
// (0 when the release repository has no tag naming the image).
func (p *pullshipPeer) gitFetch(img peerImage) (time.Duration, error) {
	b := p.b
	out, err := exec.Command("git", "ls-remote", p.rr, "refs/tags/*").Output()
	if _, terr := p.take(); err == nil {
		err = terr
	}
	if err != nil {
		return 0, fmt.Errorf("git ls-remote %s: %w", p.rr, err)
	}
	tag := ""
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && strings.Contains(f[1], strings.TrimPrefix(img.id, "sha256:")) {
			tag = f[1]
		}
	}
	if tag == "" {
		fmt.Printf("no tag of %s in the release repository: no git fetch row\n", img.id)
		return 0, nil
	}
	dst := filepath.Join(b.c.work, "git-fetch.git")
	if err := b.quiet(b.c.work, "git", "init", "-q", "--bare", dst); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dst)
	m, err := b.timed(b.c.work, nil, "git", "-C", dst, "fetch", "-q", p.rr, tag+":"+tag)
	if err != nil {
		return 0, err
	}
	_, err = p.take()
	return m.wall, err
}

// take is what the git proxy counted since the last take, every service.
func (p *pullshipPeer) take() (wire, error) {
	t, _, err := p.b.srv.take(10 * time.Second)
	return sumTraffic(t), err
}

func sumTraffic(t map[string]traffic) wire {
	var w wire
	for _, s := range t {
		w.conns += int64(s.conns)
		w.up += s.up
		w.down += s.down
	}
	return w
}

// peerRows adds the table: per version, pullship against each peer.
func (b *bench) peerRows(res [3][3]peerPass, engineRSS bool) {
	names := []string{
		"P1 first install (host has nothing)",
		"P2 update: one file changed in the app layer (host holds v1)",
		"P3 update: a new layer on top (host holds v2)",
	}
	ratio := func(a, base float64) string { return fmt.Sprintf("%.2f×", a/base) }
	for v, r := range res {
		sc := names[v]
		reg, zs, ps := r[peerRegistry], r[peerZstd], r[peerPullship]
		// Host side: time to image loaded.
		tr := ps.host.wall.Seconds() / reg.host.wall.Seconds()
		target, ok := "≤ 1× docker pull", tr <= 1
		if v > 0 {
			target, ok = "≤ 0.5× docker pull", tr <= 0.5
		}
		metric := "host: time to image loaded"
		if len(ps.rounds) > 1 {
			metric += fmt.Sprintf(" (median of %d)", len(ps.rounds))
		}
		b.add(bundlertest.Row(sc, metric, secs(ps.host.wall), secs(reg.host.wall)+" docker pull", fmt.Sprintf("%.2f×", tr), target, yes(ok)))
		b.add(bundlertest.Row(sc, "", "", secs(zs.host.wall)+" zstd -d | docker load", ratio(ps.host.wall.Seconds(), zs.host.wall.Seconds()), "-", "-"))
		if len(ps.rounds) > 1 {
			b.add(bundlertest.Row(sc, "  each round", join(ps.rounds), join(reg.rounds)+" docker pull", "-", "-", "-"))
			b.add(bundlertest.Row(sc, "", "", join(zs.rounds)+" zstd -d | docker load", "-", "-", "-"))
			b.add(bundlertest.Row(sc, "  (the rows below: the median rounds)", "", "", "", "", ""))
		}
		if ps.host.fetchEnd > 0 {
			b.add(bundlertest.Row(sc, "  agent: start → image fetch", secs(ps.host.fetchStart), "-", "-", "-", "-"))
			fd := ps.host.fetchEnd - ps.host.fetchStart
			if ps.host.gitFetch > 0 {
				b.add(bundlertest.Row(sc, "  agent: image fetch connection (the load overlaps it)", secs(fd), secs(ps.host.gitFetch)+" git fetch of the tag", ratio(fd.Seconds(), ps.host.gitFetch.Seconds()), "-", "-"))
			} else {
				b.add(bundlertest.Row(sc, "  agent: image fetch connection (the load overlaps it)", secs(fd), "-", "-", "-", "-"))
			}
			b.add(bundlertest.Row(sc, "  agent: fetch end → image loaded", secs(ps.host.wall-ps.host.fetchEnd), "-", "-", "-", "-"))
		}
		b.add(bundlertest.Row(sc, "  agent: whole once (+ container, health)", secs(ps.host.whole), "-", "-", "-", "-"))
		b.add(bundlertest.Row(sc, "  agent: CPU time (whole once)", secs(ps.host.cpu), "-", "-", "-", "-"))
		// Host side: bytes on the wire.
		br := float64(ps.host.wire.total()) / float64(reg.host.wire.total())
		target, ok = "-", true
		if v > 0 {
			target, ok = "≤ 1/20 docker pull", br <= 1.0/20
		}
		b.add(bundlertest.Row(sc, "host: bytes on the wire", kb(ps.host.wire.total()), kb(reg.host.wire.total())+" docker pull", fmt.Sprintf("%.3f×", br), target, map[bool]string{true: yes(ok), false: "-"}[v > 0]))
		b.add(bundlertest.Row(sc, "", "", kb(zs.host.wire.total())+" zstd stream", fmt.Sprintf("%.3f×", float64(ps.host.wire.total())/float64(zs.host.wire.total())), "-", "-"))
		// Host side: memory.
		b.add(bundlertest.Row(sc, "host: peak RSS, client", kib(ps.host.rss)+" agent", kib(reg.host.rss)+" docker pull", ratio(float64(ps.host.rss), float64(reg.host.rss)), "-", "-"))
		b.add(bundlertest.Row(sc, "", "", kib(zs.host.rss)+" zstd -d | docker load", ratio(float64(ps.host.rss), float64(zs.host.rss)), "-", "-"))
		if engineRSS {
			b.add(bundlertest.Row(sc, "host: peak RSS, dockerd", kib(ps.host.engineRSS), kib(reg.host.engineRSS)+" docker pull", ratio(float64(ps.host.engineRSS), float64(reg.host.engineRSS)), "-", "-"))
			b.add(bundlertest.Row(sc, "", "", kib(zs.host.engineRSS)+" docker load", ratio(float64(ps.host.engineRSS), float64(zs.host.engineRSS)), "-", "-"))
		}
		// CPU, where the work is: the client, the engine daemon, the server.
		b.add(bundlertest.Row(sc, "host: CPU time (client+dockerd+server)", cpuCell(ps.host, "agent", "git"), cpuCell(reg.host, "CLI", "registry")+" docker pull",
			ratio(ps.host.allCPU().Seconds(), reg.host.allCPU().Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "", "", cpuCell(zs.host, "zstd+CLI", "")+" zstd -d | docker load", ratio(ps.host.allCPU().Seconds(), zs.host.allCPU().Seconds()), "-", "-"))
		// Sending side.
		b.add(bundlertest.Row(sc, "send: time", secs(ps.send.wall)+" release", secs(reg.send.wall)+" docker push", ratio(ps.send.wall.Seconds(), reg.send.wall.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "", "", secs(zs.send.wall)+" docker save | zstd -3", ratio(ps.send.wall.Seconds(), zs.send.wall.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "send: CPU time (client+dockerd+server)", cpuCell(ps.send, "release", "git"), cpuCell(reg.send, "CLI", "registry")+" docker push",
			ratio(ps.send.allCPU().Seconds(), reg.send.allCPU().Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "", "", cpuCell(zs.send, "zstd+CLI", "")+" docker save | zstd -3", ratio(ps.send.allCPU().Seconds(), zs.send.allCPU().Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "send: bytes on the wire", kb(ps.send.wire.total()), kb(reg.send.wire.total())+" docker push", fmt.Sprintf("%.3f×", float64(ps.send.wire.total())/float64(reg.send.wire.total())), "-", "-"))
		b.add(bundlertest.Row(sc, "send: peak RSS, client", kib(ps.send.rss)+" release", kib(reg.send.rss)+" docker push", ratio(float64(ps.send.rss), float64(reg.send.rss)), "-", "-"))
		b.add(bundlertest.Row(sc, "", "", kib(zs.send.rss)+" docker save | zstd -3", ratio(float64(ps.send.rss), float64(zs.send.rss)), "-", "-"))
		// End to end: sending side then host side.
		e2e := ps.send.wall + ps.host.wall
		b.add(bundlertest.Row(sc, "send + host", secs(e2e), secs(reg.send.wall+reg.host.wall)+" push + pull", ratio(e2e.Seconds(), (reg.send.wall+reg.host.wall).Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "", "", secs(zs.send.wall+zs.host.wall)+" save|zstd, then load", ratio(e2e.Seconds(), (zs.send.wall+zs.host.wall).Seconds()), "-", "-"))
	}
}

func (s step) allCPU() time.Duration { return s.cpu + s.engineCPU + s.serverCPU }

// cpuCell is "4.10 s (agent 1.30 + dockerd 2.40 + git 0.40)".
func cpuCell(s step, client, server string) string {
	c := fmt.Sprintf("%s (%s %.2f + dockerd %.2f", secs(s.allCPU()), client, s.cpu.Seconds(), s.engineCPU.Seconds())
	if server != "" {
		c += fmt.Sprintf(" + %s %.2f", server, s.serverCPU.Seconds())
	}
	return c + ")"
}
