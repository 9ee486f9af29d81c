package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/client"
)

// chunkSizes serves a fake engine on a unix socket and returns the sizes of
// the chunks in which the body of each image load arrived.
func chunkSizes(t *testing.T, sock string) <-chan []int {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	sizes := make(chan []int, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("API-Version", "1.41")
		fmt.Fprint(w, "OK")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/images/load") || len(r.TransferEncoding) == 0 {
			http.Error(w, "want a chunked image load, got "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		// The raw connection: net/http's server hides chunk boundaries.
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		var got []int
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				t.Errorf("read chunk size: %v", err)
				return
			}
			n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
			if err != nil {
				t.Errorf("chunk size line %q: %v", line, err)
				return
			}
			if _, err := io.CopyN(io.Discard, rw, n+2); err != nil { // data and CRLF
				t.Errorf("read chunk: %v", err)
				return
			}
			if n == 0 {
				break
			}
			got = append(got, int(n))
		}
		sizes <- got
		body := `{"stream":"Loaded image ID: sha256:` + strings.Repeat("0", 64) + `\n"}` + "\n"
		fmt.Fprintf(rw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		rw.Flush()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sizes
}

// An image stream goes to a local engine in chunks of streamPiece, not in
// net/http's 32 KiB.
func TestDockerClientSendsPieces(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	sizes := chunkSizes(t, sock)
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	cli, tr, err := dockerClient()
	if err != nil {
		t.Fatal(err)
	}
	d := &Docker{cli: cli, tr: tr}
	defer d.Close()

	pr, pw := io.Pipe()
	const total = 6 * streamPiece
	go func() {
		piece := make([]byte, streamPiece)
		for range total / streamPiece {
			if _, err := pw.Write(piece); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp, err := cli.ImageLoad(context.Background(), bodyReader(pr), client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatal(err)
	}
	out, err := readLoadOutput(resp.Body, resp.JSON)
	resp.Body.Close()
	if err != nil || len(out.IDs) != 1 {
		t.Fatalf("load output %+v, %v", out, err)
	}
	got := <-sizes
	sum := 0
	for _, n := range got {
		sum += n
		if n > streamPiece {
			t.Errorf("a chunk of %d bytes, more than streamPiece", n)
		}
	}
	if sum != total {
		t.Fatalf("chunks %v hold %d bytes, want %d", got, sum, total)
	}
	if len(got) > total/streamPiece+1 {
		t.Errorf("body came in %d chunks %v, want %d of %d bytes", len(got), got[:min(len(got), 8)], total/streamPiece, streamPiece)
	}
}
