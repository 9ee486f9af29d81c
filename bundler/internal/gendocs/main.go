// Command gendocs writes the command reference of pullship and
// pullship-agent as Markdown into docs/cli/ (run by `make docs`; a test
// checks the committed pages are current). pullship's pages come from its
// cobra commands; pullship-agent, which links no cobra, gives its pages as
// the help text it prints.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	root := bundlercli.NewRoot(bundlercli.DefaultEnv())
	root.DisableAutoGenTag = true
	if err := doc.GenMarkdownTree(root, dir); err != nil {
		return err
	}
	pages := agentcli.HelpPages()
	for _, p := range pages {
		var b strings.Builder
		fmt.Fprintf(&b, "## %s\n\n%s\n\n```\n%s```\n", p.Name, p.Short, p.Text)
		if p.Name == "pullship-agent" {
			b.WriteString("\n### SEE ALSO\n\n")
			for _, c := range pages[1:] {
				fmt.Fprintf(&b, "* [%s](%s)\t - %s\n", c.Name, pageFile(c.Name), c.Short)
			}
		} else {
			fmt.Fprintf(&b, "\n### SEE ALSO\n\n* [pullship-agent](pullship-agent.md)\t - %s\n", pages[0].Short)
		}
		if err := os.WriteFile(filepath.Join(dir, pageFile(p.Name)), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func pageFile(name string) string { return strings.ReplaceAll(name, " ", "_") + ".md" }
