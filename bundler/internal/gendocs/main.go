// Command gendocs writes the command reference of pullship and
// pullship-agent as Markdown into docs/cli/ (run by `make docs`; a test
// checks the committed pages are current).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	agentcli "github.com/pullship/pullship/agent/cli"
	bundlercli "github.com/pullship/pullship/bundler/cli"
)

func main() {
	out := "docs/cli"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	if err := Generate(out); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

// Generate writes one page per command of both binaries into dir.
func Generate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, root := range []*cobra.Command{bundlercli.NewRoot(bundlercli.DefaultEnv()), agentcli.NewRoot(agentcli.DefaultEnv())} {
		root.DisableAutoGenTag = true
		if err := doc.GenMarkdownTree(root, dir); err != nil {
			return err
		}
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { return err })
}
