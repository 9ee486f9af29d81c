// Command pullship-agent makes a host converge on the newest signed release.
package main

import (
	"os"
	"runtime"
	"runtime/debug"

	"github.com/pullship/pullship/agent/cli"
)

// memoryLimit is the agent's soft memory limit (Go's GC works harder near
// it), unless GOMEMLIMIT sets another. The agent streams images: its live
// heap stays near 20-30 MiB, which Go's default of twice the live heap lets
// grow to a peak RSS of 60-64 MiB while it loads an image; with the limit,
// about 50 MiB at no measurable cost in time or CPU (docs/operations.md).
const memoryLimit = 40 << 20

// smallHost is the most CPUs on which the agent runs its goroutines one at a
// time, unless GOMAXPROCS says otherwise. While it loads an image, the
// engine is the slower side and needs the CPUs: on two, the Go scheduler's
// hand-offs between them (an idle CPU woken, then spinning for work at each
// turn of the image's pipeline) cost the engine what they save the agent.
// Measured on 2 CPUs with a 303 MiB image over git daemon, 11 alternated
// runs: agent CPU 1.2–1.8 s instead of 1.5–2.2 s, image loaded sooner in 9.
// One CPU still feeds the engine faster than it loads (the agent fetches,
// checks and rebuilds the image at about 200 MB/s on one, the engine
// loads it at about 100 MB/s).
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
