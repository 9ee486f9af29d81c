package repo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// statusFleet makes the bare repository base/name with refs/heads/releases
// and n status branches (refs/heads/status/node-NNNNN), all on one commit,
// with the git CLI, and returns the commit.
func statusFleet(t testing.TB, base, name string, n int) plumbing.Hash {
	names := []string{"refs/heads/releases"}
	for i := range n {
		names = append(names, fmt.Sprintf("refs/heads/status/node-%05d", i))
	}
	return plumbing.NewHash(gittest.Refs(t, gittest.InitBare(t, base, name), "release 1", names))
}

// TestIdlePollBytes: with 1,000 status branches, an idle poll (the refs of
// refs/heads/releases) over git:// and smart HTTP, against git daemon and
// git http-backend, is one request of at most 2 KB both ways (protocol v2
// ls-refs with a ref prefix); the whole ref list is logged beside it.
func TestIdlePollBytes(t *testing.T) {
	base := t.TempDir()
	head := statusFleet(t, base, "r.git", 1000)
	servers := map[string]string{
		"git://":  gittest.Daemon(t, base).URL + "/r.git",
		"http://": gittest.HTTP(t, base, nil) + "/r.git",
	}
	ctx := context.Background()
	for name, url := range servers {
		t.Run(name, func(t *testing.T) {
			proxy, err := gittest.NewCutProxy(url, 0)
			must(t, err)
			defer proxy.Close()
			r, err := Open(ctx, proxy.URL, Options{})
			must(t, err)
			defer r.http.CloseIdleConnections() // before the proxy waits for its connections
			// The first poll learns what the server speaks (over HTTP, a
			// GET of its capabilities first).
			if _, err := r.Refs(ctx, "refs/heads/releases"); err != nil {
				t.Fatal(err)
			}
			up0, down0 := proxy.Bytes()
			req0 := r.Counters().Requests
			refs, err := r.Refs(ctx, "refs/heads/releases")
			must(t, err)
			up, down := proxy.Bytes()
			up, down = up-up0, down-down0
			requests := r.Counters().Requests - req0
			if len(refs) != 1 || refs["refs/heads/releases"] != head {
				t.Fatalf("refs %v, want releases at %s only", refs, head)
			}
			t.Logf("idle poll: %d request(s), %d bytes up, %d bytes down", requests, up, down)
			if requests != 1 || up+down > 2048 {
				t.Errorf("idle poll: %d requests, %d+%d bytes; want 1 request, at most 2048 bytes", requests, up, down)
			}
			all, err := r.Refs(ctx)
			must(t, err)
			up2, down2 := proxy.Bytes()
			t.Logf("every ref (%d): %d bytes up, %d bytes down", len(all), up2-up0-up, down2-down0-down)
			if len(all) < 1001 {
				t.Errorf("all refs: %d, want 1001", len(all))
			}
		})
	}
}

// TestSSHProtocolFallback: over OpenSSH's sshd with "AcceptEnv
// GIT_PROTOCOL" a poll asks for protocol v2 and lists only the ref asked
// for; over an sshd as shipped (no AcceptEnv) git answers in v0 and the
// same poll and fetch work from the whole advertisement.
func TestSSHProtocolFallback(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	head := statusFleet(t, base, "r.git", 1000)
	ctx := context.Background()
	for name, srv := range map[string]*gittest.SSHServer{"v2": gittest.SSHD(t, base), "v0": gittest.SSHDv0(t, base)} {
		t.Run(name, func(t *testing.T) {
			url := srv.RepoURL("r.git")
			opts, err := Credentials{SSHKey: srv.ClientKey, KnownHosts: srv.KnownHosts}.Options(url)
			must(t, err)
			r, err := Open(ctx, url, opts)
			must(t, err)
			refs, err := r.Refs(ctx, "refs/heads/releases")
			must(t, err)
			if len(refs) != 1 || refs["refs/heads/releases"] != head {
				t.Fatalf("refs %v, want releases at %s only", refs, head)
			}
			read := r.Counters().BytesRead
			t.Logf("%s poll: %d bytes read", name, read)
			if name == "v2" && read > 20000 || name == "v0" && read < 60000 {
				t.Errorf("%s poll read %d bytes: the server did not speak what was expected", name, read)
			}
			st, err := Init(t.TempDir())
			must(t, err)
			got, err := r.Fetch(ctx, st, FetchRequest{Refs: []string{"refs/heads/status/node-00007:refs/heads/x"}})
			must(t, err)
			if got["refs/heads/status/node-00007"] != head || !st.HasObject(head) {
				t.Fatalf("fetch: %v, object there: %v", got, st.HasObject(head))
			}
		})
	}
}

// TestHTTPProtocolChange: an HTTP server whose v2 capabilities a remote
// remembers (its polls are one POST) and that then answers in v0 only (an
// older git put behind the same URL) is asked afresh within the same poll.
func TestHTTPProtocolChange(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	head := statusFleet(t, base, "r.git", 3)
	backend := gittest.HTTP(t, base, nil)
	var v0 atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		out, err := http.NewRequestWithContext(req.Context(), req.Method, backend+req.URL.RequestURI(), req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out.Header = req.Header.Clone()
		if v0.Load() {
			out.Header.Del("Git-Protocol")
		}
		res, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		io.Copy(w, res.Body)
	}))
	defer front.Close()
	ctx := context.Background()
	r, err := Open(ctx, front.URL+"/r.git", Options{})
	must(t, err)
	defer r.http.CloseIdleConnections()
	poll := func(want int64) {
		t.Helper()
		before := r.Counters().Requests
		refs, err := r.Refs(ctx, "refs/heads/releases")
		if err != nil || refs["refs/heads/releases"] != head || len(refs) != 1 {
			t.Fatalf("poll: %v %v", refs, err)
		}
		if got := r.Counters().Requests - before; got != want {
			t.Errorf("poll took %d requests, want %d", got, want)
		}
	}
	poll(2) // GET the capabilities, POST ls-refs
	poll(1) // POST ls-refs
	v0.Store(true)
	poll(2) // POST refused, GET the v0 advertisement
	poll(1) // GET the v0 advertisement
	st, err := Init(t.TempDir())
	must(t, err)
	if _, err := r.Fetch(ctx, st, FetchRequest{Refs: []string{"refs/heads/releases"}}); err != nil || !st.HasObject(head) {
		t.Fatalf("v0 fetch: %v", err)
	}
}

// TestStatusPushBytes measures what one status push (a 300-byte report on
// its node's branch) costs over git:// and smart HTTP with 1,000 and
// 10,000 status branches: receive-pack has no protocol v2 and advertises
// every ref, so the cost grows with the fleet (docs/operations.md, "Status
// branches and what a push costs"). The idle poll beside it stays flat.
func TestStatusPushBytes(t *testing.T) {
	needGit(t)
	if testing.Short() {
		t.Skip("10,000 branches: not in -short")
	}
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		base := t.TempDir()
		head := statusFleet(t, base, "r.git", n)
		servers := map[string]string{
			"git://":  gittest.Daemon(t, base).URL + "/r.git",
			"http://": gittest.HTTP(t, base, nil) + "/r.git",
		}
		for _, name := range []string{"git://", "http://"} {
			proxy, err := gittest.NewCutProxy(servers[name], 0)
			must(t, err)
			r, err := Open(ctx, proxy.URL, Options{})
			must(t, err)
			r.Refs(ctx, "refs/heads/releases") // learn the protocol
			up0, down0 := proxy.Bytes()
			_, err = r.Refs(ctx, "refs/heads/releases")
			must(t, err)
			up1, down1 := proxy.Bytes()
			poll := struct{ up, down int64 }{up1 - up0, down1 - down0}

			st := NewObjectStream(nil)
			tb := NewTreeBuilder()
			must(t, tb.Add("status.toml", filemode.Regular, st.AddBytes(plumbing.BlobObject, []byte(strings.Repeat("x", 300)))))
			tree, err := tb.Build(st)
			must(t, err)
			ref := "refs/heads/status/node-00001"
			cur, err := r.Refs(ctx, ref)
			must(t, err)
			up1, down1 = proxy.Bytes()
			data, id, err := EncodeCommit(Commit{Tree: tree, Parents: []plumbing.Hash{head}, Author: sig, Committer: sig, Message: "status over " + name + "\n"})
			must(t, err)
			st.AddBytes(plumbing.CommitObject, data)
			res, err := r.Push(ctx, []RefUpdate{{Name: ref, Old: cur[ref], New: id}}, st)
			must(t, err)
			up2, down2 := proxy.Bytes()
			if res.Status[ref] != "ok" {
				t.Fatalf("push: %v", res.Status)
			}
			t.Logf("%d status branches, %s: idle poll %d B up, %d B down; status push %d B up (pack %d B), %d B down",
				n, name, poll.up, poll.down, up2-up1, res.PackBytes, down2-down1)
			if poll.up+poll.down > 2048 {
				t.Errorf("idle poll with %d branches: %d bytes", n, poll.up+poll.down)
			}
			r.http.CloseIdleConnections()
			proxy.Close()
		}
	}
}
