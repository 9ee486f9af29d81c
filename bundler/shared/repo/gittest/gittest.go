// Package gittest starts real git servers on loopback for tests: git
// daemon (git://) and git http-backend (smart HTTP), both serving the bare
// repositories under one base directory, with pushes enabled.
package gittest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Daemon serves the repositories under base with git daemon and returns
// its git:// base URL (append "/<repo>.git"). The daemon stops with the
// test; Stop stops it earlier (a remote that went down).
func Daemon(t testing.TB, base string) *Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{t: t, base: base, port: port, URL: "git://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Server is a git daemon that can be stopped and started again on the same
// port.
type Server struct {
	URL  string
	t    testing.TB
	base string
	port int
	cmd  *exec.Cmd
}

// Start (re)starts the daemon and waits until it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	// git-daemon itself, not the "git daemon" wrapper: killing the wrapper
	// would leave the daemon serving.
	cmd := exec.Command(filepath.Join(execPath(s.t), "git-daemon"), "--export-all", "--enable=receive-pack", "--reuseaddr",
		"--informative-errors", "--base-path="+s.base, "--listen=127.0.0.1", "--port="+strconv.Itoa(s.port), s.base)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+s.base)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	waitListen(s.t, strings.TrimPrefix(s.URL, "git://"), func() string { return "(git daemon)" })
}

// execPath is git's directory of helper programs.
func execPath(t testing.TB) string {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// Stop kills the daemon and waits until its port refuses connections.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
	addr := strings.TrimPrefix(s.URL, "git://")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		c.Close()
	}
}

// HTTP serves the repositories under base through git http-backend (CGI)
// and returns the base URL. conns, when not nil, counts TCP connections.
func HTTP(t testing.TB, base string, conns *atomic.Int32) string {
	t.Helper()
	return httpBackend(t, base, conns, true)
}

// HTTPv0 is [HTTP] without the Git-Protocol header passed on to git
// http-backend, as a web server set up without it does: the server speaks
// protocol v0 only.
func HTTPv0(t testing.TB, base string) string {
	t.Helper()
	return httpBackend(t, base, nil, false)
}

func httpBackend(t testing.TB, base string, conns *atomic.Int32, v2 bool) string {
	t.Helper()
	h := &cgi.Handler{
		Path: filepath.Join(execPath(t), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + base},
	}
	// Go's CGI host refuses chunked bodies (git itself pushes large packs
	// chunked); git http-backend reads to EOF when CONTENT_LENGTH is unset.
	unchunk := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.TransferEncoding = nil
		if !v2 {
			// The CGI host passes each header on as HTTP_*; http-backend
			// takes HTTP_GIT_PROTOCOL for GIT_PROTOCOL.
			r.Header.Del("Git-Protocol")
		}
		h.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(unchunk)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew && conns != nil {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// InitBare creates the bare repository base/name with pushes allowed over
// HTTP, and returns its path.
func InitBare(t testing.TB, base, name string) string {
	t.Helper()
	dir := filepath.Join(base, name)
	for _, args := range [][]string{{"init", "-q", "--bare", dir}, {"-C", dir, "config", "http.receivepack", "true"}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// Refs points each of the refs names (full names) of the bare repository
// dir at one commit of the empty tree with message, made with the git CLI,
// in one ref transaction; then packs the refs, as a server's are. It
// returns the commit's id.
func Refs(t testing.TB, dir, message string, names []string) string {
	t.Helper()
	tree := Git(t, dir, "", "hash-object", "-w", "-t", "tree", "--stdin")
	commit := Git(t, dir, "", "commit-tree", tree, "-m", message)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "create %s %s\n", name, commit)
	}
	Git(t, dir, b.String(), "update-ref", "--stdin")
	Git(t, dir, "", "pack-refs", "--all")
	return commit
}

// Git runs the git CLI in the repository dir with stdin, as a fixed author
// and committer and without the system's config, and returns its output
// trimmed.
func Git(t testing.TB, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x", "GIT_CONFIG_NOSYSTEM=1")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// StoredBlobs reports, for every blob in the packs of the git directory dir
// (as `git verify-pack -v` lists them, not deltified), whether the pack
// keeps its content in zlib stored blocks only (copied, not deflated).
func StoredBlobs(t testing.TB, dir string) map[string]bool {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no pack in %s (%v)", dir, err)
	}
	stored := map[string]bool{}
	for _, p := range packs {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("git", "verify-pack", "-v", strings.TrimSuffix(p, ".pack")+".idx").Output()
		if err != nil {
			t.Fatalf("git verify-pack %s: %v", p, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) != 5 || f[1] != "blob" {
				continue
			}
			off, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil || off >= int64(len(data)) {
				t.Fatalf("verify-pack line %q", line)
			}
			ok, err := storedOnly(data[off:])
			if err != nil {
				t.Fatalf("blob %s at %d: %v", f[0], off, err)
			}
			stored[f[0]] = ok
		}
	}
	return stored
}

// storedOnly reads a pack entry (object header, then a zlib stream) and
// reports whether every deflate block of the stream is a stored one.
func storedOnly(e []byte) (bool, error) {
	i := 0
	for i < len(e) && e[i]&0x80 != 0 { // object type and size, varint
		i++
	}
	i += 1 + 2 // last header byte, zlib CMF and FLG
	for {
		if i >= len(e) {
			return false, errors.New("zlib stream cut")
		}
		// Stored blocks keep the stream byte-aligned: each starts a byte
		// with BFINAL (bit 0) and BTYPE (bits 1-2), then LEN and NLEN.
		final, typ := e[i]&1 == 1, e[i]>>1&3
		if final && typ == 1 && i+1 < len(e) && e[i]>>3 == 0 && e[i+1]&3 == 0 {
			return true, nil // an empty last block (fixed codes, only end-of-block), as zlib writers close
		}
		if typ != 0 {
			return false, nil
		}
		if i+5 > len(e) {
			return false, errors.New("stored block header cut")
		}
		n := int(e[i+1]) | int(e[i+2])<<8
		if nn := int(e[i+3]) | int(e[i+4])<<8; n^nn != 0xffff {
			return false, errors.New("stored block LEN/NLEN mismatch")
		}
		i += 5 + n
		if final {
			return true, nil
		}
	}
}

// Packs lists the pack files of the git directory dir.
func Packs(t testing.TB, dir string) map[string]bool {
	t.Helper()
	ms, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, m := range ms {
		set[m] = true
	}
	return set
}

// NewObjects lists, with `git show-index`, the ids of the objects in the
// packs of the git directory dir that are not in before (from [Packs]): what
// a fetch or push since brought.
func NewObjects(t testing.TB, dir string, before map[string]bool) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for p := range Packs(t, dir) {
		if before[p] {
			continue
		}
		f, err := os.Open(strings.TrimSuffix(p, ".pack") + ".idx")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("git", "show-index")
		cmd.Stdin = f
		out, err := cmd.Output()
		f.Close()
		if err != nil {
			t.Fatalf("git show-index %s: %v", p, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if fs := strings.Fields(line); len(fs) >= 2 {
				got[fs[1]] = true
			}
		}
	}
	return got
}
