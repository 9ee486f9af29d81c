package agent_test

import (
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"github.com/pullship/pullship/agent/cli"
	"github.com/pullship/pullship/agent/state"
)

// Environment of the test binary run as pullship-agent (see asAgent): the
// crash tests' fault injection lives here, in the test binary, never in the
// shipped agent.
const (
	envAsAgent = "PULLSHIP_TEST_AS_AGENT" // "1": run pullship-agent with the arguments
	envCrashAt = "PULLSHIP_TEST_CRASH_AT" // a journal step: SIGKILL right after it is journalled
	envPanicAt = "PULLSHIP_TEST_PANIC_AT" // a journal step: panic right after it is journalled
)

func TestMain(m *testing.M) {
	state.TestHookJournal = afterJournal
	if os.Getenv(envAsAgent) == "1" {
		os.Exit(cli.Main(cli.DefaultEnv(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// crashes maps a state directory to the step at which an in-process pass
// of the agent using it stops (see crashAt).
var crashes sync.Map

// afterJournal is the journal hook of this test binary.
func afterJournal(dir string, step state.Step) {
	if s := os.Getenv(envCrashAt); s != "" && s == string(step) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	if s := os.Getenv(envPanicAt); s != "" && s == string(step) {
		panic("pullship-agent test: panic after journal step " + s)
	}
	if s, ok := crashes.Load(dir); ok && s.(state.Step) == step {
		// The pass's goroutine ends here, as the process would: nothing
		// after the journal write runs, no rollback, no deferred cleanup
		// in the agent beyond what a dying process would also lose.
		crashes.Delete(dir)
		runtime.Goexit()
	}
}

// asAgent returns the command line that runs this test binary as
// pullship-agent, with env added to its environment.
func asAgent(env ...string) (string, []string) {
	return os.Args[0], append(os.Environ(), append([]string{envAsAgent + "=1"}, env...)...)
}
