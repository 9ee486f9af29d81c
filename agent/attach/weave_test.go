package attach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine/enginetest"
)

func TestParsePSSample(t *testing.T) {
	b, err := os.ReadFile("testdata/weave-ps.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePS(b)
	if err != nil {
		t.Fatal(err)
	}
	pp := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	want := []PSEntry{
		{"weave:expose", "7a:c4:8b:a1:e6:ad", pp("10.2.5.2/24")},
		{"b07565b06c53", "ae:e3:07:9c:8c:d4", nil},
		{"5245643870f1", "ce:15:34:a9:b5:6d", pp("10.2.5.1/24")},
		{"caa1d4ee2570", "ba:8c:b9:dc:e1:c9", pp("10.2.1.1/24", "10.2.2.1/24")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestParsePSEmpty(t *testing.T) {
	for _, in := range []string{"", "\n"} {
		if got, err := ParsePS([]byte(in)); err != nil || len(got) != 0 {
			t.Fatalf("%q: got %v, %v", in, got, err)
		}
	}
}

func TestParsePSRejects(t *testing.T) {
	for _, in := range []string{
		"b07565b06c53\n",                            // no MAC
		"b07565b06c53 ae:e3:07:9c:8c\n",             // short MAC
		"b07565b06c53  ae:e3:07:9c:8c:d4\n",         // double space
		"b07565b06c53 ae:e3:07:9c:8c:d4 10.0.0.1\n", // address without prefix
		"b07565b06c53 ae:e3:07:9c:8c:d4 10.0.0.1/24 \n",
		"b07565b06c53 ae:e3:07:9c:8c:d4 10.0.0.1/33\n",
		"-rf ae:e3:07:9c:8c:d4\n",
		"b07565b06c53 ae-e3-07-9c-8c-d4 10.0.0.1/24\n", // MAC in another notation
		"\n\n",
		"weave ps: command not found\n",
	} {
		if got, err := ParsePS([]byte(in)); err == nil {
			t.Errorf("%q: parsed as %+v", in, got)
		}
	}
	if _, err := ParsePS(bytes.Repeat([]byte("a"), MaxToolOutput+1)); err == nil {
		t.Error("oversize output accepted")
	}
}

func FuzzParsePS(f *testing.F) {
	b, err := os.ReadFile("testdata/weave-ps.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("b07565b06c53 ae:e3:07:9c:8c:d4 fd00::1/64\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		entries, err := ParsePS(in)
		if err != nil {
			return
		}
		// What parses re-prints to the same bytes: the format is exact.
		var out strings.Builder
		for _, e := range entries {
			out.WriteString(e.Container + " " + e.MAC)
			for _, p := range e.Addresses {
				out.WriteString(" " + p.String())
			}
			out.WriteString("\n")
		}
		if got := out.String(); got != strings.TrimSuffix(string(in), "\n")+"\n" && !(len(entries) == 0 && got == "") {
			t.Fatalf("re-printed %q from %q", got, in)
		}
	})
}

// buildFakeWeave builds agent/internal/fakeweave and returns a Weave driver
// using it with a fresh state directory.
func buildFakeWeave(t *testing.T) (Weave, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "weave")
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/fakeweave").CombinedOutput(); err != nil {
		t.Fatalf("build fakeweave: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	return Weave{Path: bin, Env: append(os.Environ(), "WEAVE_FAKE_STATE="+state), Timeout: time.Minute}, state
}

// startContainer runs a container of a test image (enginetest's pingsrv,
// which waits for SIGTERM; loaded here: no registry needed); it is removed
// when the test ends.
func startContainer(t *testing.T) string {
	t.Helper()
	tag := enginetest.Load(t, "pullship-test-sleeper:attach", enginetest.PingImage(enginetest.Pingsrv(t), "attach"))
	name := fmt.Sprintf("pullship-attach-%d", time.Now().UnixNano())
	if out, err := exec.Command("docker", "run", "-d", "--name", name, tag).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	return name
}

func docker(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker %v: %v\n%s", args, err, out)
	}
}

func TestWeaveEnsureReattachesAfterRestart(t *testing.T) {
	enginetest.RequireDocker(t)
	w, _ := buildFakeWeave(t)
	c := startContainer(t)
	ctx := context.Background()

	if a, err := w.Check(ctx, c); err != nil || a.Attached {
		t.Fatalf("check before attach: %+v, %v", a, err)
	}
	a, err := w.Ensure(ctx, c, "10.0.0.1/24")
	if err != nil || !a.Attached || a.Address != "10.0.0.1/24" {
		t.Fatalf("ensure: %+v, %v", a, err)
	}
	if a, err := w.Ensure(ctx, c, "10.0.0.1/24"); err != nil || !a.Attached {
		t.Fatalf("second ensure: %+v, %v", a, err)
	}
	if a, err := w.Check(ctx, c); err != nil || !a.Attached || a.Address != "10.0.0.1/24" {
		t.Fatalf("check after attach: %+v, %v", a, err)
	}

	docker(t, "restart", "-t", "1", c)
	if a, err := w.Check(ctx, c); err != nil || a.Attached {
		t.Fatalf("check after restart: %+v, %v (weave loses the address)", a, err)
	}
	if a, err := w.Ensure(ctx, c, "10.0.0.1/24"); err != nil || !a.Attached {
		t.Fatalf("ensure after restart: %+v, %v", a, err)
	}

	docker(t, "stop", "-t", "1", c)
	if _, err := w.Ensure(ctx, c, "10.0.0.1/24"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("ensure on stopped container: %v, want ErrNotRunning", err)
	}
	if a, err := w.Check(ctx, c); err != nil || a.Attached {
		t.Fatalf("check on stopped container: %+v, %v", a, err)
	}
}

func TestWeaveRouterDown(t *testing.T) {
	w, state := buildFakeWeave(t)
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "router-down"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := w.Ensure(context.Background(), "vernemq-release-cn-1", "10.0.0.1/24")
	if !errors.Is(err, ErrRouterDown) || !strings.Contains(err.Error(), "did you launch weave?") {
		t.Fatalf("got %v, want ErrRouterDown with weave's message", err)
	}
	if _, err := w.Check(context.Background(), "vernemq-release-cn-1"); !errors.Is(err, ErrRouterDown) {
		t.Fatalf("check: got %v, want ErrRouterDown", err)
	}
}

// script writes an executable shell script standing in for a broken weave.
func script(t *testing.T, body string) Weave {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weave")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return Weave{Path: p}
}

func TestWeaveUntrustedOutput(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name, body, want string
	}{
		{"endless output", "yes aaaaaaaaaaaaaaaa\n", "exceeds"},
		{"garbage ps", "echo 'hello world'\n", "invalid MAC"},
		{"two containers", "printf 'aaaaaaaaaaaa ae:e3:07:9c:8c:d4\\nbbbbbbbbbbbb ae:e3:07:9c:8c:d5\\n'\n", "listed 2 containers"},
		{"attach prints other address", "[ \"$1\" = ps ] && exit 0; echo 10.9.9.9\n", "not the address"},
		{"attach does not stick", "[ \"$1\" = ps ] && exit 0; echo 10.0.0.1\n", "does not list the address"},
		{"other failure", "echo 'boom' >&2; exit 3\n", "exit 3: boom"},
		{"missing executable", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := script(t, tt.body)
			if tt.body == "" {
				w.Path = filepath.Join(t.TempDir(), "nope")
			}
			_, err := w.Ensure(ctx, "c1", "10.0.0.1/24")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
	if _, err := (Weave{}).Ensure(ctx, "--help", "10.0.0.1/24"); err == nil {
		t.Fatal("flag-like container name accepted")
	}
	if _, err := (Weave{}).Ensure(ctx, "c1", "10.0.0.1"); err == nil {
		t.Fatal("address without prefix accepted")
	}
}

func TestWeaveTimeout(t *testing.T) {
	w := script(t, "exec sleep 30\n")
	w.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := w.Check(context.Background(), "c1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("timeout not enforced")
	}
}
