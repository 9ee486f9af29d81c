package agent_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/state"
)

// TestCrashAtEveryStep kills pullship-agent (this test binary run as the
// agent, see asAgent; SIGKILL, a real process death) right after it
// journals each step of an apply, then starts it again: the
// next pass must undo the interrupted apply and converge on the new
// release, leaving no previous container behind.
func TestCrashAtEveryStep(t *testing.T) {
	h := newHost(t)
	cfgPath := filepath.Join(h.env.Dir, "agent.toml")
	run := func(crashAt string) (int, string) {
		bin, env := asAgent(envCrashAt + "=" + crashAt)
		cmd := exec.Command(bin, "once", "--config", cfgPath)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return -int(ws.Signal()), string(out)
			}
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("run agent: %v", err)
		return 0, ""
	}
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\n", ping)
	if code, out := run(""); code != 0 {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	steps := []state.Step{state.StepBegin, state.StepFiles, state.StepContainer, state.StepHealth, state.StepDone}
	for i, step := range steps {
		version := i + 2
		img := h.image([]string{"a", "b"}[version%2])
		conf := "version = " + strconv.Itoa(version) + "\n"
		h.release(img, conf, ping)
		if code, out := run(string(step)); code != -int(syscall.SIGKILL) {
			t.Fatalf("crash at %s: exit %d, want SIGKILL\n%s", step, code, out)
		}
		if code, out := run(""); code != 0 {
			t.Fatalf("after crash at %s: exit %d, want 0 (converged)\n%s", step, code, out)
		}
		c := h.container()
		if !c.Running || c.ImageID != h.images[version%2] || h.conf() != conf {
			t.Fatalf("after crash at %s: running=%v image=%s (want %s) conf=%q (want %q)", step, c.Running, c.ImageID, h.images[version%2], h.conf(), conf)
		}
		if _, found, _ := h.eng.Inspect(context.Background(), c.Name+engine.PrevSuffix); found {
			t.Fatalf("after crash at %s: previous container left behind", step)
		}
		if code, out := run(""); code != 10 {
			t.Fatalf("after crash at %s: third pass exit %d, want 10 (nothing to do)\n%s", step, code, out)
		}
	}

	// A crash while rolling back a bad release: the next start finishes
	// the rollback; the release is then tried once more, fails, and the
	// host stays on the last good release.
	h.release(h.image("a"), "version = bad\n", `["/pingsrv", "exit", "1"]`)
	if code, out := run(string(state.StepRollback)); code != -int(syscall.SIGKILL) {
		t.Fatalf("crash at rollback: exit %d\n%s", code, out)
	}
	good := "version = " + strconv.Itoa(len(steps)+1) + "\n"
	if code, out := run(""); code != 1 {
		t.Fatalf("after crash at rollback: exit %d, want 1 (rolled back)\n%s", code, out)
	}
	if c := h.container(); !c.Running || h.conf() != good {
		t.Fatalf("after rollback: running=%v conf=%q, want %q", c.Running, h.conf(), good)
	}
}
