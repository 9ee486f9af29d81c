package bundle_test

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// BenchmarkLinks is the `make bench` table of image fetches over emulated
// links (gittest.Link), each against its floor measured in the same run:
// a link that cuts every 8 MiB (bytes fetched against the image's packed
// size), a long-haul link of 200 ms round trip where one connection gets
// 2 MB/s and the link 12 MB/s (time against size / 12 MB/s), and loopback
// (time against `git fetch` of the same objects).
//
// The image is $PULLSHIP_BENCH_IMAGE (scripts/bench.sh passes the release
// bench's) or a generated 64 MiB one. $PULLSHIP_BENCH_CONNS lists
// connection counts to compare on the long-haul link (e.g. "1,2,4,8,12"),
// for choosing bundle.DefaultConnections.
//
//	go test -run '^$' -bench '^BenchmarkLinks$' -benchtime 1x ./bundler/shared/bundle/
func BenchmarkLinks(b *testing.B) {
	for range b.N {
		benchLinks(b)
	}
}

func benchLinks(b *testing.B) {
	ctx := context.Background()
	e := bundlertest.NewEnv(b)
	fleet := bundlertest.WriteFleet(b, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1",
		Template: "a\n", Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
	img := os.Getenv("PULLSHIP_BENCH_IMAGE")
	if img == "" {
		img = filepath.Join(e.Dir, "img.tar")
		if _, err := imagetest.WriteFile(img, imagetest.Image{Layers: [][]imagetest.File{{
			{Path: "a", Size: 40 << 20, Content: func() io.Reader { return imagetest.Nibbles(1, 40<<20) }},
			{Path: "b", Size: 24 << 20, Content: func() io.Reader { return imagetest.Random(2, 24<<20) }},
		}}, Cmd: []string{"/app"}, RepoTags: []string{"pullship-test/app:1"}}); err != nil {
			b.Fatal(err)
		}
	}
	e.Cut(b, fleet, img)
	daemon := gittest.Daemon(b, e.Dir).URL + "/releases.git"
	httpURL := gittest.HTTP(b, e.Dir, nil) + "/releases.git"
	meta, err := repo.Open(ctx, e.Repo, repo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	idx := newestImage(b, meta, mustInit(b, b.TempDir()))
	segs, err := bundle.Segments(idx)
	if err != nil {
		b.Fatal(err)
	}
	var packed, segMax int64
	for _, s := range segs {
		packed += s.Stored
		segMax = max(segMax, bundle.SegmentPackLimit(s))
	}
	fmt.Printf("\nimage: %s packed in %d segments (%s), %d chunks\n", bundlertest.MiB(packed), len(segs), filepath.Base(img), bundle.NewChunkSet(idx).Len())

	var rows []bundlertest.BenchRow
	servers := []struct{ name, url string }{{"git daemon", daemon}, {"http-backend", httpURL}}

	// A link that cuts every 8 MiB.
	const cutEvery = 8 << 20
	for _, srv := range servers {
		link := newLink(b, srv.url, gittest.LinkOptions{CutEvery: cutEvery})
		tries, fetched, _, _ := fetchThrough(b, link, srv.url, idx, bundle.FetchOptions{})
		cuts := link.Cuts()
		bound := packed + packed/10 + cuts*segMax
		rows = append(rows, bundlertest.Row("link cut every 8 MiB ("+srv.name+")", "bytes fetched",
			fmt.Sprintf("%s, %d tries, %d cuts", bundlertest.MiB(fetched), tries, cuts), bundlertest.MiB(packed)+" packed",
			fmt.Sprintf("%.3f×", float64(fetched)/float64(packed)),
			fmt.Sprintf("≤ packed + 10%% + 1 segment a cut (%.3f×)", float64(bound)/float64(packed)), bundlertest.Met(fetched <= bound)))
		link.Close()
	}

	// A long-haul link.
	longHaul := gittest.LinkOptions{Delay: 100 * time.Millisecond, ConnRate: 2e6, LinkRate: 12e6}
	floor := time.Duration(float64(packed) / 12e6 * float64(time.Second))
	conns := []int{bundle.DefaultConnections}
	if s := os.Getenv("PULLSHIP_BENCH_CONNS"); s != "" {
		conns = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				b.Fatalf("PULLSHIP_BENCH_CONNS: %v", err)
			}
			conns = append(conns, n)
		}
	}
	for _, srv := range servers {
		for _, n := range conns {
			link := newLink(b, srv.url, longHaul)
			_, _, took, opened := fetchThrough(b, link, srv.url, idx, bundle.FetchOptions{Connections: n})
			link.Close()
			ratio := took.Seconds() / floor.Seconds()
			rows = append(rows, bundlertest.Row(fmt.Sprintf("link 200 ms RTT, 2 MB/s a connection, 12 MB/s in all (%s, %d conn.)", srv.name, n), "fetch time",
				fmt.Sprintf("%s, %d TCP connections", bundlertest.Secs(took), opened), bundlertest.Secs(floor)+" = size / 12 MB/s",
				fmt.Sprintf("%.2f×", ratio), "≤ 1.3×", bundlertest.Met(ratio <= 1.3)))
		}
	}

	// Loopback, against git fetch of the same tag (medians of 3).
	for _, srv := range servers {
		var ours, theirs []time.Duration
		for range 3 {
			rem, err := repo.Open(ctx, srv.url, repo.Options{})
			if err != nil {
				b.Fatal(err)
			}
			st := mustInit(b, b.TempDir())
			newestImage(b, rem, st)
			start := time.Now()
			if err := bundle.FetchImage(ctx, rem, st, idx, nil); err != nil {
				b.Fatal(err)
			}
			ours = append(ours, time.Since(start))

			dir := b.TempDir()
			tag := bundle.ImageTag(idx.Digest)
			if out, err := exec.Command("git", "init", "-q", "--bare", dir).CombinedOutput(); err != nil {
				b.Fatalf("git init: %v\n%s", err, out)
			}
			start = time.Now()
			cmd := exec.Command("git", "-C", dir, "fetch", "-q", "--no-tags", srv.url, tag+":"+tag)
			cmd.Env = bundlertest.BenchEnv(b.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("git fetch: %v\n%s", err, out)
			}
			theirs = append(theirs, time.Since(start))
		}
		o, t := median(ours), median(theirs)
		ratio := o.Seconds() / t.Seconds()
		rows = append(rows, bundlertest.Row("loopback image fetch ("+srv.name+")", "time (median of 3)", bundlertest.Secs(o),
			bundlertest.Secs(t)+" git fetch", fmt.Sprintf("%.2f×", ratio), "≤ 1.0×", bundlertest.Met(ratio <= 1.0)))
	}
	bundlertest.PrintBench(os.Stdout, "pullship", rows)
	fmt.Printf("\nload average at the end: %s\n", bundlertest.LoadAvg())
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func mustInit(b testing.TB, dir string) *repo.Store {
	st, err := repo.Init(dir)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

func newLink(b testing.TB, rawURL string, o gittest.LinkOptions) *gittest.Link {
	u, err := url.Parse(rawURL)
	if err != nil {
		b.Fatal(err)
	}
	link, err := gittest.NewLink(u.Host, o)
	if err != nil {
		b.Fatal(err)
	}
	return link
}

// fetchThrough fetches the image into a new store through link, as the
// agent does (again after each failed try), and returns the tries, the
// bytes the link carried, the time the fetch took and the TCP connections
// it opened (the release branch's fetch before it not counted).
func fetchThrough(b testing.TB, link *gittest.Link, rawURL string, idx *schema.ImageIndex, o bundle.FetchOptions) (int, int64, time.Duration, int64) {
	ctx := context.Background()
	// Each link listens on a port of its own: no connection of an earlier
	// run is reused.
	rem, err := repo.Open(ctx, link.URL(rawURL), repo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	st := mustInit(b, b.TempDir())
	for range 5 {
		if _, err = rem.Fetch(ctx, st, repo.FetchRequest{Refs: []string{bundle.ReleasesRef}}); err == nil {
			break
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	before, conns := link.Down(), link.Conns()
	start := time.Now()
	for tries := 1; ; tries++ {
		err := bundle.FetchImageWith(ctx, rem, st, idx, nil, o)
		if err == nil {
			took := time.Since(start)
			if err := bundle.CheckChunks(ctx, st, idx); err != nil {
				b.Fatal(err)
			}
			return tries, link.Down() - before, took, link.Conns() - conns
		}
		if !bundle.IsNetworkError(err) || tries == 20 {
			b.Fatalf("try %d: %v", tries, err)
		}
	}
}
