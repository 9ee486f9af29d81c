// Command pullship-agent makes a host converge on the newest signed release.
package main

import (
	"os"
	"runtime"
	"runtime/debug"

	"github.com/pullship/pullship/agent/cli"
)

// memoryLimit is the agent's soft memory limit (Go's GC works harder near
// it), unless GOMEMLIMIT sets another. The agent streams images, so its live
// heap stays small; Go's default of twice the live heap would still let the
// process grow beyond the agent's budget while it loads an image
// (docs/operations.md, "Why the agent is tuned as it is").
const memoryLimit = 40 << 20

// smallHost is the most CPUs on which the agent runs its goroutines one at a
// time, unless GOMAXPROCS says otherwise. While it loads an image, the
// engine is the slower side and needs the CPUs: on two, the Go scheduler's
// hand-offs between them (an idle CPU woken, then spinning for work at each
// turn of the image's pipeline) cost the engine what they save the agent,
// and one CPU still feeds the engine faster than it loads
// (docs/operations.md, "Why the agent is tuned as it is").
const smallHost = 2

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && runtime.GOMAXPROCS(0) <= smallHost {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(cli.Main(cli.DefaultEnv(), os.Args[1:]))
}
