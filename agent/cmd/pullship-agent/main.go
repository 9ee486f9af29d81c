// Command pullship-agent makes a host converge on the newest signed release.
package main

import (
	"os"

	"github.com/pullship/pullship/agent/cli"
)

func main() {
	os.Exit(cli.Main(cli.DefaultEnv(), os.Args[1:]))
}
