package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/state"
)

// crashPass runs one pass of the agent that stops dead right after it
// journals step ("": runs to its end), and says whether it crashed or what
// it did.
type crashPass func(step state.Step) (crashed bool, out agent.Outcome, log string)

// inProcessPass runs the pass in this process on h's engine; its goroutine
// ends right after the journal write (see afterJournal).
func inProcessPass(t *testing.T, h *host) crashPass {
	return func(step state.Step) (bool, agent.Outcome, string) {
		if step != "" {
			crashes.Store(h.cfg.StateDir, step)
			defer crashes.Delete(h.cfg.StateDir)
		}
		var log syncBuffer
		a := openAgent(t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&teeWriter{&log, &h.log}, nil))})
		defer a.Close()
		done, ended := make(chan struct{}), false
		var out agent.Outcome
		go func() {
			defer close(done)
			out, _ = a.Once(context.Background())
			ended = true
		}()
		<-done
		return !ended, out, log.String()
	}
}

// processPass runs pullship-agent once (this test binary run as the agent,
// see asAgent) with h's agent.toml, SIGKILLed right after the journal write.
func processPass(t *testing.T, h *host) crashPass {
	cfgPath := filepath.Join(h.env.Dir, "agent.toml")
	return func(step state.Step) (bool, agent.Outcome, string) {
		bin, env := asAgent(envCrashAt + "=" + string(step))
		cmd := exec.Command(bin, "once", "--config", cfgPath)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		out := string(b)
		var ee *exec.ExitError
		switch {
		case err == nil:
			return false, agent.Converged, out
		case !errors.As(err, &ee):
			t.Fatalf("run agent: %v", err)
		case ee.Sys().(syscall.WaitStatus).Signaled():
			if sig := ee.Sys().(syscall.WaitStatus).Signal(); sig != syscall.SIGKILL {
				t.Fatalf("agent died of %v, not SIGKILL\n%s", sig, out)
			}
			return true, 0, out
		case ee.ExitCode() == 10:
			return false, agent.Nothing, out
		case ee.ExitCode() == 1:
			return false, agent.Failed, out
		}
		t.Fatalf("agent exited %d\n%s", ee.ExitCode(), out)
		return false, 0, ""
	}
}

// TestCrashAtEveryStep stops a pass right after it journals each step of
// an apply (its goroutine ends there: no rollback, no cleanup, as when the
// process dies), then runs the next: it must undo the interrupted apply and
// converge on the new release, leaving no previous container behind.
func TestCrashAtEveryStep(t *testing.T) {
	h := newHost(t)
	testCrash(t, h, inProcessPass(t, h))
}

// TestDockerCrashAtEveryStep is TestCrashAtEveryStep with a real process
// death: pullship-agent (this test binary run as the agent, see asAgent)
// is SIGKILLed right after each journal write, on the real engine.
func TestDockerCrashAtEveryStep(t *testing.T) {
	h := newDockerHost(t)
	testCrash(t, h, processPass(t, h))
}

func testCrash(t *testing.T, h *host, pass crashPass) {
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\n", ping)
	if crashed, out, log := pass(""); crashed || out != agent.Converged {
		t.Fatalf("first apply: crashed=%v %v\n%s", crashed, out, log)
	}
	steps := []state.Step{state.StepBegin, state.StepFiles, state.StepContainer, state.StepHealth, state.StepDone}
	for i, step := range steps {
		version := i + 2
		img := h.image([]string{"a", "b"}[version%2])
		conf := "version = " + strconv.Itoa(version) + "\n"
		h.release(img, conf, ping)
		if crashed, out, log := pass(step); !crashed {
			t.Fatalf("crash at %s: not crashed (%v)\n%s", step, out, log)
		}
		if crashed, out, log := pass(""); crashed || out != agent.Converged {
			t.Fatalf("after crash at %s: crashed=%v %v, want converged\n%s", step, crashed, out, log)
		}
		c := h.container()
		if !c.Running || c.ImageID != h.images[version%2] || h.conf() != conf {
			t.Fatalf("after crash at %s: running=%v image=%s (want %s) conf=%q (want %q)", step, c.Running, c.ImageID, h.images[version%2], h.conf(), conf)
		}
		if _, found, _ := h.eng.Inspect(context.Background(), c.Name+engine.PrevSuffix); found {
			t.Fatalf("after crash at %s: previous container left behind", step)
		}
		if crashed, out, log := pass(""); crashed || out != agent.Nothing {
			t.Fatalf("after crash at %s: third pass crashed=%v %v, want nothing to do\n%s", step, crashed, out, log)
		}
	}

	// A crash while rolling back a bad release: the next start finishes
	// the rollback; the release is then tried once more, fails, and the
	// host stays on the last good release.
	h.release(h.image("a"), "version = bad\n", `["/pingsrv", "exit", "1"]`)
	if crashed, out, log := pass(state.StepRollback); !crashed {
		t.Fatalf("crash at rollback: not crashed (%v)\n%s", out, log)
	}
	good := "version = " + strconv.Itoa(len(steps)+1) + "\n"
	if crashed, out, log := pass(""); crashed || out != agent.Failed {
		t.Fatalf("after crash at rollback: crashed=%v %v, want rolled back\n%s", crashed, out, log)
	}
	if c := h.container(); !c.Running || h.conf() != good {
		t.Fatalf("after rollback: running=%v conf=%q, want %q", c.Running, h.conf(), good)
	}
}

// TestCrashAtEveryStepServices is TestCrashAtEveryStep for a node of two
// services applied as one unit: at every step one service is recreated on
// a new image and the other reloaded for a changed file.
func TestCrashAtEveryStepServices(t *testing.T) {
	h := newHost(t)
	testCrashServices(t, h, inProcessPass(t, h))
}

// TestDockerCrashAtEveryStepServices is TestCrashAtEveryStepServices with
// pullship-agent SIGKILLed after each journal write, on the real engine.
func TestDockerCrashAtEveryStepServices(t *testing.T) {
	h := newDockerHost(t)
	h.cleanupSide()
	testCrashServices(t, h, processPass(t, h))
}

func testCrashServices(t *testing.T, h *host, pass crashPass) {
	ping := `["/pingsrv", "ping"]`
	imgs := []string{h.image("a"), h.image("b")}
	side := h.image("s")
	h.releaseStack(stack{appImage: imgs[1], sideImage: side, appConf: "app 1\n", sideConf: "side 1\n", appHealth: ping})
	if crashed, out, log := pass(""); crashed || out != agent.Converged {
		t.Fatalf("first apply: crashed=%v %v\n%s", crashed, out, log)
	}
	steps := []state.Step{state.StepBegin, state.StepFiles, state.StepContainer, state.StepHealth, state.StepDone}
	for i, step := range steps {
		version := i + 2
		app, sideConf := "app "+strconv.Itoa(version)+"\n", "side "+strconv.Itoa(version)+"\n"
		h.releaseStack(stack{appImage: imgs[version%2], sideImage: side, appConf: app, sideConf: sideConf, appHealth: ping})
		if crashed, out, log := pass(step); !crashed {
			t.Fatalf("crash at %s: not crashed (%v)\n%s", step, out, log)
		}
		if crashed, out, log := pass(""); crashed || out != agent.Converged {
			t.Fatalf("after crash at %s: crashed=%v %v, want converged\n%s", step, crashed, out, log)
		}
		c, s := h.container(), h.side()
		if !c.Running || !s.Running || c.ImageID != h.images[version%2] || s.ImageID != h.images[2] || h.conf() != app || h.sideConf() != sideConf {
			t.Fatalf("after crash at %s: app running=%v image=%s (want %s), side running=%v, files %q %q (want %q %q)",
				step, c.Running, c.ImageID, h.images[version%2], s.Running, h.conf(), h.sideConf(), app, sideConf)
		}
		for _, name := range []string{c.Name, s.Name} {
			if _, found, _ := h.eng.Inspect(context.Background(), name+engine.PrevSuffix); found {
				t.Fatalf("after crash at %s: previous container of %s left behind", step, name)
			}
		}
		if crashed, out, log := pass(""); crashed || out != agent.Nothing {
			t.Fatalf("after crash at %s: third pass crashed=%v %v, want nothing to do\n%s", step, crashed, out, log)
		}
	}

	// A crash while rolling back a release whose second service fails:
	// the next start finishes the rollback of both; the release is tried
	// once more, fails, and the host stays on the last good release.
	v := len(steps) + 1
	good, goodSide := "app "+strconv.Itoa(v)+"\n", "side "+strconv.Itoa(v)+"\n"
	h.releaseStack(stack{appImage: imgs[(v+1)%2], sideImage: side, appConf: "app bad\n", sideConf: "side bad\n", appHealth: `["/pingsrv", "exit", "1"]`})
	if crashed, out, log := pass(state.StepRollback); !crashed {
		t.Fatalf("crash at rollback: not crashed (%v)\n%s", out, log)
	}
	if crashed, out, log := pass(""); crashed || out != agent.Failed {
		t.Fatalf("after crash at rollback: crashed=%v %v, want rolled back\n%s", crashed, out, log)
	}
	c, s := h.container(), h.side()
	if !c.Running || !s.Running || c.ImageID != h.images[v%2] || h.conf() != good || h.sideConf() != goodSide {
		t.Fatalf("after rollback: app running=%v image %s (want %s) side running=%v files %q %q, want %q %q",
			c.Running, c.ImageID, h.images[v%2], s.Running, h.conf(), h.sideConf(), good, goodSide)
	}
}

// TestCrashAtEveryStepDroppingAService: a release without the side
// service, interrupted at every step, converges at the next start: side
// removed, app on the new release.
func TestCrashAtEveryStepDroppingAService(t *testing.T) {
	h := newHost(t)
	pass := func(step state.Step) (bool, agent.Outcome, string) {
		if step != "" {
			crashes.Store(h.cfg.StateDir, step)
			defer crashes.Delete(h.cfg.StateDir)
		}
		var log syncBuffer
		a := openAgent(t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&teeWriter{&log, &h.log}, nil))})
		defer a.Close()
		done, ended := make(chan struct{}), false
		var out agent.Outcome
		go func() {
			defer close(done)
			out, _ = a.Once(context.Background())
			ended = true
		}()
		<-done
		return !ended, out, log.String()
	}
	ping := `["/pingsrv", "ping"]`
	img, side := h.image("a"), h.image("s")
	ctx := context.Background()
	for i, step := range []state.Step{state.StepBegin, state.StepFiles, state.StepContainer, state.StepHealth, state.StepDone} {
		with := "app " + strconv.Itoa(2*i+1) + "\n"
		h.releaseStack(stack{appImage: img, sideImage: side, appConf: with, sideConf: "side\n", appHealth: ping})
		if crashed, out, log := pass(""); crashed || out != agent.Converged {
			t.Fatalf("%s: apply with side: crashed=%v %v\n%s", step, crashed, out, log)
		}
		h.side()
		without := "app " + strconv.Itoa(2*i+2) + "\n"
		h.releaseStack(stack{appImage: img, sideImage: side, appConf: without, sideConf: "side\n", appHealth: ping, appOnly: true})
		if crashed, out, log := pass(step); !crashed {
			t.Fatalf("crash at %s: not crashed (%v)\n%s", step, out, log)
		}
		if crashed, out, log := pass(""); crashed || out != agent.Converged {
			t.Fatalf("after crash at %s: crashed=%v %v\n%s", step, crashed, out, log)
		}
		for _, name := range []string{h.sideName(), h.sideName() + engine.PrevSuffix} {
			if _, found, _ := h.eng.Inspect(ctx, name); found {
				t.Fatalf("after crash at %s: container %s left", step, name)
			}
		}
		if c := h.container(); !c.Running || h.conf() != without {
			t.Fatalf("after crash at %s: app running=%v conf %q", step, c.Running, h.conf())
		}
	}
}
