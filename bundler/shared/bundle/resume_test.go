package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/chunks"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestFetchImageResumes: through a link that cuts every connection after
// 6 MiB, an image of 24 MiB (six segments) arrives, over one connection at
// a time and over two: each try keeps the segments that came whole and
// the next one asks only for the rest, so no byte comes twice beyond one
// segment per cut, and the image rebuilt as it arrives has the layers the
// config names (sha256 = diff_ids).
func TestFetchImageResumes(t *testing.T) {
	for _, tc := range []struct {
		server string
		conns  int
	}{{"git-daemon", 1}, {"http-backend", 1}, {"ssh", 1}, {"git-daemon", 2}, {"http-backend", 2}, {"ssh", 2}, {"ssh-v0", 1}, {"http-v0", 1}} {
		server := tc.server
		t.Run(fmt.Sprintf("%s/%d-connections", server, tc.conns), func(t *testing.T) {
			ctx := context.Background()
			e := bundlertest.NewEnv(t)
			fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1",
				Template: "a\n", Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
			big := imagetest.File{Path: "big", Size: 24 << 20, Content: func() io.Reader { return imagetest.Random(7, 24<<20) }}
			img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "v1.tar"), big)
			e.Cut(t, fleet, img)

			var direct string
			var sshd *gittest.SSHServer
			switch server {
			case "git-daemon":
				direct = gittest.Daemon(t, e.Dir).URL + "/releases.git"
			case "http-backend":
				direct = gittest.HTTP(t, e.Dir, nil) + "/releases.git"
			case "ssh":
				// Each connection a new SSH session, its host key pinned
				// for the link's address.
				sshd = gittest.SSHD(t, e.Dir)
				direct = sshd.RepoURL("releases.git")
			case "ssh-v0":
				// sshd as OpenSSH ships it: GIT_PROTOCOL dropped, the
				// server speaks v0 only.
				sshd = gittest.SSHDv0(t, e.Dir)
				direct = sshd.RepoURL("releases.git")
			case "http-v0":
				direct = gittest.HTTPv0(t, e.Dir) + "/releases.git"
			}
			u, err := url.Parse(direct)
			must(t, err)
			const cutEvery = 6 << 20
			lo := gittest.LinkOptions{CutEvery: cutEvery}
			if server == "ssh-v0" {
				// A connection a request, each carrying one segment: the
				// link cuts whichever carries its next 6 MiB.
				lo = gittest.LinkOptions{CutLinkEvery: cutEvery}
			}
			link, err := gittest.NewLink(u.Host, lo)
			must(t, err)
			t.Cleanup(link.Close)
			var opts repo.Options
			if sshd != nil {
				knownHosts := filepath.Join(e.Dir, "known_hosts")
				_, port, _ := strings.Cut(link.Addr, ":")
				must(t, os.WriteFile(knownHosts, []byte("[127.0.0.1]:"+port+" "+sshd.HostPub+"\n"), 0o644))
				opts, err = repo.Credentials{SSHKey: sshd.ClientKey, KnownHosts: knownHosts}.Options(link.URL(direct))
				must(t, err)
			}
			rem, err := repo.Open(ctx, link.URL(direct), opts)
			must(t, err)
			st, err := repo.Init(t.TempDir())
			must(t, err)
			idx := newestImage(t, rem, st)
			segs, err := bundle.Segments(idx)
			must(t, err)
			if len(segs) < 5 {
				t.Fatalf("%d segments: the test needs an image of several", len(segs))
			}
			var packed, maxSeg int64
			for _, s := range segs {
				packed += s.Stored
				maxSeg = max(maxSeg, bundle.SegmentPackLimit(s))
			}

			before := link.Down()
			tries := 0
			var (
				resumesMu sync.Mutex
				resumes   []bundle.Resume
				after     error // the cut that ended the try before
			)
			onResume := func(r bundle.Resume) {
				resumesMu.Lock()
				defer resumesMu.Unlock()
				resumes = append(resumes, r)
			}
			for {
				tries++
				// As the agent loads: the stream rebuilt while the
				// segments arrive, each chunk read as soon as it is in.
				live := repo.NewLivePack(st)
				fetched := make(chan error, 1)
				go func() {
					err := bundle.FetchImageWith(ctx, rem, st, idx, live, bundle.FetchOptions{Connections: tc.conns, OnResume: onResume, After: after})
					live.Finish(err)
					fetched <- err
				}()
				lerr := layersMatch(idx, bundle.LiveChunks{Ctx: ctx, Pack: live})
				live.StopReading()
				err := <-fetched
				live.Close()
				if err == nil {
					if lerr != nil {
						t.Fatalf("try %d: the image arrived, its stream rebuilt as it came: %v", tries, lerr)
					}
					break
				}
				if !bundle.IsNetworkError(err) {
					t.Fatalf("try %d: %v (not a network error)", tries, err)
				}
				t.Logf("try %d: %v", tries, err)
				after = err
				if tries == 10 {
					t.Fatalf("no image after %d tries", tries)
				}
			}
			fetched, cuts := link.Down()-before, link.Cuts()
			t.Logf("%d tries, %d cuts, %d bytes fetched for %d packed (%.3f×)", tries, cuts, fetched, packed, float64(fetched)/float64(packed))
			if cuts == 0 {
				t.Fatalf("no cut: the link did not cut every %d bytes", cutEvery)
			}
			if bound := packed + packed/10 + cuts*maxSeg; fetched > bound {
				t.Errorf("%d bytes fetched, more than packed + 10%% + one segment per cut (%d)", fetched, bound)
			}
			// Every cut is followed by a resume, within the try or at the
			// start of the next one (a cut that lands while the try gives
			// up on the remote has none of its own).
			var total, kept int64
			for _, c := range bundle.NewChunkSet(idx).List() {
				total += c.StoredSize()
			}
			for _, r := range resumes {
				t.Logf("resume: segment %d of %d, %d bytes kept, %d missing (%v)", r.Segment, r.Segments, r.Kept, r.Missing, r.Cut)
				if r.Kept+r.Missing != total || r.Segments != len(segs) || r.Segment < 1 || r.Segment > len(segs) || !bundle.IsNetworkError(r.Cut) {
					t.Errorf("resume %+v: the image's chunks are %d bytes in %d segments", r, total, len(segs))
				}
				kept = max(kept, r.Kept)
			}
			if len(resumes) == 0 || int64(len(resumes)) > cuts || kept == 0 {
				t.Errorf("%d resumes (at most %d bytes kept) for %d cuts: want one per cut, at least one keeping a segment", len(resumes), kept, cuts)
			}
			must(t, bundle.CheckChunks(ctx, st, idx))
			if tag, err := st.Ref(bundle.ImageTag(idx.Digest)); err != nil || tag != bundle.TagCommit(segs) {
				t.Fatalf("image tag at %s (%v), its first segment is %s", tag, err, bundle.TagCommit(segs))
			}
			checkLayers(t, idx, storeChunks{st})
		})
	}
}

// storeChunks reads chunks from a store.
type storeChunks struct{ st *repo.Store }

func (s storeChunks) Open(c schema.Chunk) (io.ReadCloser, error) {
	rc, err := s.st.OpenBlob(plumbing.NewHash(c.Blob), c.StoredSize())
	if err != nil {
		return nil, err
	}
	return chunks.Decode(rc, c)
}

// checkLayers rebuilds the image's docker-save stream from src and checks
// that each layer's sha256 is the diff_id its config names.
func checkLayers(t *testing.T, idx *schema.ImageIndex, src chunks.Source) {
	t.Helper()
	if err := layersMatch(idx, src); err != nil {
		t.Fatal(err)
	}
}

func layersMatch(idx *schema.ImageIndex, src chunks.Source) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(chunks.Rebuild(context.Background(), idx, src, pw, nil)) }()
	defer pr.Close()
	var manifest []struct {
		Config string
		Layers []string
	}
	var config struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	layers := map[string]string{}
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("rebuilt stream: %w", err)
		}
		switch {
		case h.Name == "manifest.json":
			err = json.NewDecoder(tr).Decode(&manifest)
		case strings.HasSuffix(h.Name, ".json") && !strings.Contains(h.Name, "/"):
			err = json.NewDecoder(tr).Decode(&config)
		default:
			sum := sha256.New()
			_, err = io.Copy(sum, tr)
			layers[h.Name] = "sha256:" + hex.EncodeToString(sum.Sum(nil))
		}
		if err != nil {
			return fmt.Errorf("rebuilt stream: %s: %w", h.Name, err)
		}
	}
	if len(manifest) != 1 || len(manifest[0].Layers) == 0 || len(manifest[0].Layers) != len(config.RootFS.DiffIDs) {
		return fmt.Errorf("rebuilt stream: manifest %+v, diff_ids %v", manifest, config.RootFS.DiffIDs)
	}
	for i, l := range manifest[0].Layers {
		if layers[l] != config.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %s: sha256 %s, diff_id %s", l, layers[l], config.RootFS.DiffIDs[i])
		}
	}
	return nil
}

// fetchHeapBudget bounds the heap a parallel image fetch, its stream
// rebuilt as the chunks arrive, takes from the OS: the agent's peak RSS
// target is 64 MiB (its memory limit is 40 MiB, which the heap from the OS
// overshoots by a few MiB).
const fetchHeapBudget = 56 << 20

// TestFetchImageHeap fetches a 48 MiB image from git daemon over one
// connection and over DefaultConnections, rebuilding its stream as the
// segments arrive (as the agent loads), each in a subprocess with the
// agent's memory limit, and checks the heap that process ever took from
// the OS: eight connections cost about 4 MiB more than one (five runs:
// 39.6–43.6 MiB over one, 43.5–47.5 MiB over eight).
func TestFetchImageHeap(t *testing.T) {
	if os.Getenv("PULLSHIP_HEAP_CHILD") == "fetch" {
		fetchHeapChild(t)
		return
	}
	e := bundlertest.NewEnv(t)
	fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1",
		Template: "a\n", Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "n1", Region: "r", Address: "10.0.0.1/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "a", Size: 48 << 20, Content: func() io.Reader { return imagetest.Random(9, 48<<20) }})
	e.Cut(t, fleet, img)
	url := gittest.Daemon(t, e.Dir).URL + "/releases.git"
	for _, conns := range []int{1, bundle.DefaultConnections} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFetchImageHeap$", "-test.v")
		// The agent's own settings (agent/cmd/pullship-agent): a 40 MiB
		// memory limit.
		cmd.Env = append(os.Environ(), "PULLSHIP_HEAP_CHILD=fetch", "PULLSHIP_HEAP_URL="+url, "PULLSHIP_HEAP_DIR="+t.TempDir(),
			"PULLSHIP_HEAP_CONNS="+strconv.Itoa(conns), "GOGC=100", "GOMEMLIMIT=40MiB")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		i := bytes.Index(out, []byte("heap-sys "))
		if i < 0 {
			t.Fatalf("child said no heap size:\n%s", out)
		}
		heap, _ := strconv.ParseInt(strings.Fields(string(out[i:]))[1], 10, 64)
		t.Logf("peak heap from the OS, 48 MiB image over %d connections, rebuilt as it arrived: %.1f MiB (budget %d MiB)",
			conns, float64(heap)/(1<<20), fetchHeapBudget>>20)
		if heap > fetchHeapBudget {
			t.Fatalf("heap %d bytes, budget %d", heap, fetchHeapBudget)
		}
	}
}

func fetchHeapChild(t *testing.T) {
	ctx := context.Background()
	rem, err := repo.Open(ctx, os.Getenv("PULLSHIP_HEAP_URL"), repo.Options{})
	must(t, err)
	st, err := repo.Init(os.Getenv("PULLSHIP_HEAP_DIR"))
	must(t, err)
	idx := newestImage(t, rem, st)
	runtime.GC()
	live := repo.NewLivePack(st)
	defer live.Close()
	fetched := make(chan error, 1)
	go func() {
		conns, _ := strconv.Atoi(os.Getenv("PULLSHIP_HEAP_CONNS"))
		err := bundle.FetchImageWith(ctx, rem, st, idx, live, bundle.FetchOptions{Connections: conns})
		live.Finish(err)
		fetched <- err
	}()
	// What the engine does with the stream: read it to its end.
	err = chunks.Rebuild(ctx, idx, bundle.LiveChunks{Ctx: ctx, Pack: live}, io.Discard, nil)
	live.StopReading()
	must(t, <-fetched)
	must(t, err)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("heap-sys %d\n", ms.HeapSys)
}
