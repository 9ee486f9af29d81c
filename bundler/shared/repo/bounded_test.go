package repo

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
)

// floodServer advertises n MiB of refs (and a 64 MiB error body on any
// other path).
func floodServer(t *testing.T, mib int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bw := bufio.NewWriterSize(w, 64<<10)
		defer bw.Flush()
		if !strings.HasSuffix(r.URL.Path, "/info/refs") || strings.HasPrefix(r.URL.Path, "/other") {
			w.WriteHeader(http.StatusInternalServerError)
			line := strings.Repeat("error ", 1000) + "\n"
			for n := 0; n < 64<<20; n += len(line) {
				if _, err := bw.WriteString(line); err != nil {
					return
				}
			}
			return
		}
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		fmt.Fprint(bw, pktLine("# service=git-upload-pack\n")+"0000")
		fmt.Fprint(bw, pktLine(strings.Repeat("1", 40)+" refs/heads/releases\x00ofs-delta\n"))
		for i, n := 0, 0; n < mib<<20; i++ {
			l := pktLine(fmt.Sprintf("%040x refs/heads/status/node-%d\n", i, i))
			if _, err := bw.WriteString(l); err != nil {
				return
			}
			n += len(l)
		}
		fmt.Fprint(bw, "0000")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/r.git"
}

// TestAdvertisementMemory: a server advertising 100 MiB of refs (or
// answering with a 64 MiB error body) is read only up to a bound, and the
// host's heap stays under 64 MiB.
func TestAdvertisementMemory(t *testing.T) {
	const env = "PULLSHIP_TEST_ADVERTISEMENT"
	if which := os.Getenv(env); which != "" {
		childMemory(t, func() {
			url := floodServer(t, 100)
			if which == "error body" {
				url = strings.Replace(url, "/r.git", "/other.git", 1)
			}
			r, err := Open(context.Background(), url, Options{})
			must(t, err)
			st, err := Init(t.TempDir())
			must(t, err)
			_, err = r.Fetch(context.Background(), st, FetchRequest{Refs: []string{"refs/heads/releases"}})
			t.Logf("fetch: %v", err)
			if err == nil || !strings.Contains(err.Error(), "limit") && which != "error body" {
				t.Errorf("fetch: %v, want a size limit", err)
			}
			_, err = r.Refs(context.Background())
			t.Logf("refs: %v", err)
		})
		return
	}
	hostileMemory(t, "TestAdvertisementMemory", env, map[string][]byte{"100 MiB advertisement": nil, "error body": nil}, 64<<20)
}

// FuzzAdvertisement: a ref advertisement is decoded through the bound the
// remote reads it with, allocating within a budget.
func FuzzAdvertisement(f *testing.F) {
	f.Add([]byte(pktLine(strings.Repeat("1", 40)+" refs/heads/releases\x00ofs-delta side-band-64k\n") + pktLine(strings.Repeat("2", 40)+" refs/heads/status/a\n") + "0000"))
	f.Add([]byte("0000"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ar := packp.NewAdvRefs()
		err := ar.Decode(&limitedReader{r: bytes.NewReader(data), left: maxAdvertisement, what: "ref advertisement"})
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > uint64(64*len(data))+1<<20 {
			t.Fatalf("decoding %d bytes allocated %d", len(data), got)
		}
		if err == nil {
			_ = advRefsMap(ar)
		}
	})
}

// FuzzSidebandPack: an upload-pack response in sideband framing, as
// fetchPack reads it (demuxer under the bound, then the indexer and the
// delta resolver), allocates within a budget.
func FuzzSidebandPack(f *testing.F) {
	blob := []byte("hello pullship\n")
	pack := rawPack(rawEntry{3, int64(len(blob)), blob})
	f.Add(append([]byte(pktLine("\x01"+string(pack[:10]))+pktLine("\x02progress\n")+pktLine("\x01"+string(pack[10:]))), "0000"...))
	f.Add([]byte(pktLine("\x03fatal\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st, err := Init(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		r := sideband.NewDemuxer(sideband.Sideband64k, &limitedReader{r: bytes.NewReader(data), left: 1 << 20, what: "pack", err: ErrPackTooLarge})
		_ = st.receivePack(r, packLimits{inflate: 2 << 20, objects: 1 << 12}, nil)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 24<<20 {
			t.Fatalf("receiving %d bytes allocated %d MiB", len(data), got>>20)
		}
	})
}
