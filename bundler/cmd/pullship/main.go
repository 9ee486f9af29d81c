// Command pullship cuts signed releases and reads a release repository.
package main

import (
	"os"

	"github.com/pullship/pullship/bundler/cli"
)

func main() {
	os.Exit(cli.Main(cli.DefaultEnv(), os.Args[1:]))
}
