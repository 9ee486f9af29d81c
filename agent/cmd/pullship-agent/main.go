// Command pullship-agent makes a host converge on the newest signed release.
package main

import (
	"os"
	"runtime/debug"

	"github.com/pullship/pullship/agent/cli"
)

// memoryLimit is the agent's soft memory limit (Go's GC works harder near
// it), unless GOMEMLIMIT sets another. The agent streams images: its live
// heap stays near 20-30 MiB, which Go's default of twice the live heap lets
// grow to a peak RSS of 60-64 MiB while it loads an image; with the limit,
// about 50 MiB at no measurable cost in time or CPU (docs/operations.md).
const memoryLimit = 40 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	os.Exit(cli.Main(cli.DefaultEnv(), os.Args[1:]))
}
