package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/report"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// hostileAdvertiser serves the repositories of backend (git http-backend)
// with extra refs added to every ref advertisement: a server that names
// refs as no git would let it. It asks the backend for protocol v0 (the
// Git-Protocol header is dropped), where the advertisement is the answer
// to GET info/refs.
func hostileAdvertiser(t *testing.T, backend string, extra []string) string {
	t.Helper()
	u, err := url.Parse(backend)
	must(t, err)
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Header.Del("Git-Protocol")
	}}
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/info/refs") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		body = addRefs(t, body, extra)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}

// addRefs inserts the ref lines extra ("<hex> <name>") after the first ref
// line (the one carrying the capabilities) of a smart HTTP advertisement.
func addRefs(t *testing.T, adv []byte, extra []string) []byte {
	var out bytes.Buffer
	refs := 0
	for len(adv) >= 4 {
		n, err := strconv.ParseUint(string(adv[:4]), 16, 16)
		if err != nil {
			t.Errorf("advertisement: %v", err)
			return adv
		}
		if n == 0 {
			out.Write(adv[:4])
			adv = adv[4:]
			continue
		}
		line := adv[:n]
		adv = adv[n:]
		out.Write(line)
		if !bytes.HasPrefix(line[4:], []byte("# service=")) {
			if refs++; refs == 1 {
				for _, e := range extra {
					fmt.Fprintf(&out, "%04x%s\n", len(e)+5, e)
				}
			}
		}
	}
	return out.Bytes()
}

// TestStatusHostileRefNames: a git server (a proxy in front of git
// http-backend) advertises status branches whose names carry terminal
// escape sequences, a carriage return and a bidi override, pointing at a
// genuinely signed report. Nothing of them reaches the terminal raw:
// `pullship status` prints no control character, and the genuine node's
// line is still shown, and the rollout counts only the release's nodes.
// Before, the refused name's escapes reached stderr raw in the error
// message, and the hostile branches showed as wave 0 nodes holding the
// rollout back.
func TestStatusHostileRefNames(t *testing.T) {
	gittest.Require(t, "git")
	e := bundlertest.NewEnv(t)
	dir := filepath.Join(e.Dir, "fleet")
	fleet := bundlertest.WriteFleet(t, dir, bundlertest.Fleet{Image: "pullship-test/app:1", Template: "x\n", Target: "/etc/app/app.conf",
		Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Size: 100, Content: func() io.Reader { return imagetest.Random(1, 100) }})
	e.Cut(t, fleet, img)
	key, err := os.ReadFile(filepath.Join(dir, "status-cn.key"))
	must(t, err)
	signer, _, err := schema.LoadPrivateKey("cn.key", key, nil)
	must(t, err)
	store, err := repo.Init(filepath.Join(e.Dir, "agent-cn"))
	must(t, err)
	rep, err := report.New("cn", signer, store)
	must(t, err)
	must(t, rep.Commit(&schema.Status{Node: "cn", Region: "cn", Time: time.Now().UTC().Truncate(time.Second), TargetVersion: 1, AppliedVersion: 1,
		Container: schema.StatusContainer{State: "running"}, Network: schema.StatusNetwork{Driver: schema.DriverNone},
		Health: schema.StatusHealth{OK: true}, Cluster: schema.StatusCluster{Joined: true}}))
	must(t, rep.Flush(context.Background(), e.Release.Remote))
	srv, err := repo.OpenStore(e.Repo)
	must(t, err)
	genuine, err := srv.Ref(bundle.StatusPrefix + "cn")
	must(t, err)

	base, name := filepath.Dir(e.Repo), filepath.Base(e.Repo)
	backend := gittest.HTTP(t, base, nil)
	raw := func(s string) bool {
		return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x7f || r == 0x202e })
	}
	for i, c := range []struct {
		name  string
		extra []string
	}{
		// Names the advertisement decoder takes: they reach the table.
		{"escapes in names", []string{
			genuine.String() + " " + bundle.StatusPrefix + "cn\x1b[1A\x1b[2K\rcn",
			genuine.String() + " " + bundle.StatusPrefix + "\x1b]0;owned\x07sg",
			genuine.String() + " " + bundle.StatusPrefix + "us\u202e",
		}},
		// A name the decoder refuses: it reaches the error message.
		{"escapes in a refused name", []string{genuine.String() + " " + bundle.StatusPrefix + "cn\x1b[2K\r all good"}},
	} {
		hostile := hostileAdvertiser(t, backend, c.extra)
		code, out, stderr := run(t, "status", "--repo", hostile+"/"+name, "--root", e.Root, "--cache", filepath.Join(e.Dir, fmt.Sprint("cache", i)))
		t.Logf("%s: exit %d\n%s\n%s", c.name, code, out, stderr)
		if raw(out) || raw(stderr) {
			t.Errorf("%s: a control character reached the terminal:\n%q\n%q", c.name, out, stderr)
		}
		if code == 0 {
			t.Errorf("%s: exit 0 with hostile branches", c.name)
		}
		if i == 0 && !strings.Contains(out, "cn ") {
			t.Errorf("%s: the genuine node is not shown:\n%s", c.name, out)
		}
		if i == 0 && (!strings.Contains(out, "(cn): 1/1  done") || strings.Contains(out, "waits for node")) {
			t.Errorf("%s: the hostile branches count in the rollout:\n%s", c.name, out)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
