package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine/enginetest"
)

// sleeperImage loads a test image whose entrypoint waits for SIGTERM
// (enginetest's pingsrv): no registry needed.
func sleeperImage(t *testing.T) string {
	t.Helper()
	return enginetest.Load(t, "pullship-test-sleeper:fakeweave", enginetest.PingImage(enginetest.Pingsrv(t), "fakeweave"))
}

// startContainer runs a sleeper container, removed when the test ends.
func startContainer(t *testing.T) string {
	t.Helper()
	image := sleeperImage(t)
	name := fmt.Sprintf("pullship-fakeweave-%d", time.Now().UnixNano())
	if out, err := exec.Command("docker", "run", "-d", "--name", name, image).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	return name
}

// fakeweave builds this command once.
func fakeweave(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "weave")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build fakeweave: %v\n%s", err, out)
	}
	return bin
}

type weaveCmd struct {
	bin, state string
}

func (w weaveCmd) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Env = append(os.Environ(), "WEAVE_FAKE_STATE="+w.state)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("weave %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func (w weaveCmd) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := w.run(t, args...)
	if code != 0 {
		t.Fatalf("weave %v: exit %d: %s", args, code, errOut)
	}
	return out
}

var psLine = regexp.MustCompile(`^[0-9a-f]{12} ([0-9a-f]{2}:){5}[0-9a-f]{2}( [0-9.]+/\d+)*\n$`)

func TestLossOnRestart(t *testing.T) {
	enginetest.RequireDocker(t)
	w := weaveCmd{bin: fakeweave(t), state: t.TempDir()}
	c := startContainer(t)

	if out := w.mustRun(t, "ps", c); out != "" {
		t.Fatalf("ps before attach printed %q, want nothing", out)
	}
	if out := w.mustRun(t, "attach", "10.0.0.1/24", c); out != "10.0.0.1\n" {
		t.Fatalf("attach printed %q, want the address without prefix", out)
	}
	if out := w.mustRun(t, "attach", "10.0.0.1/24", c); out != "10.0.0.1\n" {
		t.Fatalf("second attach printed %q (not idempotent)", out)
	}
	out := w.mustRun(t, "ps", c)
	if !psLine.MatchString(out) || !strings.HasSuffix(out, " 10.0.0.1/24\n") {
		t.Fatalf("ps after attach printed %q", out)
	}
	id := out[:12]
	if all := w.mustRun(t, "ps"); all != out {
		t.Fatalf("ps without arguments printed %q, want %q", all, out)
	}

	if b, err := exec.Command("docker", "restart", "-t", "1", c).CombinedOutput(); err != nil {
		t.Fatalf("docker restart: %v\n%s", err, b)
	}
	out = w.mustRun(t, "ps", c)
	if !psLine.MatchString(out) || strings.Count(out, " ") != 1 || !strings.HasPrefix(out, id+" ") {
		t.Fatalf("ps after restart printed %q, want id and MAC only (address lost)", out)
	}

	// Re-attach works again; a stop loses it and ps prints nothing.
	w.mustRun(t, "attach", "10.0.0.1/24", c)
	if b, err := exec.Command("docker", "stop", "-t", "1", c).CombinedOutput(); err != nil {
		t.Fatalf("docker stop: %v\n%s", err, b)
	}
	if out := w.mustRun(t, "ps", c); out != "" {
		t.Fatalf("ps of a stopped container printed %q", out)
	}
	_, errOut, code := w.run(t, "attach", "10.0.0.1/24", c)
	if code == 0 || errOut != "container "+id+" not running\n" {
		t.Fatalf("attach to stopped container: exit %d, stderr %q", code, errOut)
	}
	if b, err := exec.Command("docker", "start", c).CombinedOutput(); err != nil {
		t.Fatalf("docker start: %v\n%s", err, b)
	}
	if out := w.mustRun(t, "ps", c); strings.Count(out, " ") != 1 {
		t.Fatalf("ps after stop+start printed %q, want no address", out)
	}
}

func TestRouterDownAndDetach(t *testing.T) {
	enginetest.RequireDocker(t)
	w := weaveCmd{bin: fakeweave(t), state: t.TempDir()}
	c := startContainer(t)

	if out := w.mustRun(t, "attach", "10.0.0.1/24", "10.0.1.1/24", c); out != "10.0.0.1 10.0.1.1\n" {
		t.Fatalf("attach two printed %q", out)
	}
	if out := w.mustRun(t, "detach", "10.0.1.1/24", c); out != "10.0.1.1\n" {
		t.Fatalf("detach printed %q", out)
	}
	if out := w.mustRun(t, "ps", c); !strings.HasSuffix(out, " 10.0.0.1/24\n") || strings.Contains(out, "10.0.1.1") {
		t.Fatalf("ps after detach printed %q", out)
	}

	w.mustRun(t, "stop")
	for _, args := range [][]string{{"ps", c}, {"attach", "10.0.0.1/24", c}} {
		_, errOut, code := w.run(t, args...)
		if code == 0 || errOut != "bridge \"weave\" not present; did you launch weave?\n" {
			t.Fatalf("%v with router down: exit %d, stderr %q", args, code, errOut)
		}
	}
	w.mustRun(t, "launch")
	w.mustRun(t, "ps", c)

	_, errOut, code := w.run(t, "attach", "10.0.0.1/24", "pullship-no-such-container")
	if code == 0 || !strings.Contains(errOut, "No such container") {
		t.Fatalf("attach unknown container: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := w.run(t, "attach", "banana", c); code == 0 || errOut != "invalid CIDR: banana\n" {
		t.Fatalf("bad cidr: exit %d, stderr %q", code, errOut)
	}
}
