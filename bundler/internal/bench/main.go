// Command bench measures pullship's release path against baselines taken in
// the same run on the same data, and prints one table of ratios (make bench).
//
// The data is an image-like `docker save` tarball built from real files of
// this machine (shared libraries, binaries, Go tools: deterministic, sorted,
// capped by size) with two layers, plus a second image that differs from it
// in one small file inside the ~100 MiB layer. Both are generated once into
// the cache directory and reused.
//
// Every command is run under /usr/bin/time -v: wall time is measured around
// it, peak RSS is GNU time's "Maximum resident set size" (for a git command,
// the biggest process of its tree, since waited-for children count). Bytes
// pushed are measured on the server side: for a directory remote, the growth
// of the sum of file sizes under the bare repository's objects/; for git
// daemon, every byte the client sent to `git daemon --inetd` on its
// connections (protocol overhead and ref negotiation included); for the git
// CLI, the bytes git push sent into receive-pack.
//
//	go run ./bundler/internal/bench -pullship bin/pullship -cache .bench
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pullship/pullship/bundler/bundlertest"

	"github.com/pullship/pullship/bundler/image/imagetest"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == countFlag {
		if err := countReceivePack(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	var c config
	flag.StringVar(&c.pullship, "pullship", "bin/pullship", "the pullship binary to measure")
	flag.StringVar(&c.cache, "cache", ".bench", "directory for the generated images (reused when present)")
	flag.StringVar(&c.work, "work", "", "scratch directory (default: a new temporary directory, removed at the end)")
	flag.Int64Var(&c.baseMiB, "base-mib", 200, "size of the base layer in MiB")
	flag.Int64Var(&c.appMiB, "app-mib", 100, "size of the app layer (the one with the changed file) in MiB")
	flag.BoolVar(&c.gitUpdate, "git-update", true, "also push the one-file-changed image with the git CLI (slow: git delta-compresses it)")
	flag.BoolVar(&c.imagesOnly, "images-only", false, "generate the images into the cache directory (when absent), print the first image's path and exit")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	pullship, cache, work string
	baseMiB, appMiB       int64
	gitUpdate, imagesOnly bool
}

// images describes the generated tarballs.
type images struct {
	v1, v2    string // paths
	size      int64  // of v1
	appLayer  int64  // uncompressed size of the app layer tar
	files     int
	changed   string // the file that differs in v2
	generated time.Duration
	fromCache bool
}

func run(c config) error {
	var err error
	if c.pullship, err = filepath.Abs(c.pullship); err != nil {
		return err
	}
	if c.cache, err = filepath.Abs(c.cache); err != nil {
		return err
	}
	if _, err := os.Stat(c.pullship); err != nil {
		return fmt.Errorf("pullship binary: %w (run make build)", err)
	}
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		return fmt.Errorf("/usr/bin/time is missing (apt-get install -y time): %w", err)
	}
	if c.work == "" {
		d, err := os.MkdirTemp("", "pullship-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		c.work = d
	}
	img, err := prepareImages(c)
	if err != nil {
		return err
	}
	if c.imagesOnly {
		fmt.Println(img.v1)
		return nil
	}
	// Both paths read the same tarballs: warm the page cache for both alike.
	for _, p := range []string{img.v1, img.v2} {
		if err := readAll(p); err != nil {
			return err
		}
	}
	b := &bench{c: c, img: img, env: benchEnv(c.work), load: loadavg()}
	return b.run()
}

type bench struct {
	c    config
	img  *images
	env  []string
	rows []row
	load string // at the start
}

type row = bundlertest.BenchRow

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func (b *bench) run() error {
	w := b.c.work
	fmt.Printf("image: %s (%s, %d files from this machine; app layer %s; v2 changes %s)%s\n",
		mib(b.img.size), filepath.Base(b.img.v1), b.img.files, mib(b.img.appLayer), b.img.changed,
		map[bool]string{true: ", cached", false: fmt.Sprintf(", generated in %.1fs", b.img.generated.Seconds())}[b.img.fromCache])

	// --- git CLI baseline: add + commit + push to a local bare repository.
	gitBare := filepath.Join(w, "git.git")
	gitWT := filepath.Join(w, "git-wt")
	if err := b.quiet(w, "git", "init", "-q", "--bare", gitBare); err != nil {
		return err
	}
	if err := b.quiet(w, "git", "init", "-q", gitWT); err != nil {
		return err
	}
	if err := os.Link(b.img.v1, filepath.Join(gitWT, "image.tar")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(gitWT, "app.conf"), []byte(template(1)), 0o644); err != nil {
		return err
	}
	gitFirst, err := b.gitCommitPush(gitWT, gitBare, "image")
	if err != nil {
		return err
	}
	fmt.Printf("git CLI first push: %.2fs, peak RSS %s, stored %s, sent %s\n", gitFirst.wall.Seconds(), kib(gitFirst.rss), mib(gitFirst.stored), mib(gitFirst.sent))

	// --- pullship: keys, root, fleet (its own git work tree), two repositories.
	keys := filepath.Join(w, "keys")
	fleet := filepath.Join(w, "fleet")
	for _, d := range []string{keys, fleet} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"keygen", "--no-password", "--out", filepath.Join(keys, "rel")},
		{"keygen", "--no-password", "--out", filepath.Join(keys, "cn-status")},
		{"root", "init", "--key", filepath.Join(keys, "rel.pub"), "--threshold", "1",
			"--sign", filepath.Join(keys, "rel.key"), "--out", filepath.Join(keys, "root-1.toml")},
	} {
		if err := b.quiet(w, b.c.pullship, args...); err != nil {
			return err
		}
	}
	if err := writeFleet(fleet, filepath.Join(keys, "cn-status.pub")); err != nil {
		return err
	}
	if err := b.quiet(fleet, "git", "init", "-q"); err != nil {
		return err
	}
	if err := b.quiet(fleet, "git", "add", "."); err != nil {
		return err
	}
	if err := b.quiet(fleet, "git", "commit", "-q", "-m", "fleet"); err != nil {
		return err
	}

	// git daemon, counting bytes.
	srv := filepath.Join(w, "srv")
	if err := os.MkdirAll(srv, 0o755); err != nil {
		return err
	}
	px, err := newDaemon(srv, b.env)
	if err != nil {
		return err
	}
	defer px.Close()

	dir := &target{name: "directory", url: filepath.Join(w, "releases.git"), bare: filepath.Join(w, "releases.git"), cache: filepath.Join(w, "cache-dir")}
	dmn := &target{name: "git daemon", url: "git://" + px.Addr() + "/releases.git", bare: filepath.Join(srv, "releases.git"), cache: filepath.Join(w, "cache-daemon"), daemon: px}
	if err := b.quiet(w, "git", "init", "-q", "--bare", dmn.bare); err != nil {
		return err
	}
	for _, t := range []*target{dir, dmn} {
		if err := b.quiet(w, b.c.pullship, "init", "--repo", t.url, "--cache", filepath.Join(w, "cache-init-"+strings.ReplaceAll(t.name, " ", "")), "--root", filepath.Join(keys, "root-1.toml")); err != nil {
			return err
		}
	}

	// Scenario 2: first release.
	first := map[*target]measure{}
	for _, t := range []*target{dir, dmn} {
		m, err := b.release(t, fleet, keys, b.img.v1)
		if err != nil {
			return err
		}
		first[t] = m
		if err := b.quiet(w, "git", "-C", t.bare, "fsck", "--strict", "--no-dangling"); err != nil {
			return fmt.Errorf("pushed repository fails git fsck: %w", err)
		}
	}
	for _, t := range []*target{dir, dmn} {
		m := first[t]
		sc := "2 first release (" + t.name + ")"
		speed := gitFirst.wall.Seconds() / m.wall.Seconds()
		b.add(bundlertest.Row(sc, "time", secs(m.wall), secs(gitFirst.wall)+" git CLI", fmt.Sprintf("%.1f× faster", speed), "≥ 5× faster", yes(speed >= 5)))
		b.add(bundlertest.Row(sc, "CPU time", secs(m.cpu), secs(gitFirst.cpu)+" git CLI", fmt.Sprintf("%.1f× less", gitFirst.cpu.Seconds()/m.cpu.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "peak RSS", kib(m.rss), kib(gitFirst.rss)+" git CLI", fmt.Sprintf("%.2f×", float64(m.rss)/float64(gitFirst.rss)), "≤ 128 MiB", yes(m.rss <= 128<<10)))
		ours, theirs := t.bytes(m), t.bytes(gitFirst)
		b.add(bundlertest.Row(sc, t.bytesMetric(), mib(ours), mib(theirs)+" git CLI", fmt.Sprintf("%.2f×", float64(ours)/float64(theirs)), "-", "-"))
	}

	// Scenario 3: config-only release (one template line changed, committed).
	if err := os.WriteFile(filepath.Join(fleet, "app.tmpl"), []byte(template(2)), 0o644); err != nil {
		return err
	}
	if err := b.quiet(fleet, "git", "commit", "-q", "-am", "config"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(gitWT, "app.conf"), []byte(template(2)), 0o644); err != nil {
		return err
	}
	gitConf, err := b.gitCommitPush(gitWT, gitBare, "config")
	if err != nil {
		return err
	}
	for _, t := range []*target{dir, dmn} {
		m, err := b.release(t, fleet, keys, b.img.v1)
		if err != nil {
			return err
		}
		sc := "3 config-only (" + t.name + ")"
		b.add(bundlertest.Row(sc, "time", secs(m.wall), secs(gitConf.wall)+" git CLI", fmt.Sprintf("%.2f×", m.wall.Seconds()/gitConf.wall.Seconds()), "< 1 s", yes(m.wall < time.Second)))
		b.add(bundlertest.Row(sc, "CPU time", secs(m.cpu), secs(gitConf.cpu)+" git CLI", fmt.Sprintf("%.2f×", m.cpu.Seconds()/gitConf.cpu.Seconds()), "-", "-"))
		b.add(bundlertest.Row(sc, "peak RSS", kib(m.rss), kib(gitConf.rss)+" git CLI", fmt.Sprintf("%.2f×", float64(m.rss)/float64(gitConf.rss)), "-", "-"))
		ours, theirs := t.bytes(m), t.bytes(gitConf)
		b.add(bundlertest.Row(sc, t.bytesMetric(), kb(ours), kb(theirs)+" git CLI", fmt.Sprintf("%.2f×", float64(ours)/float64(theirs)), "< 20 KB", yes(ours < 20000)))
	}

	// Scenario 4: the image with one changed file in the app layer.
	oneFile := map[*target]measure{} // for the git CLI rows
	for _, t := range []*target{dir, dmn} {
		m, err := b.release(t, fleet, keys, b.img.v2)
		if err != nil {
			return err
		}
		oneFile[t] = m
		sc := "4 one file changed (" + t.name + ")"
		frac := float64(t.bytes(m)) / float64(b.img.appLayer)
		b.add(bundlertest.Row(sc, t.bytesMetric(), kb(t.bytes(m)), mib(b.img.appLayer)+" layer", fmt.Sprintf("%.2f%%", 100*frac), "< 5% of layer", yes(frac < 0.05)))
		b.add(bundlertest.Row(sc, "time / CPU", secs(m.wall)+" / "+secs(m.cpu), "-", "-", "-", "-"))
		b.add(bundlertest.Row(sc, "peak RSS", kib(m.rss), "-", "-", "≤ 128 MiB", yes(m.rss <= 128<<10)))
	}
	if b.c.gitUpdate {
		if err := os.Remove(filepath.Join(gitWT, "image.tar")); err != nil {
			return err
		}
		if err := os.Link(b.img.v2, filepath.Join(gitWT, "image.tar")); err != nil {
			return err
		}
		g, err := b.gitCommitPush(gitWT, gitBare, "image v2")
		if err != nil {
			return err
		}
		for _, t := range []*target{dir, dmn} {
			b.add(bundlertest.Row("4 one file changed (git CLI)", t.bytesMetric(), kb(t.bytes(g)), mib(b.img.appLayer)+" layer",
				fmt.Sprintf("%.2f%%", 100*float64(t.bytes(g))/float64(b.img.appLayer)), "(pullship: "+kb(t.bytes(oneFile[t]))+")", "-"))
		}
		b.add(bundlertest.Row("4 one file changed (git CLI)", "time / CPU", secs(g.wall)+" / "+secs(g.cpu), "-", "-", "-", "-"))
		b.add(bundlertest.Row("4 one file changed (git CLI)", "peak RSS", kib(g.rss), "-", "-", "-", "-"))
	}
	b.print()
	fmt.Printf("\n%d CPUs; load average at start: %s, at end: %s (wall times are only comparable within one run)\n",
		runtime.NumCPU(), b.load, loadavg())
	return nil
}

// target is a release repository the bench releases to.
type target struct {
	name, url, bare, cache string
	daemon                 *daemon
}

// bytesMetric names what bytes counts for this target: for a directory,
// the growth of the bare repository's objects/ (pullship writes there
// in-process, git receive-pack for the git CLI); for git daemon, what the
// client sent to the server (pullship: counted by the daemon wrapper; git CLI: its pack
// stream into receive-pack).
func (t *target) bytesMetric() string {
	if t.daemon != nil {
		return "bytes sent"
	}
	return "bytes stored"
}

func (t *target) bytes(m measure) int64 {
	if t.daemon != nil {
		return m.sent
	}
	return m.stored
}

type measure struct {
	wall   time.Duration
	cpu    time.Duration // user + system, of the process and its children
	rss    int64         // KiB
	stored int64         // growth of the bare repository's objects/
	sent   int64         // bytes the client sent to the server (0: not measured)
	out    string
}

// release runs pullship release and measures it.
func (b *bench) release(t *target, fleet, keys, img string) (measure, error) {
	before, err := dirSize(filepath.Join(t.bare, "objects"))
	if err != nil {
		return measure{}, err
	}
	var up0, down0 int64
	if t.daemon != nil {
		up0, down0 = t.daemon.up.Load(), t.daemon.down.Load()
	}
	m, err := b.timed(b.c.work, b.c.pullship, "release", "--repo", t.url, "--cache", t.cache,
		"--fleet", filepath.Join(fleet, "fleet.toml"), "--image", img, "--key", filepath.Join(keys, "rel.key"), "--quiet")
	if err != nil {
		if t.daemon != nil {
			err = fmt.Errorf("%w\n%s", err, t.daemon.failures())
		}
		return m, err
	}
	after, err := dirSize(filepath.Join(t.bare, "objects"))
	if err != nil {
		return m, err
	}
	m.stored = after - before
	if t.daemon != nil {
		if err := t.daemon.idle(10 * time.Second); err != nil {
			return m, err
		}
		m.sent = t.daemon.up.Load() - up0
		fmt.Printf("  (received from git daemon: %s)\n", kb(t.daemon.down.Load()-down0))
	}
	fmt.Printf("pullship release → %s: %.2fs (CPU %.2fs), peak RSS %s, %s %s; pullship says: %s\n", t.name, m.wall.Seconds(), m.cpu.Seconds(), kib(m.rss),
		t.bytesMetric(), kb(t.bytes(m)), pushedLine(m.out))
	return m, nil
}

var pushedRE = regexp.MustCompile(`(?m)^\s*(pushed .*|image .*)$`)

func pushedLine(out string) string {
	return strings.Join(pushedRE.FindAllString(out, -1), ";")
}

// gitCommitPush times git add -A, commit and push of a work tree to bare
// and the growth of bare's objects.
func (b *bench) gitCommitPush(wt, bare, msg string) (measure, error) {
	before, err := dirSize(filepath.Join(bare, "objects"))
	if err != nil {
		return measure{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return measure{}, err
	}
	count := filepath.Join(b.c.work, "receive-pack-count")
	var total measure
	for _, args := range [][]string{
		{"-C", wt, "add", "-A"},
		{"-C", wt, "commit", "-q", "-m", msg},
		{"-C", wt, "push", "-q", "--receive-pack", shellQuote(self) + " " + countFlag + " " + shellQuote(count), bare, "HEAD:refs/heads/releases"},
	} {
		m, err := b.timed(wt, "git", args...)
		if err != nil {
			return total, err
		}
		total.wall += m.wall
		total.cpu += m.cpu
		total.rss = max(total.rss, m.rss)
		fmt.Printf("  git %s: %.2fs (CPU %.2fs), peak RSS %s\n", args[2], m.wall.Seconds(), m.cpu.Seconds(), kib(m.rss))
	}
	after, err := dirSize(filepath.Join(bare, "objects"))
	if err != nil {
		return total, err
	}
	total.stored = after - before
	data, err := os.ReadFile(count)
	if err != nil {
		return total, fmt.Errorf("git push: byte count: %w", err)
	}
	if total.sent, err = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err != nil {
		return total, fmt.Errorf("git push: byte count: %w", err)
	}
	fmt.Printf("  git CLI: stored %s, sent %s\n", kb(total.stored), kb(total.sent))
	return total, nil
}

// timed runs name args under /usr/bin/time -v.
func (b *bench) timed(dir, name string, args ...string) (measure, error) {
	m, err := bundlertest.Timed(b.c.work, dir, b.env, nil, name, args...)
	if err != nil {
		return measure{}, err
	}
	return measure{wall: m.Wall, cpu: m.CPU, rss: m.RSS, out: m.Out}, nil
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

// daemon serves git:// on a loopback port it holds for the whole run (no
// window for another process to take it): every connection is handed to
// its own `git daemon --inetd` (the real server, receive-pack enabled), and
// the bytes each way are counted.
type daemon struct {
	l        net.Listener
	args     []string
	env      []string
	up, down atomic.Int64
	active   atomic.Int64
	mu       sync.Mutex
	errs     []string // what failed connections printed
}

func newDaemon(base string, env []string) (*daemon, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &daemon{l: l, env: env, args: []string{"daemon", "--inetd", "--export-all", "--enable=receive-pack",
		"--informative-errors", "--base-path=" + base, base}}
	go d.serve()
	return d, nil
}

func (d *daemon) Addr() string { return d.l.Addr().String() }
func (d *daemon) Close() error { return d.l.Close() }

func (d *daemon) serve() {
	for {
		c, err := d.l.Accept()
		if err != nil {
			return
		}
		d.active.Add(1)
		go d.handle(c)
	}
}

func (d *daemon) handle(c net.Conn) {
	defer d.active.Add(-1)
	defer c.Close()
	var stderr bytes.Buffer
	cmd := exec.Command("git", d.args...)
	cmd.Env = d.env
	cmd.Stdin = &countReader{r: c, n: &d.up}
	cmd.Stdout = &countWriter{w: c, n: &d.down}
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		d.mu.Lock()
		d.errs = append(d.errs, fmt.Sprintf("git daemon --inetd: %v: %s", err, stderr.String()))
		d.mu.Unlock()
	}
}

// failures returns what failed connections reported.
func (d *daemon) failures() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.errs, "\n")
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// idle waits until every proxied connection has ended, so that the
// counters hold all bytes of the command that just exited.
func (d *daemon) idle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for d.active.Load() != 0 {
		if time.Now().After(deadline) {
			return errors.New("git daemon: connections still open after the command exited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// dirSize is the sum of the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func template(v int) string {
	return fmt.Sprintf("node = {{.Node}}\nlistener.tcp.default = 0.0.0.0:1883\nmax_connections = %d\nallow_anonymous = off\n", 10000*v)
}

func writeFleet(dir, statusPub string) error {
	pub, err := os.ReadFile(statusPub)
	if err != nil {
		return err
	}
	files := map[string]string{
		"cn.pub":   string(pub),
		"app.tmpl": template(1),
		"fleet.toml": `[service]
image = "bench/app:1"
container = "app-{{.Node}}"
reload = { action = "restart" }

[[template]]
name = "app.conf"
source = "app.tmpl"
target = "/etc/app/app.conf"

[attach]
driver = "none"

[[node]]
name = "cn"
region = "cn"
wave = 1
address = "10.0.0.1/24"
status_key = "cn.pub"
`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
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

// --- image generation ---

// imageVersion names the generator: bump it when the selection changes so
// that stale cached images are not reused.
const imageVersion = "v2"

// layerRoots are where each layer's files come from, walked in lexical order.
var (
	baseRoots = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/share"}
	appRoots  = []string{"/usr/bin", "/usr/local/go/pkg/tool", "/usr/local/go/bin", "/usr/sbin", "/usr/local/go"}
)

// maxFile caps one file, so that no single huge file dominates a layer.
const maxFile = 32 << 20

type srcFile struct {
	path string
	size int64
	mode int64
}

// pick lists regular files under roots, sorted, until total reaches limit.
// Each content appears once (hard links and copies are skipped: an image
// full of identical files would flatter chunk dedup).
func pick(roots []string, limit int64, seen *selection) ([]srcFile, error) {
	var out []srcFile
	var total int64
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if total >= limit {
				return filepath.SkipAll
			}
			if err != nil {
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || seen.paths[p] {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Size() == 0 || fi.Size() > maxFile || total+fi.Size() > limit {
				return nil
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				ino := [2]uint64{st.Dev, st.Ino}
				if seen.inodes[ino] {
					return nil
				}
				seen.inodes[ino] = true
			}
			dup, err := seen.duplicate(p, fi.Size())
			if err != nil || dup {
				return nil // unreadable or a copy
			}
			seen.paths[p] = true
			out = append(out, srcFile{path: p, size: fi.Size(), mode: int64(fi.Mode().Perm())})
			total += fi.Size()
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if total < limit*9/10 {
		return nil, fmt.Errorf("only %d MiB of readable files under %v (wanted %d MiB)", total>>20, roots, limit>>20)
	}
	return out, nil
}

// selection is what pick has taken so far.
type selection struct {
	paths  map[string]bool
	inodes map[[2]uint64]bool
	bySize map[int64][]string // sizes seen, with the files not yet hashed
	sums   map[[32]byte]bool  // contents of hashed files
}

func newSelection() *selection {
	return &selection{paths: map[string]bool{}, inodes: map[[2]uint64]bool{},
		bySize: map[int64][]string{}, sums: map[[32]byte]bool{}}
}

// duplicate reports whether p has the content of a file taken before,
// hashing only files whose size collides.
func (s *selection) duplicate(p string, size int64) (bool, error) {
	pending, ok := s.bySize[size]
	if !ok {
		f, err := os.Open(p) // only readable files
		if err != nil {
			return false, err
		}
		f.Close()
		s.bySize[size] = []string{p}
		return false, nil
	}
	for _, q := range pending {
		sum, err := fileSum(q)
		if err != nil {
			return false, err
		}
		s.sums[sum] = true
	}
	s.bySize[size] = nil
	sum, err := fileSum(p)
	if err != nil {
		return false, err
	}
	if s.sums[sum] {
		return true, nil
	}
	s.sums[sum] = true
	return false, nil
}

func fileSum(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}

// lazyFile opens a file on first read and closes it at EOF, so that a
// layer of thousands of files never holds more than one open.
type lazyFile struct {
	path string
	f    *os.File
	done bool
	flip int64 // >= 0: invert 16 bytes at this offset (the changed file)
	off  int64
}

func (l *lazyFile) Read(p []byte) (int, error) {
	if l.done {
		return 0, io.EOF
	}
	if l.f == nil {
		f, err := os.Open(l.path)
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	n, err := l.f.Read(p)
	if l.flip >= 0 {
		for i := range n {
			if o := l.off + int64(i); o >= l.flip && o < l.flip+16 {
				p[i] ^= 0xff
			}
		}
	}
	l.off += int64(n)
	if err != nil {
		l.f.Close()
		l.done = true
	}
	return n, err
}

func layerFiles(files []srcFile, changed int) []imagetest.File {
	out := make([]imagetest.File, len(files))
	for i, f := range files {
		flip := int64(-1)
		if i == changed {
			flip = f.size / 2
		}
		out[i] = imagetest.File{Path: strings.TrimPrefix(f.path, "/"), Mode: f.mode, Size: f.size,
			Content: func() io.Reader { return &lazyFile{path: f.path, flip: flip} }}
	}
	return out
}

func prepareImages(c config) (*images, error) {
	if err := os.MkdirAll(c.cache, 0o755); err != nil {
		return nil, err
	}
	// The cache never belongs in git, whatever the repository's .gitignore says.
	if err := os.WriteFile(filepath.Join(c.cache, ".gitignore"), []byte("*\n"), 0o644); err != nil {
		return nil, err
	}
	seen := newSelection()
	base, err := pick(baseRoots, c.baseMiB<<20, seen)
	if err != nil {
		return nil, err
	}
	app, err := pick(appRoots, c.appMiB<<20, seen)
	if err != nil {
		return nil, err
	}
	// The changed file: the first small file past the middle of the app layer.
	changed := -1
	for i := len(app) / 2; i < len(app); i++ {
		if app[i].size >= 4<<10 && app[i].size <= 256<<10 {
			changed = i
			break
		}
	}
	if changed < 0 {
		return nil, errors.New("no small file in the app layer to change")
	}
	img := &images{files: len(base) + len(app), changed: app[changed].path}
	for _, f := range app {
		img.appLayer += f.size
	}
	name := fmt.Sprintf("image-%s-%d-%d", imageVersion, c.baseMiB, c.appMiB)
	img.v1 = filepath.Join(c.cache, name+"-1.tar")
	img.v2 = filepath.Join(c.cache, name+"-2.tar")
	_, e1 := os.Stat(img.v1)
	_, e2 := os.Stat(img.v2)
	img.fromCache = e1 == nil && e2 == nil
	if !img.fromCache {
		start := time.Now()
		for i, p := range []string{img.v1, img.v2} {
			ch := -1
			if i == 1 {
				ch = changed
			}
			spec := imagetest.Image{
				Layers:   [][]imagetest.File{layerFiles(base, -1), layerFiles(app, ch)},
				Cmd:      []string{"/usr/bin/env"},
				RepoTags: []string{"bench/app:1"},
			}
			if _, err := imagetest.WriteFile(p+".tmp", spec); err != nil {
				return nil, fmt.Errorf("generate %s: %w", p, err)
			}
			if err := os.Rename(p+".tmp", p); err != nil {
				return nil, err
			}
		}
		img.generated = time.Since(start)
	}
	st, err := os.Stat(img.v1)
	if err != nil {
		return nil, err
	}
	img.size = st.Size()
	// The app layer tar also holds headers and directories: take its real
	// size from the tarball when we can; the file total is a close lower bound.
	if n, err := layerSize(img.v1, 1); err == nil {
		img.appLayer = n
	}
	return img, nil
}

// layerSize returns the size of the i-th layer.tar of a legacy docker-save
// tarball, in the order the tarball holds them.
func layerSize(path string, i int) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return 0, fmt.Errorf("layer %d of %s: %w", i, path, err)
		}
		if strings.HasSuffix(h.Name, "/layer.tar") {
			if i == 0 {
				return h.Size, nil
			}
			i--
		}
	}
}

// countFlag makes this program a receive-pack wrapper for git push: it runs
// git receive-pack with the given arguments, counts the bytes git push
// sends it (commands and pack) and writes the count to a file.
const countFlag = "-count-receive-pack"

func countReceivePack(countFile string, args []string) error {
	cmd := exec.Command("git", append([]string{"receive-pack"}, args...)...)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	n, err := io.Copy(in, os.Stdin)
	in.Close()
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	if werr := os.WriteFile(countFile, []byte(strconv.FormatInt(n, 10)), 0o644); err == nil {
		err = werr
	}
	return err
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (b *bench) print() { bundlertest.PrintBench(os.Stdout, "pullship", b.rows) }

var (
	yes      = bundlertest.Met
	secs     = bundlertest.Secs
	kib      = bundlertest.KiB
	mib      = bundlertest.MiB
	kb       = bundlertest.KB
	loadavg  = bundlertest.LoadAvg
	benchEnv = bundlertest.BenchEnv
)
