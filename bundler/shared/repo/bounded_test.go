package repo

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
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
